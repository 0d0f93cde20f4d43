//! The filesystem volumes a node's Service links to (`links[].volume`), mounted on the node by
//! GlusterFS' FUSE client (in the foreground, as the agent's child) under
//! `<work>/volumes/<service>-<volume>`, and linked into each code version's folder at the link's
//! `mountPath`: the mount stays in place while code versions come and go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conpaas_crds::v1alpha1::NodeLink;
use nix::sys::signal::Signal;

use crate::daemon::{self, Daemon};

struct Mount {
    link: NodeLink,
    dir: PathBuf,
    client: Daemon,
    /// The mount answered a listing since its client started: the volume is there. (A client
    /// mounts before it has the volume's layout, and exits when the volume does not exist.)
    answered: bool,
    /// Its root was given to the node's workers' user.
    given: bool,
}

/// The node's volume mounts.
pub struct Mounts {
    work_dir: PathBuf,
    mounts: BTreeMap<String, Mount>,
}

impl Mounts {
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            work_dir,
            mounts: BTreeMap::new(),
        }
    }

    /// Mounts the volumes `links` name and unmounts those they no longer name.
    pub async fn apply(&mut self, links: &[NodeLink]) -> Result<(), String> {
        let wanted: BTreeMap<String, &NodeLink> = links
            .iter()
            .filter(|l| l.volume.is_some() && l.mount_path.is_some())
            .map(|l| (key(l), l))
            .collect();
        let gone: Vec<String> = self
            .mounts
            .iter()
            .filter(|(k, m)| wanted.get(*k).is_none_or(|l| l.endpoint != m.link.endpoint))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(mut mount) = self.mounts.remove(&k) {
                mount.client.stop(Duration::from_secs(5)).await;
                unmount(&mount.dir);
            }
        }
        for (k, link) in wanted {
            if let Some(mount) = self.mounts.get_mut(&k) {
                mount.link = link.clone();
                if !mount.client.running() {
                    // A client that died leaves a dead mount behind.
                    mount.answered = false;
                    mount.given = false;
                    unmount(&mount.dir);
                    mount.client.ensure_started()?;
                } else if !mount.answered && mounted_dirs().contains(&mount.dir) {
                    mount.answered = answers(&mount.dir).await;
                }
                continue;
            }
            let Some(endpoint) = &link.endpoint else {
                continue;
            };
            let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, "24007"));
            let volume = link.volume.clone().expect("filtered above");
            let dir = self.work_dir.join("volumes").join(&k);
            let logs = self.work_dir.join("logs");
            for d in [&dir, &logs] {
                std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
            }
            let dir = std::fs::canonicalize(&dir)
                .map_err(|e| format!("resolve {}: {e}", dir.display()))?;
            unmount(&dir);
            let program = daemon::find(&["glusterfs"], "glusterfs-client")?;
            let mut client = Daemon::new(
                "glusterfs",
                program,
                vec![
                    "-N".into(),
                    format!("--volfile-server={host}"),
                    format!("--volfile-server-port={port}"),
                    format!("--volfile-id={volume}"),
                    format!(
                        "--log-file={}",
                        logs.join(format!("mount-{k}.log")).display()
                    ),
                    dir.display().to_string(),
                ],
                logs.join(format!("mount-{k}.out")),
                Signal::SIGTERM,
            );
            client.ensure_started()?;
            tracing::info!(volume, service = %link.service, dir = %dir.display(), "mounting");
            self.mounts.insert(
                k,
                Mount {
                    link: link.clone(),
                    dir,
                    client,
                    answered: false,
                    given: false,
                },
            );
        }
        Ok(())
    }

    /// What keeps a linked volume from being usable yet, if anything.
    pub fn pending(&self, links: &[NodeLink]) -> Option<String> {
        for link in links.iter().filter(|l| l.volume.is_some()) {
            let volume = link.volume.as_deref().unwrap_or_default();
            match self.mounts.get(&key(link)) {
                None if link.endpoint.is_none() => {
                    return Some(format!(
                        "volume {volume} of {}: waiting for its address",
                        link.service
                    ));
                }
                None => return Some(format!("volume {volume} of {}: not mounted", link.service)),
                Some(m) if !m.answered => {
                    return Some(format!(
                        "volume {volume} of {}: mounting (see {})",
                        link.service,
                        self.work_dir
                            .join("logs")
                            .join(format!("mount-{}.log", key(link)))
                            .display()
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Links every mounted volume into `code_dir` at its `mountPath`, replacing what the code
    /// has there.
    pub fn link_into(&self, code_dir: &Path) -> Result<(), String> {
        for mount in self.mounts.values() {
            let Some(relative) = &mount.link.mount_path else {
                continue;
            };
            let at = code_dir.join(relative);
            if std::fs::read_link(&at).is_ok_and(|target| target == mount.dir) {
                continue;
            }
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
            }
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&at),
                Ok(_) => std::fs::remove_file(&at),
                Err(_) => Ok(()),
            }
            .map_err(|e| format!("replace {} by the volume: {e}", at.display()))?;
            std::os::unix::fs::symlink(&mount.dir, &at)
                .map_err(|e| format!("link the volume at {}: {e}", at.display()))?;
        }
        Ok(())
    }

    /// Makes the root of every mounted volume `user`'s, so that workers running as `user` (php's
    /// www-data) write into it.
    pub fn give_to(&mut self, user: &str) -> Result<(), String> {
        for mount in self.mounts.values_mut().filter(|m| m.answered && !m.given) {
            let owner = format!("{user}:{user}");
            let out = std::process::Command::new("chown")
                .arg(&owner)
                .arg(&mount.dir)
                .output()
                .map_err(|e| format!("run chown: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "chown {owner} {}: {}",
                    mount.dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            mount.given = true;
        }
        Ok(())
    }

    /// What each mounted volume's link exports (`<AS>_MOUNT`, `<AS>_VOLUME`, `<AS>_SERVERS`).
    pub fn environment(&self) -> Result<Vec<(String, String)>, String> {
        let mut env = Vec::new();
        for mount in self.mounts.values() {
            let dir = mount.dir.display().to_string();
            env.extend(conpaas_crds::types::links::environment(
                conpaas_crds::types::links::LinkFacts {
                    link: &mount.link,
                    secret: &BTreeMap::new(),
                    mount: Some(&dir),
                },
            )?);
        }
        Ok(env)
    }

    /// Each mounted volume as (`<AS>`, its mount, `root/<mountPath>`): where a type that shows
    /// volumes at fixed paths (mapreduce) binds it.
    pub fn binds(&self, root: &Path) -> Vec<(String, PathBuf, PathBuf)> {
        self.mounts
            .values()
            .filter(|m| m.answered)
            .filter_map(|m| {
                let relative = m.link.mount_path.as_ref()?;
                Some((m.link.prefix.clone(), m.dir.clone(), root.join(relative)))
            })
            .collect()
    }

    /// Unmounts every volume.
    pub async fn shutdown(&mut self) {
        for (_, mut mount) in std::mem::take(&mut self.mounts) {
            mount.client.stop(Duration::from_secs(5)).await;
            unmount(&mount.dir);
        }
    }
}

/// Whether a listing of the mount succeeds within a few seconds (a FUSE mount whose client
/// has no volume yet blocks, or fails with "not connected").
async fn answers(dir: &Path) -> bool {
    let dir = dir.to_path_buf();
    let listing = tokio::task::spawn_blocking(move || std::fs::read_dir(dir).is_ok());
    matches!(
        tokio::time::timeout(Duration::from_secs(5), listing).await,
        Ok(Ok(true))
    )
}

fn key(link: &NodeLink) -> String {
    format!(
        "{}-{}",
        link.service,
        link.volume.as_deref().unwrap_or_default()
    )
}

/// Detaches every mount inside `dir` (before the folder is removed: removing through a live
/// mount would delete the volume's files).
pub fn unmount_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    for point in mounted_dirs().iter().filter(|p| p.starts_with(&dir)) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(point)
            .status();
    }
}

/// Detaches whatever is mounted at `dir` (a client that died leaves its mount unusable).
fn unmount(dir: &Path) {
    if mounted_dirs().iter().any(|d| d == dir) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(dir)
            .status();
    }
}

/// The mount points of this machine (`/proc/self/mountinfo`, field 5).
pub fn mounted_dirs() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(escaped.replace("\\040", " ")))
        .collect()
}
