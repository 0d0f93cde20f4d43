//! `cpsctl code ...`: a Service's code versions, as ConPaaS' upload, list, activate, delete and
//! download did, plus rollback to the version active before. Archives go to the controller's
//! artifact store through the code API (`code.conpaas.io`, behind the API server: the user's own
//! kube credentials, and RBAC on the Service decides); the versions themselves are in the
//! Service's `spec.code`, written with the same credentials, so GitOps tools see them as any
//! other change.

use std::path::Path;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use conpaas_crds::archive_digest::{self, HashingFile};
use conpaas_crds::code_api::{Archive, Uploaded, archive_path, archives_path};
use conpaas_crds::v1alpha1::{ArtifactRef, CodeVersion, Service};
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::services::MANAGER;
use crate::connect::Session;
use crate::output::{Table, structured};

/// Uploads `path` (a directory is packed as a gzipped tar; a file is sent as it is) and adds it
/// to the Service as a version, active with `activate`.
pub async fn upload(
    s: &Session,
    service: &str,
    path: &Path,
    version: Option<String>,
    activate: bool,
) -> anyhow::Result<()> {
    let current = s.service(service).await?;
    let packed;
    let archive: &Path = if path.is_dir() {
        packed = pack(path)?;
        packed.path()
    } else {
        path
    };
    let (sha256, size) =
        archive_digest::of_file(archive).with_context(|| format!("hash {}", archive.display()))?;
    let name = version.unwrap_or_else(|| format!("code-{}", &sha256[..10]));
    let existing = versions(&current).iter().find(|v| v.name == name).cloned();
    if let Some(v) = &existing
        && v.artifact.as_ref().map(|a| a.sha256.as_str()) != Some(sha256.as_str())
    {
        bail!(
            "service {service} already has a version {name:?} with other code; name this one with --version"
        );
    }
    let uploaded = send(s, service, archive, &sha256, size).await?;
    anyhow::ensure!(
        uploaded.sha256 == sha256,
        "the store computed sha256 {} for what was sent as {sha256}",
        uploaded.sha256
    );
    let updated = edit(s, service, |code_versions, active| {
        // Checked again on every try: someone may have taken the name meanwhile.
        if let Some(v) = code_versions.iter().find(|v| v.name == name)
            && v.artifact.as_ref().map(|a| a.sha256.as_str()) != Some(sha256.as_str())
        {
            bail!("service {service} got a version {name:?} with other code meanwhile; name this one with --version");
        }
        if !code_versions.iter().any(|v| v.name == name) {
            code_versions.push(CodeVersion {
                name: name.clone(),
                artifact: Some(ArtifactRef {
                    sha256: sha256.clone(),
                }),
                ..Default::default()
            });
        }
        if activate {
            *active = Some(name.clone());
        }
        Ok(())
    })
    .await?;
    if !structured(s.output, &updated)? {
        let state = if activate {
            ", active"
        } else {
            "; `cpsctl code activate` serves it"
        };
        println!(
            "service/{service}: version {name} uploaded (sha256:{sha256}, {size} bytes){state}"
        );
    }
    Ok(())
}

/// The Service's versions with their source and digest.
pub async fn list(s: &Session, service: &str) -> anyhow::Result<()> {
    let current = s.service(service).await?;
    let all = versions(&current);
    if structured(s.output, &all)? {
        return Ok(());
    }
    let active = current.spec.code.as_ref().and_then(|c| c.active.clone());
    // Sizes and times come from the store; without them the list is still worth showing.
    let archives = match stored_archives(s, service).await {
        Ok(archives) => archives,
        Err(e) => {
            eprintln!("sizes and times unknown: {e:#}");
            Vec::new()
        }
    };
    let mut table = Table::new(&["name", "source", "sha256", "size", "stored", "active"]);
    for v in &all {
        let (source, digest) = match (&v.artifact, &v.url, &v.config_map) {
            (Some(a), _, _) => match &v.commit {
                Some(commit) => (
                    format!("git {}", &commit[..12.min(commit.len())]),
                    a.sha256.clone(),
                ),
                None => ("artifact".to_string(), a.sha256.clone()),
            },
            (_, Some(url), _) => (url.clone(), v.sha256.clone().unwrap_or_default()),
            (_, _, Some(cm)) => (format!("configMap {}/{}", cm.name, cm.key), String::new()),
            _ => (String::new(), String::new()),
        };
        let mark = if active.as_deref() == Some(&v.name) {
            "*"
        } else {
            ""
        };
        let archive = v
            .artifact
            .as_ref()
            .and_then(|a| archives.iter().find(|x| x.sha256 == a.sha256));
        table.row(vec![
            v.name.clone(),
            source,
            digest.chars().take(12).collect(),
            archive.map(|a| human_size(a.size)).unwrap_or_default(),
            archive
                .and_then(|a| k8s_openapi::jiff::Timestamp::from_second(a.written).ok())
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            mark.into(),
        ]);
    }
    table.print_or(&format!(
        "service/{service} has no code versions; `cpsctl code upload {service} DIR` adds one"
    ));
    Ok(())
}

