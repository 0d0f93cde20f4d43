//! Fetching, verifying and unpacking code versions. An archive is streamed to disk while its
//! SHA-256 is computed, accepted only when that matches the node's spec, and unpacked only when
//! no member is absolute, climbs out with `..` or is a link, and the unpacked files stay within
//! a count and a size (also relative to the archive: a small archive that unpacks to gigabytes
//! is refused). Versions live in `<work>/code/<version>-<digest prefix>`; the current and
//! previous are kept.

use std::io::Read;

use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncReadExt as _;

use anyhow::{Context as _, bail};
use conpaas_crds::archive_digest::{self, HashingFile};
use conpaas_crds::v1alpha1::NodeCode;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

/// Largest code archive the agent downloads (saved data is bounded by the disk instead).
const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

/// How much of an archive one request to the code API carries: at a few MB/s this still ends
/// well within the API server's request timeout (60 s by default).
const PIECE_BYTES: u64 = 16 << 20;
/// How often one piece is sent before an upload gives up.
const PIECE_TRIES: u64 = 3;

/// What an archive may unpack to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub files: u64,
    pub bytes: u64,
    /// Unpacked bytes per archive byte, above `ratio_floor` (a zip bomb's tell).
    pub ratio: u64,
    pub ratio_floor: u64,
}

impl Limits {
    /// For data the Service saved at its last stop, going back into `dir`: it came from the
    /// Service's own node and must come back whole, however well it compressed (a 200 MiB file
    /// of zeros) or however large; only the disk's free space bounds it, less a tenth kept for
    /// the daemons (a crafted archive could fill only the tenant's own VM).
    pub fn saved_data(dir: &Path) -> Self {
        Self {
            files: u64::MAX,
            bytes: free_bytes(dir) / 10 * 9,
            ratio: u64::MAX,
            ratio_floor: 0,
        }
    }
}

/// The bytes free for an unprivileged writer on the filesystem holding `path` (0 when it cannot
/// be told).
pub fn free_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            files: 200_000,
            bytes: 16 << 30,
            ratio: 200,
            ratio_floor: 64 << 20,
        }
    }
}

/// Fetches `code` of `service`, checks its digest and unpacks it; returns the version's folder.
pub async fn install(
    client: &Client,
    namespace: &str,
    service: &str,
    code: &NodeCode,
    work_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let root = work_dir.join("code");
    // The digest is part of the folder name: a version re-pointed at other bytes is a new install.
    let folder = format!(
        "{}-{}",
        code.version,
        code.sha256.get(..12).unwrap_or(&code.sha256)
    );
    let target = root.join(&folder);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let download = root.join(format!(".download-{}", code.version));
    let fetched = fetch(
        client,
        namespace,
        service,
        code,
        &download,
        MAX_ARCHIVE_BYTES,
    )
    .await;
    let result = match fetched {
        Ok(digest) if digest != code.sha256 => Err(anyhow::anyhow!(
            "code version {}: sha256 is {digest}, the spec says {}",
            code.version,
            code.sha256
        )),
        Ok(_) => {
            // Unpacking gigabytes is blocking work: on a thread of its own, off the runtime.
            let (download, target) = (download.clone(), target.clone());
            let staging = root.join(format!(".staging-{}", code.version));
            let version = code.version.clone();
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::create_dir_all(&staging)
                    .with_context(|| format!("create {}", staging.display()))?;
                unpack(&download, &staging, Limits::default())
                    .with_context(|| format!("unpack code version {version}"))?;
                std::fs::rename(&staging, &target)
                    .with_context(|| format!("activate {}", target.display()))
            })
            .await
            .context("the unpacking thread")
            .and_then(|unpacked| unpacked)
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&download);
    result?;
    prune(&root, &folder);
    Ok(target)
}

/// Fetches `code` of `service` to the file `to` as it is (a mysql dump, the data saved at the
/// last stop: not unpacked), once its digest matches the spec; nothing is left at `to`
/// otherwise. Only the disk bounds its size (less a tenth kept for the daemons): the store
/// bounded it when it went in.
pub async fn download(
    client: &Client,
    namespace: &str,
    service: &str,
    code: &NodeCode,
    to: &Path,
) -> anyhow::Result<()> {
    let partial = to.with_extension("partial");
    let folder = to.parent().unwrap_or(Path::new("/"));
    let limit = free_bytes(folder) / 10 * 9;
    let digest = fetch(client, namespace, service, code, &partial, limit).await;
    let checked = digest.and_then(|digest| {
        if digest == code.sha256 {
            std::fs::rename(&partial, to).with_context(|| format!("write {}", to.display()))
        } else {
            bail!(
                "code version {}: sha256 is {digest}, the spec says {}",
                code.version,
                code.sha256
            )
        }
    });
    let _ = std::fs::remove_file(&partial);
    checked
}

