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
            // What the tenant's volume holds is the tenant's: a setuid binary or a device
            // file in it must not act on this machine.
            .args([
                "-t",
                "glusterfs",
                "-o",
                &format!("server-port={port},nosuid,nodev"),
            ])
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
        let mounted = Self { dir: Some(dir) };
        // Nor may a symbolic link in it be followed: the tenant's VMs serve the volume and may
        // turn a folder into a link to this machine's files between a check and a write
        // (mount.glusterfs does not take the option, a remount of the mount point does).
        let out = tokio::process::Command::new("mount")
            .args(["-o", "remount,bind,nosuid,nodev,nosymfollow"])
            .arg(mounted.path())
            .output()
            .await
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "remount volume {volume} of service/{service} without following links (nosymfollow needs Linux 5.10 and util-linux 2.36): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(mounted)
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
    let target = mounted.path().to_path_buf();
    let unpacked = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let input: Box<dyn std::io::Read> = match &file {
            Some(f) => {
                Box::new(std::fs::File::open(f).with_context(|| format!("open {}", f.display()))?)
            }
            None => Box::new(std::io::stdin()),
        };
        unpack_into(input, &target)
    })
    .await
    .context("unpack the archive")?
    .with_context(|| format!("unpacking into volume {volume}"))?;
    eprintln!("{unpacked} entries unpacked into volume {volume}");
    Ok(())
}

/// Unpacks the tar `input` into `target`, refusing (and stopping at) any entry whose path would
/// lead out of it: by `..`, an absolute path, or a symbolic link the volume already holds (a
/// tenant's volume may hold a link to `/etc` of the machine mounting it). Owners are not kept.
fn unpack_into(input: impl std::io::Read, target: &Path) -> anyhow::Result<u64> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_ownerships(false);
    archive.set_preserve_permissions(true);
    let mut unpacked = 0;
    for entry in archive.entries().context("read the archive")? {
        let mut entry = entry.context("read the archive")?;
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let inside = entry
            .unpack_in(target)
            .with_context(|| format!("entry {path:?} leads out of the volume: refused"))?;
        if !inside {
            bail!("entry {path:?} leads out of the volume: refused");
        }
        unpacked += 1;
    }
    Ok(unpacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn an_import_never_writes_outside_the_volume() {
        let volume = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // The tenant's volume holds a link to a folder of the machine that mounts it.
        std::os::unix::fs::symlink(outside.path(), volume.path().join("etc")).unwrap();
        let plain = archive(&[("site/index.html", b"hello")]);
        assert_eq!(unpack_into(&plain[..], volume.path()).unwrap(), 1);
        assert_eq!(
            std::fs::read(volume.path().join("site/index.html")).unwrap(),
            b"hello"
        );
        let through_link = archive(&[("etc/passwd", b"owned")]);
        let refused = unpack_into(&through_link[..], volume.path()).unwrap_err();
        assert!(
            format!("{refused:#}").contains("\"etc/passwd\" leads out of the volume"),
            "{refused:#}"
        );
        assert!(
            !outside.path().join("passwd").exists(),
            "nothing written through the link"
        );
    }
}