/// The Service's archives in the store, with sizes and times (the code API's listing).
async fn stored_archives(s: &Session, service: &str) -> anyhow::Result<Vec<Archive>> {
    let request = http::Request::get(archives_path(&s.namespace, service)).body(Vec::new())?;
    let response = s.client.send(request.map(Into::into)).await?;
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !parts.status.is_success() {
        bail!("{}", refusal(parts.status, &bytes));
    }
    serde_json::from_slice(&bytes).context("read the code API's list of archives")
}

/// `1536` -> `1.5 KiB`.
fn human_size(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!("the last unit returns")
}

/// Makes `name` the version every node serves.
pub async fn activate(s: &Session, service: &str, name: &str) -> anyhow::Result<()> {
    let updated = edit(s, service, |versions, active| {
        if !versions.iter().any(|v| v.name == name) {
            bail!(
                "service {service} has no version {name:?}; `cpsctl code list {service}` shows them"
            );
        }
        *active = Some(name.to_string());
        Ok(())
    })
    .await?;
    if !structured(s.output, &updated)? {
        println!(
            "service/{service}: version {name} active; `cpsctl wait {service}` follows the nodes"
        );
    }
    Ok(())
}

/// Activates the version that was active before the current one.
pub async fn rollback(s: &Session, service: &str) -> anyhow::Result<()> {
    let current = s.service(service).await?;
    let status = current.status.unwrap_or_default();
    let Some(previous) = status.previous_code_version else {
        bail!("service {service} has had no other active version to go back to");
    };
    activate(s, service, &previous).await
}

/// Removes a version that is not active.
pub async fn delete(s: &Session, service: &str, name: &str) -> anyhow::Result<()> {
    let updated = edit(s, service, |versions, active| {
        if active.as_deref() == Some(name) {
            bail!("version {name} is active: activate another one first");
        }
        let before = versions.len();
        versions.retain(|v| v.name != name);
        if versions.len() == before {
            bail!("service {service} has no version {name:?}");
        }
        Ok(())
    })
    .await?;
    if !structured(s.output, &updated)? {
        println!("service/{service}: version {name} deleted");
    }
    Ok(())
}

/// Writes a version's archive (from the store) to `out`, checking its digest.
pub async fn download(s: &Session, service: &str, name: &str, out: &Path) -> anyhow::Result<()> {
    let current = s.service(service).await?;
    let version = versions(&current)
        .into_iter()
        .find(|v| v.name == name)
        .with_context(|| format!("service {service} has no version {name:?}"))?;
    let Some(artifact) = version.artifact else {
        bail!("version {name} is not in the artifact store (it comes from a URL or a ConfigMap)");
    };
    let request = http::Request::get(archive_path(&s.namespace, service, &artifact.sha256))
        .body(Vec::new())?;
    let response = s
        .client
        .send(request.map(Into::into))
        .await
        .with_context(|| format!("download version {name}"))?;
    let (parts, mut body) = response.into_parts();
    if !parts.status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!("download version {name}: {}", refusal(parts.status, &bytes));
    }
    let mut partial_name = out.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = std::path::PathBuf::from(partial_name);
    let written = write_verified(&mut body, &partial, &artifact.sha256, name).await;
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out).with_context(|| format!("write {}", out.display()))?;
    println!(
        "{}: version {name} ({size} bytes, sha256 verified)",
        out.display()
    );
    Ok(())
}

/// Writes the body to `path`, hashing it; fails when the digest is not `sha256`.
async fn write_verified(
    body: &mut kube::client::Body,
    path: &Path,
    sha256: &str,
    name: &str,
) -> anyhow::Result<u64> {
    let mut file = HashingFile::create(path, u64::MAX)
        .with_context(|| format!("create {}", path.display()))?;
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("download version {name}"))?;
        if let Some(data) = frame.data_ref() {
            file.write(data)
                .with_context(|| format!("download version {name}"))?;
        }
    }
    let (got, size) = file
        .finish()
        .with_context(|| format!("write {}", path.display()))?;
    if got != sha256 {
        bail!("download version {name}: sha256 {got}, expected {sha256}");
    }
    Ok(size)
}

fn versions(service: &Service) -> Vec<CodeVersion> {
    service
        .spec
        .code
        .as_ref()
        .map(|c| c.versions.clone())
        .unwrap_or_default()
}