/// Stores `file` in the artifact store under `service`, through the code API with this node's
/// own token (nodes of types that save data at a stop may); the stored archive's SHA-256. The
/// file goes in pieces of [`PIECE_BYTES`], each its own request: only one piece is ever in
/// memory, and each ends well within the API server's request timeout however large the file.
pub async fn upload(
    client: &Client,
    namespace: &str,
    service: &str,
    file: &Path,
) -> anyhow::Result<String> {
    let what = format!("upload {} to service {service}", file.display());
    let sha256 = digest_of(file).await?;
    let mut reader = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("open {}", file.display()))?;
    let size = reader.metadata().await?.len();
    let mut offset = 0;
    loop {
        let len = PIECE_BYTES.min(size - offset);
        let mut piece = vec![0; len as usize];
        reader
            .read_exact(&mut piece)
            .await
            .with_context(|| format!("read {}", file.display()))?;
        let piece = bytes::Bytes::from(piece);
        let last = offset + len == size;
        let uri = format!(
            "{}?{}",
            conpaas_crds::code_api::archives_path(namespace, service),
            conpaas_crds::code_api::piece_query(&sha256, offset, last)
        );
        // A piece that broke off (a connection reset, a controller restarting) is sent again
        // a few times before the whole upload is given up.
        let mut tries = 0;
        let (parts, bytes) = loop {
            tries += 1;
            let request = http::Request::post(&uri)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(kube::client::Body::from(piece.clone()))
                .context("build the upload request")?;
            let sent = client.send(request).await;
            let again = match &sent {
                Err(_) => true,
                Ok(r) => r.status().is_server_error(),
            };
            if again && tries < PIECE_TRIES {
                tokio::time::sleep(std::time::Duration::from_secs(tries)).await;
                continue;
            }
            let (parts, body) = sent.with_context(|| what.clone())?.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            break (parts, bytes);
        };
        if !parts.status.is_success() {
            let message = conpaas_crds::code_api::status_message(&bytes);
            bail!(
                "{what}: at byte {offset} of {size}: {} {message}",
                parts.status
            );
        }
        offset += len;
        if last {
            let stored: conpaas_crds::code_api::Uploaded = serde_json::from_slice(&bytes)
                .with_context(|| format!("{what}: read the answer"))?;
            if stored.sha256 != sha256 {
                bail!("{what}: stored as sha256:{}, not {sha256}", stored.sha256);
            }
            return Ok(sha256);
        }
    }
}

/// The SHA-256 of `file`, read in blocks off the runtime.
async fn digest_of(file: &Path) -> anyhow::Result<String> {
    let path = file.to_path_buf();
    let (sha256, _) = tokio::task::spawn_blocking(move || {
        archive_digest::of_file(&path).with_context(|| format!("hash {}", path.display()))
    })
    .await
    .context("the hashing thread")??;
    Ok(sha256)
}

/// Whether fetching failed because the node's token may not read the archive yet: its
/// credentials follow its spec, so right after a version switch they can lag behind for a moment.
pub fn is_forbidden(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<kube::Error>(),
            Some(kube::Error::Api(status)) if status.code == 403
        )
    })
}

/// A download being written to its file while hashed, refusing more than its limit; `what` it
/// is names it in every error.
struct Sink {
    file: HashingFile,
    what: String,
}

impl Sink {
    fn create(path: &Path, what: String, limit: u64) -> anyhow::Result<Self> {
        let file = HashingFile::create(path, limit)
            .with_context(|| format!("create {}", path.display()))?;
        Ok(Self { file, what })
    }

    fn written(&self) -> u64 {
        self.file.written()
    }

    fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.file.write(chunk).with_context(|| self.what.clone())
    }

    fn finish(self) -> anyhow::Result<String> {
        let (sha256, _) = self.file.finish().with_context(|| self.what)?;
        Ok(sha256)
    }
}

