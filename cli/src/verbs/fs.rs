//! `cpsctl fs export` and `cpsctl fs import`: a filesystem Service's volume as a tar, as ConPaaS'
//! XtreemFS snapshots were. cpsctl mounts the volume here with GlusterFS' FUSE client, from the
//! Service's endpoint, and runs tar in it: this machine needs the client (Debian package
//! glusterfs-client), root for the mount, and a route to the storage nodes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use conpaas_crds::v1alpha1::ServiceType;

use crate::connect::Session;

/// A volume mounted in a fresh folder for as long as this lives.
struct Mounted {
    /// Removed only once unmounted: removing it through the mount would delete the volume's
    /// files.
    dir: Option<tempfile::TempDir>,
}

impl Mounted {
    async fn new(s: &Session, service: &str, volume: &str) -> anyhow::Result<Self> {
        let svc = s.service(service).await?;
        if svc.spec.r#type != ServiceType::Filesystem {
            bail!(
                "service/{service} is of type {}, not filesystem",
                svc.spec.r#type.as_str()
            );
        }
        let volumes: Vec<String> = svc
            .spec
            .filesystem
            .iter()
            .flat_map(|f| &f.volumes)
            .map(|v| v.name.clone())
            .collect();
        if !volumes.iter().any(|v| v == volume) {
            bail!(
                "service/{service} has no volume {volume:?} (it has: {})",
                if volumes.is_empty() {
                    "none".into()
                } else {
                    volumes.join(", ")
                }
            );
        }
        let endpoint = svc
            .status
            .as_ref()
            .and_then(|st| st.endpoint.clone())
            .with_context(|| {
                format!("service/{service} has no endpoint yet; `cpsctl wait {service}`")
            })?;
        let (host, port) = endpoint.rsplit_once(':').unwrap_or((&endpoint, "24007"));
        if !Path::new("/sbin/mount.glusterfs").exists() && !super::on_path("mount.glusterfs") {
            bail!(
                "mount.glusterfs not found: install the GlusterFS client (Debian package glusterfs-client)"
            );
        }
        let dir = tempfile::tempdir().context("make a folder to mount the volume in")?;
        let out = tokio::process::Command::new("mount")
            .args(["-t", "glusterfs", "-o", &format!("server-port={port}")])
            .arg(format!("{host}:/{volume}"))
            .arg(dir.path())
            .output()
            .await
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "mount volume {volume} of service/{service} from {endpoint} (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let unmounted = std::process::Command::new("umount")
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            eprintln!(
                "could not unmount {}; it stays (unmount it, then remove the folder)",
                dir.path().display()
            );
            let _ = dir.keep();
        }
    }
}

/// Writes the volume's files as a tar to standard output.
pub async fn export(s: &Session, service: &str, volume: &str) -> anyhow::Result<()> {
    let mounted = Mounted::new(s, service, volume).await?;
    let status = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(mounted.path())
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .status()
        .await
        .context("run tar")?;
    if !status.success() {
        bail!("tar of volume {volume} failed ({status}); its message is above");
    }
    Ok(())
}

/// Unpacks a tar (`file`, or standard input) into the volume, over what it holds.
pub async fn import(
    s: &Session,
    service: &str,
    volume: &str,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mounted = Mounted::new(s, service, volume).await?;
    let mut tar = tokio::process::Command::new("tar");
    tar.arg("-C")
        .arg(mounted.path())
        .args(["--no-same-owner", "-xf"]);
    match &file {
        Some(f) => tar.arg(f),
        None => tar.arg("-"),
    };
    let status = tar.status().await.context("run tar")?;
    if !status.success() {
        bail!("unpacking into volume {volume} failed ({status}); tar's message is above");
    }
    Ok(())
}