/// Reads the Service, changes its versions and active version with `change`, and writes them
/// back only if nobody changed the Service in between (else reads again).
async fn edit(
    s: &Session,
    service: &str,
    mut change: impl FnMut(&mut Vec<CodeVersion>, &mut Option<String>) -> anyhow::Result<()>,
) -> anyhow::Result<Service> {
    for _ in 0..5 {
        let current = s.service(service).await?;
        let mut all = versions(&current);
        let mut active = current.spec.code.as_ref().and_then(|c| c.active.clone());
        change(&mut all, &mut active)?;
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"code": {"versions": all, "active": active}},
        });
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match s.services().patch(service, &pp, &Patch::Merge(patch)).await {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("update Service {service:?}")),
        }
    }
    bail!("service {service} kept changing while its versions were updated; try again")
}

/// A directory packed as a gzipped tar in a temporary file.
fn pack(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new().suffix(".tar.gz").tempfile()?;
    let gz = flate2::write::GzEncoder::new(file.reopen()?, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)
        .with_context(|| format!("pack {}", dir.display()))?;
    tar.into_inner()?.finish()?;
    Ok(file)
}

/// How long an upload waits for a code API that answers 503 (a controller starting, or an
/// APIService not yet available right after an install).
const UNAVAILABLE_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Streams the file to the code API (again while it answers 503, for a while); the store
/// checks the digest it was told.
async fn send(
    s: &Session,
    service: &str,
    path: &Path,
    sha256: &str,
    size: u64,
) -> anyhow::Result<Uploaded> {
    let deadline = std::time::Instant::now() + UNAVAILABLE_FOR;
    let mut told = false;
    loop {
        match send_once(s, service, path, sha256, size).await? {
            Ok(uploaded) => return Ok(uploaded),
            Err((status, body)) => {
                if status != http::StatusCode::SERVICE_UNAVAILABLE
                    || std::time::Instant::now() >= deadline
                {
                    bail!("upload refused: {}", refusal(status, &body));
                }
                if !told {
                    eprintln!(
                        "the code API is not available yet ({}); trying again for up to {} s",
                        conpaas_crds::code_api::status_message(&body),
                        UNAVAILABLE_FOR.as_secs()
                    );
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// One upload: what the store stored, or the refusal's status and body.
async fn send_once(
    s: &Session,
    service: &str,
    path: &Path,
    sha256: &str,
    size: u64,
) -> anyhow::Result<Result<Uploaded, (http::StatusCode, Bytes)>> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("open {}", path.display()))?;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 16];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(http_body::Frame::data(Bytes::from(buf))), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let body = http_body_util::StreamBody::new(chunks.boxed());
    let uri = format!("{}?sha256={sha256}", archives_path(&s.namespace, service));
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, size)
        .body(body)?;
    let response = crate::connect::send_streaming(&s.config, request)
        .await
        .context("upload the archive")?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("read the upload's answer")?
        .to_bytes();
    if !status.is_success() {
        return Ok(Err((status, bytes)));
    }
    serde_json::from_slice(&bytes)
        .context("read the upload's answer")
        .map(Ok)
}

/// A refusal's message, with a hint where one helps.
fn refusal(status: http::StatusCode, body: &[u8]) -> String {
    let message = conpaas_crds::code_api::status_message(body);
    let hint = match status.as_u16() {
        403 => " (RBAC: you need update on the Service to upload, get to download)",
        503 => " (is the controller running? `cpsctl doctor` checks)",
        _ => "",
    };
    format!("{status}: {message}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt as _;

    /// A code API that refuses the first `refused` uploads with `refusal` (a starting
    /// controller's is 503), then stores; its URL and the uploads it saw.
    async fn code_api(refused: usize, refusal: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                // The whole request (headers and the 5-byte body) before the answer.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"hello")
                {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => request.extend_from_slice(&buf[..k]),
                    }
                }
                let (status, body) = if n < refused {
                    (
                        refusal,
                        r#"{"kind":"Status","message":"the controller is starting; try again"}"#
                            .to_string(),
                    )
                } else {
                    ("201 Created", r#"{"sha256":"abc","size":5}"#.to_string())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn session(url: &str) -> Session {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new(url.parse().unwrap());
        Session {
            client: kube::Client::try_from(config.clone()).unwrap(),
            config,
            namespace: "ns".into(),
            output: crate::args::Output::Table,
        }
    }

    /// Uploads a 5-byte archive (`hello`) to the code API at `url`.
    async fn upload_hello(url: &str) -> anyhow::Result<Uploaded> {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, b"hello").unwrap();
        send(&session(url), "svc", &archive, "abc", 5).await
    }

    #[tokio::test]
    async fn an_upload_waits_out_a_controller_that_is_starting() {
        let (url, seen) = code_api(2, "503 Service Unavailable").await;
        let stored = upload_hello(&url).await.unwrap();
        assert_eq!(stored.size, 5);
        assert_eq!(seen.load(Ordering::SeqCst), 3, "two refusals, then stored");
    }

    #[tokio::test]
    async fn another_refusal_is_not_tried_again() {
        let (url, seen) = code_api(1, "403 Forbidden").await;
        let refused = upload_hello(&url).await.unwrap_err().to_string();
        assert!(refused.contains("403"), "{refused}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