/// Streams the archive into `path`, at most `limit` bytes; returns its SHA-256.
async fn fetch(
    client: &Client,
    namespace: &str,
    service: &str,
    code: &NodeCode,
    path: &Path,
    limit: u64,
) -> anyhow::Result<String> {
    if code.artifact {
        // Through the API server to the controller's code API, with this node's own token,
        // in pieces (see `PIECE_BYTES`).
        let uri = conpaas_crds::code_api::archive_path(namespace, service, &code.sha256);
        let what = format!("archive sha256:{} of service {service}", code.sha256);
        let mut sink = Sink::create(path, what.clone(), limit)?;
        loop {
            let from = sink.written();
            let request = http::Request::get(&uri)
                .header(
                    http::header::RANGE,
                    format!("bytes={from}-{}", from + PIECE_BYTES - 1),
                )
                .body(kube::client::Body::empty())
                .context("build the download request")?;
            let response = client
                .send(request)
                .await
                .with_context(|| format!("download {what}"))?;
            let (parts, mut body) = response.into_parts();
            if !parts.status.is_success() {
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let message = conpaas_crds::code_api::status_message(&bytes);
                bail!(
                    "download {what} from byte {from}: {} {message}",
                    parts.status
                );
            }
            // A piece says where it starts and the whole size; an answer that is not a piece
            // is the whole archive (then it must be asked for from the start).
            let range = parts
                .headers
                .get(http::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| {
                    let (span, whole) = v.split_once('/')?;
                    let start = span.split_once('-')?.0.parse::<u64>().ok()?;
                    Some((start, whole.parse::<u64>().ok()?))
                });
            match (parts.status, range) {
                (http::StatusCode::PARTIAL_CONTENT, Some((start, _))) if start == from => {}
                (http::StatusCode::OK, _) if from == 0 => {}
                (status, range) => bail!(
                    "download {what}: asked for bytes from {from}, answered {status} with range {range:?}"
                ),
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.with_context(|| format!("download {what}"))?;
                if let Some(data) = frame.data_ref() {
                    sink.write(data)?;
                }
            }
            let whole = range.map(|(_, whole)| whole);
            match whole {
                Some(whole) if sink.written() < whole => {
                    if sink.written() == from {
                        bail!("download {what}: an empty piece at byte {from} of {whole}");
                    }
                }
                _ => return sink.finish(),
            }
        }
    }
    if let Some(key) = &code.config_map {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get(&key.name)
            .await
            .with_context(|| format!("read ConfigMap {}", key.name))?;
        let bytes = cm
            .binary_data
            .and_then(|d| d.get(&key.key).map(|b| b.0.clone()))
            .or_else(|| {
                cm.data
                    .and_then(|d| d.get(&key.key).map(|s| s.clone().into_bytes()))
            })
            .with_context(|| format!("ConfigMap {} has no key {}", key.name, key.key))?;
        let mut sink = Sink::create(path, format!("ConfigMap {}", key.name), limit)?;
        sink.write(&bytes)?;
        return sink.finish();
    }
    let url = code
        .url
        .as_deref()
        .context("code version has no artifact, configMap or url")?;
    let mut response = reqwest::get(url)
        .await
        .with_context(|| format!("download {url}"))?
        .error_for_status()?;
    let mut sink = Sink::create(path, url.to_string(), limit)?;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("download {url}"))?
    {
        sink.write(&chunk)?;
    }
    sink.finish()
}

/// Unpacks the archive at `archive` (tar, gzipped tar, or zip, which a war is) into `dest`,
/// refusing unsafe members and archives that unpack to more than `limits` allow.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits) -> anyhow::Result<()> {
    let packed = std::fs::metadata(archive)
        .with_context(|| format!("read {}", archive.display()))?
        .len();
    let mut budget = Budget {
        limits,
        max_bytes: limits
            .bytes
            .min((packed.saturating_mul(limits.ratio)).max(limits.ratio_floor)),
        packed,
        files: 0,
        bytes: 0,
    };
    let mut magic = [0u8; 4];
    let _ = std::fs::File::open(archive)?.read(&mut magic)?;
    let file = std::io::BufReader::new(std::fs::File::open(archive)?);
    match magic {
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => unpack_zip(file, dest, &mut budget),
        [0x1f, 0x8b, ..] => unpack_tar(flate2::read::GzDecoder::new(file), dest, &mut budget),
        _ => unpack_tar(file, dest, &mut budget),
    }
}

/// What an archive may still unpack to.
struct Budget {
    limits: Limits,
    max_bytes: u64,
    packed: u64,
    files: u64,
    bytes: u64,
}

impl Budget {
    fn member(&mut self) -> anyhow::Result<()> {
        self.files += 1;
        if self.files > self.limits.files {
            bail!("the archive has more than {} members", self.limits.files);
        }
        Ok(())
    }

    fn grow(&mut self, by: u64) -> anyhow::Result<()> {
        self.bytes += by;
        if self.bytes > self.max_bytes {
            bail!(
                "the archive unpacks to more than {} bytes (it is {} bytes packed)",
                self.max_bytes,
                self.packed
            );
        }
        Ok(())
    }
}

fn check_name(path: &Path) -> anyhow::Result<()> {
    let safe = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !safe {
        bail!(
            "archive member {} is absolute or leaves the folder",
            path.display()
        );
    }
    Ok(())
}

