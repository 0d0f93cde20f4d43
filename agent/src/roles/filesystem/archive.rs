//! A stopped filesystem keeps its data in the artifact store: every volume's files in one gzipped
//! tar, a folder per volume, read through a FUSE mount of each volume on the node; the next start
//! puts each volume's folder back through a mount. Symbolic links are not kept (the agent
//! unpacks no links).

use std::path::{Path, PathBuf};

use conpaas_crds::v1alpha1::NodeCode;
use kube::Client;

use crate::code;

/// Where the archive comes from and goes to.
pub struct Access {
    pub client: Client,
    pub namespace: String,
    pub service: String,
    /// The role's folder on the node.
    pub work_dir: PathBuf,
}

/// A volume mounted on the node for as long as this lives.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    async fn new(server: &str, volume: &str, dir: PathBuf) -> Result<Self, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let out = tokio::process::Command::new("mount")
            .args(["-t", "glusterfs", &format!("{server}:/{volume}")])
            .arg(&dir)
            .output()
            .await
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount volume {volume}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Archives `volumes` (mounted from the glusterd at `server`) and stores the archive; its SHA-256.
pub async fn save(access: &Access, server: &str, volumes: &[String]) -> Result<String, String> {
    let dir = access.work_dir.join("archive");
    // A save that broke off may have left a volume mounted in there.
    crate::volumes::unmount_under(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let mut mounts = Vec::new();
    for volume in volumes {
        mounts.push((
            volume.clone(),
            Mounted::new(server, volume, dir.join("mnt").join(volume)).await?,
        ));
    }
    for (volume, mounted) in &mounts {
        refuses_writes(volume, &mounted.dir).await?;
    }
    let file = dir.join("volumes.tar.gz");
    let (to, sources): (PathBuf, Vec<(String, PathBuf)>) = (
        file.clone(),
        mounts
            .iter()
            .map(|(v, m)| (v.clone(), m.dir.clone()))
            .collect(),
    );
    let skipped = tokio::task::spawn_blocking(move || write_archive(&to, &sources))
        .await
        .map_err(|e| format!("archiving broke off: {e}"))??;
    drop(mounts);
    if skipped > 0 {
        tracing::warn!(skipped, "symbolic links in the volumes are not kept");
    }
    let stored = code::upload(&access.client, &access.namespace, &access.service, &file).await;
    crate::volumes::unmount_under(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    stored.map_err(|e| format!("{e:#}"))
}

/// Waits until the volume mounted at `dir` refuses writes (the bricks apply a read-only option
/// a moment after glusterd accepted it): the archive must be the volume's last state.
async fn refuses_writes(volume: &str, dir: &Path) -> Result<(), String> {
    const PROBE: &str = ".conpaas-fence-probe";
    let probe = dir.join(PROBE);
    for _ in 0..100 {
        match std::fs::File::create(&probe) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => return Ok(()),
            Err(e) => return Err(format!("check that volume {volume} is read-only: {e}")),
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    Err(format!(
        "volume {volume} still takes writes 20 s after it was made read-only"
    ))
}

/// Writes a gzipped tar with a folder per volume; the number of symbolic links left out.
fn write_archive(to: &Path, volumes: &[(String, PathBuf)]) -> Result<usize, String> {
    let file = std::fs::File::create(to).map_err(|e| format!("write {}: {e}", to.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut skipped = 0;
    for (volume, root) in volumes {
        tar.append_dir(volume, root)
            .map_err(|e| format!("archive volume {volume}: {e}"))?;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries =
                std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .map_err(|e| format!("read {}: {e}", path.display()))?;
                let relative = path.strip_prefix(root).expect("walked from the root");
                let name = Path::new(volume).join(relative);
                if kind.is_symlink() {
                    skipped += 1;
                } else if kind.is_dir() {
                    tar.append_dir(&name, &path)
                        .map_err(|e| format!("archive {}: {e}", path.display()))?;
                    stack.push(path);
                } else if kind.is_file() {
                    tar.append_path_with_name(&path, &name)
                        .map_err(|e| format!("archive {}: {e}", path.display()))?;
                }
            }
        }
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| format!("write {}: {e}", to.display()))?;
    Ok(skipped)
}

/// Puts `volume`'s folder of the saved archive back into the volume.
pub async fn restore(
    access: &Access,
    server: &str,
    volume: &str,
    saved: &NodeCode,
) -> Result<(), String> {
    let dir = restore_dir(access, saved);
    let unpacked = dir.join("files");
    if !unpacked.is_dir() {
        let file = dir.join("volumes.tar.gz");
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        code::download(
            &access.client,
            &access.namespace,
            &access.service,
            saved,
            &file,
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        let staging = dir.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("create {}: {e}", staging.display()))?;
        let (from, to) = (file.clone(), staging.clone());
        let limits = code::Limits::saved_data(&staging);
        tokio::task::spawn_blocking(move || code::unpack(&from, &to, limits))
            .await
            .map_err(|e| format!("unpacking broke off: {e}"))?
            .map_err(|e| format!("{e:#}"))?;
        std::fs::rename(&staging, &unpacked)
            .map_err(|e| format!("write {}: {e}", unpacked.display()))?;
        let _ = std::fs::remove_file(&file);
    }
    let source = unpacked.join(volume);
    if !source.is_dir() {
        // The volume was empty, or did not exist, when the Service stopped.
        return Ok(());
    }
    let mount = Mounted::new(server, volume, dir.join("mnt").join(volume)).await?;
    let out = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", source.display()))
        .arg(&mount.dir)
        .output()
        .await
        .map_err(|e| format!("run cp: {e}"))?;
    drop(mount);
    if !out.status.success() {
        return Err(format!(
            "copy into volume {volume}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Deletes `volume`'s unpacked copy of the saved archive once the volume records it restored
/// (it would only hold the disk twice; the folder holds no mounts), and the unpacked folder
/// once every volume's copy is gone.
pub fn forget_unpacked(access: &Access, volume: &str, saved: &NodeCode) {
    let unpacked = restore_dir(access, saved).join("files");
    let _ = std::fs::remove_dir_all(unpacked.join(volume));
    if std::fs::read_dir(&unpacked).is_ok_and(|mut left| left.next().is_none()) {
        let _ = std::fs::remove_dir(&unpacked);
    }
}

/// Whether putting `saved` back into `volume` was not announced yet (it is now): the first
/// look that would restore only reports it, so the report goes out before the copy holds the
/// next look up.
pub fn announce(access: &Access, volume: &str, saved: &NodeCode) -> bool {
    let dir = restore_dir(access, saved);
    let announced = dir.join(format!("announced-{volume}"));
    !announced.exists()
        && std::fs::create_dir_all(&dir).is_ok()
        && std::fs::write(&announced, b"").is_ok()
}

/// Where the saved archive `saved` is downloaded and unpacked.
fn restore_dir(access: &Access, saved: &NodeCode) -> PathBuf {
    access
        .work_dir
        .join("restore")
        .join(saved.sha256.get(..12).unwrap_or("saved"))
}