fn unpack_tar(reader: impl Read, dest: &Path, budget: &mut Budget) -> anyhow::Result<()> {
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        check_name(&path)?;
        if entry.header().entry_type().is_symlink() || entry.header().entry_type().is_hard_link() {
            bail!("archive member {} is a link", path.display());
        }
        budget.member()?;
        // The size the entry will write, a PAX record included (the plain header's can be 0).
        budget.grow(entry.size())?;
        entry.unpack_in(dest)?;
    }
    Ok(())
}

fn unpack_zip(
    reader: impl Read + std::io::Seek,
    dest: &Path,
    budget: &mut Budget,
) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(reader).context("read the zip archive")?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let name = PathBuf::from(entry.name().context("read a zip member's name")?.as_ref());
        check_name(&name)?;
        if entry.is_symlink() {
            bail!("archive member {} is a link", name.display());
        }
        budget.member()?;
        let out = dest.join(&name);
        if entry.is_dir() {
            std::fs::create_dir_all(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // The sizes a zip declares can lie: count what actually comes out.
        let mut file =
            std::fs::File::create(&out).with_context(|| format!("create {}", out.display()))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            budget.grow(n as u64)?;
            std::io::Write::write_all(&mut file, &buf[..n])?;
        }
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode & 0o777))?;
        }
    }
    Ok(())
}

/// Keeps the active version and the most recently installed other one.
fn prune(root: &Path, active: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name() != active && !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    others.sort();
    others.pop();
    for (_, path) in others {
        let _ = std::fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn tar_with(name: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        // set_path refuses `..`, so write the raw name the way a hostile archive would.
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, &b"hi"[..]).unwrap();
        builder.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8], dest: &Path, limits: Limits) -> anyhow::Result<()> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        unpack(file.path(), dest, limits)
    }

    #[test]
    fn unpacks_plain_members() {
        let dir = tempfile::tempdir().unwrap();
        unpack_bytes(&tar_with("init.sh"), dir.path(), Limits::default()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("init.sh")).unwrap(), b"hi");
    }

    #[test]
    fn refuses_an_archive_that_unpacks_to_far_more_than_it_is() {
        // 64 MiB of zeros gzip to about 64 KiB: a ratio of 1000.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(64 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "zeros", std::io::repeat(0).take(64 << 20))
            .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&builder.into_inner().unwrap()).unwrap();
        let bomb = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            ratio_floor: 1 << 20,
            ..Limits::default()
        };
        let err = unpack_bytes(&bomb, dir.path(), limits).unwrap_err();
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
        assert!(!dir.path().join("zeros").exists());
        // The same archive as a Service's saved data comes back whole.
        unpack_bytes(&bomb, dir.path(), Limits::saved_data(dir.path())).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("zeros")).unwrap().len(),
            64 << 20
        );
        std::fs::remove_file(dir.path().join("zeros")).unwrap();
        // But never more than the disk holds.
        let full = Limits {
            bytes: 1 << 20,
            ..Limits::saved_data(dir.path())
        };
        assert!(unpack_bytes(&bomb, dir.path(), full).is_err());
        let many = Limits {
            files: 0,
            ..Limits::default()
        };
        let err = unpack_bytes(&tar_with("a"), dir.path(), many).unwrap_err();
        assert!(err.to_string().contains("more than 0 members"), "{err}");
    }

    fn zip_with(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755);
        for (name, body) in members {
            writer.start_file(*name, options).unwrap();
            writer.write_all(body).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn a_zip_or_war_unpacks_and_is_held_to_the_same_rules() {
        let dir = tempfile::tempdir().unwrap();
        let war = zip_with(&[("WEB-INF/web.xml", b"<web-app/>"), ("run.sh", b"echo hi")]);
        unpack_bytes(&war, dir.path(), Limits::default()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("WEB-INF/web.xml")).unwrap(),
            b"<web-app/>"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        for name in ["../evil.sh", "/etc/evil.sh", "a/../../evil.sh"] {
            let dir = tempfile::tempdir().unwrap();
            let err = unpack_bytes(
                &zip_with(&[(name, b"x")]),
                &dir.path().join("x"),
                Limits::default(),
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("leaves the folder"),
                "{name}: {err}"
            );
        }
        let bomb = zip_with(&[("zeros", &vec![0u8; 16 << 20])]);
        let limits = Limits {
            ratio_floor: 1 << 20,
            ..Limits::default()
        };
        let err = unpack_bytes(&bomb, dir.path(), limits).unwrap_err();
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
    }

    #[test]
    fn refuses_members_that_leave_the_folder() {
        for name in ["../evil.sh", "/etc/evil.sh", "a/../../evil.sh"] {
            let dir = tempfile::tempdir().unwrap();
            let err = unpack_bytes(&tar_with(name), &dir.path().join("x"), Limits::default())
                .unwrap_err();
            assert!(
                err.to_string().contains("leaves the folder"),
                "{name}: {err}"
            );
        }
    }
}
