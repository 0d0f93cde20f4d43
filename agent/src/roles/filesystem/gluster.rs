//! The node's own glusterd, through the `gluster` CLI in script mode on the node's socket, and
//! what its answers say: the volumes and their bricks, the peers, a brick removal's progress.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one CLI call may take: a call to an unreachable peer hangs otherwise.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a question to another node's glusterd may take.
const REMOTE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian and other distributions install the self-heal inspector.
const GLFSHEAL: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/glusterfs/glfsheal",
    "/usr/lib/aarch64-linux-gnu/glusterfs/glfsheal",
    "/usr/libexec/glusterfs/glfsheal",
    "/usr/sbin/glfsheal",
];

fn glfsheal() -> Result<PathBuf, String> {
    GLFSHEAL
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "glfsheal not found in {} (Debian package glusterfs-server)",
                GLFSHEAL.join(", ")
            )
        })
}

/// The `gluster` CLI bound to one glusterd.
#[derive(Clone)]
pub struct Cli {
    pub program: PathBuf,
    pub socket: PathBuf,
}

impl Cli {
    /// Runs `gluster <args>`; its standard output, or what it said went wrong.
    pub async fn run(&self, args: &[&str]) -> Result<String, String> {
        let socket = format!("--glusterd-sock={}", self.socket.display());
        self.call(&self.program, &[&socket], args, CALL_TIMEOUT)
            .await
    }

    /// Runs a read-only `gluster <args>` against the glusterd of another node (glusterd answers
    /// `pool list` and `volume info` to any host), for a node that is not in a pool yet.
    pub async fn run_on(&self, host: &str, args: &[&str]) -> Result<String, String> {
        let remote = format!("--remote-host={host}");
        self.call(&self.program, &[&remote], args, REMOTE_CALL_TIMEOUT)
            .await
    }

    /// How far the self-heal of `volume` is, as `glfsheal` sees it through the node's glusterd
    /// (`gluster volume heal` would ask a glusterd on the default address, which there is not).
    pub async fn heal_summary(&self, volume: &str) -> Result<Vec<HealCount>, String> {
        let glfsheal = glfsheal()?;
        let socket = self.socket.display().to_string();
        let text = self
            .call(
                &glfsheal,
                &[],
                &[volume, "info-summary", "glusterd-sock", &socket],
                CALL_TIMEOUT,
            )
            .await?;
        Ok(parse_heal_summary(&text))
    }

    async fn call(
        &self,
        program: &Path,
        target: &[&str],
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let what = format!(
            "{} {}",
            program.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
        let mut command = tokio::process::Command::new(program);
        if program == self.program {
            command.arg("--mode=script");
        }
        let call = command.args(target).args(args).kill_on_drop(true).output();
        let out = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("{what}: no answer in {}s", timeout.as_secs()))?
            .map_err(|e| format!("run {what}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let said = [stderr, stdout]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            Err(format!("{what}: {said}"))
        }
    }
}

/// One volume as `gluster volume info` shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeInfo {
    pub name: String,
    pub started: bool,
    /// `host:path`, in the volume's order (consecutive groups form its subvolumes).
    pub bricks: Vec<Brick>,
    /// The options set on it.
    pub options: std::collections::BTreeMap<String, String>,
}

/// A brick: a folder on a host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Brick {
    pub host: String,
    pub path: String,
}

impl Brick {
    pub fn spec(&self) -> String {
        format!("{}:{}", self.host, self.path)
    }
}

/// Parses `gluster volume info` (all volumes; "No volumes present" is none).
pub fn parse_volume_info(text: &str) -> Vec<VolumeInfo> {
    let mut volumes: Vec<VolumeInfo> = Vec::new();
    let mut in_options = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("Volume Name:") {
            volumes.push(VolumeInfo {
                name: name.trim().to_string(),
                ..Default::default()
            });
            in_options = false;
            continue;
        }
        let Some(volume) = volumes.last_mut() else {
            continue;
        };
        if line == "Options Reconfigured:" {
            in_options = true;
        } else if in_options {
            if let Some((key, value)) = line.split_once(':') {
                volume
                    .options
                    .insert(key.trim().to_string(), value.trim().to_string());
            }
        } else if let Some(status) = line.strip_prefix("Status:") {
            volume.started = status.trim() == "Started";
        } else if let Some((key, value)) = line.split_once(':')
            && key.starts_with("Brick")
            && key[5..].chars().all(|c| c.is_ascii_digit())
            && !key[5..].is_empty()
            && let Some((host, path)) = value.trim().split_once(':')
        {
            volume.bricks.push(Brick {
                host: host.to_string(),
                path: path.to_string(),
            });
        }
    }
    volumes
}

/// A peer as `gluster pool list` shows it (the node itself is `localhost`).
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub uuid: String,
    pub host: String,
    pub connected: bool,
}

/// Parses `gluster pool list`.
pub fn parse_pool_list(text: &str) -> Vec<Peer> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [uuid, host, state] = fields[..] else {
                return None;
            };
            Some(Peer {
                uuid: uuid.to_string(),
                host: host.to_string(),
                connected: state == "Connected",
            })
        })
        .collect()
}

/// One brick's line of a heal summary: whether its brick answers, and how many entries it
/// still has to heal (`None`: it could not say).
#[derive(Debug, Clone, PartialEq)]
pub struct HealCount {
    pub brick: String,
    pub connected: bool,
    pub pending: Option<u64>,
}

/// A heal is done when every brick answers and none has an entry left to heal.
pub fn healed(counts: &[HealCount]) -> bool {
    !counts.is_empty() && counts.iter().all(|c| c.connected && c.pending == Some(0))
}

/// Parses `glfsheal VOLUME info-summary`.
pub fn parse_heal_summary(text: &str) -> Vec<HealCount> {
    let mut counts: Vec<HealCount> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(brick) = line.strip_prefix("Brick ") {
            counts.push(HealCount {
                brick: brick.to_string(),
                connected: false,
                pending: None,
            });
        } else if let Some(last) = counts.last_mut() {
            if let Some(status) = line.strip_prefix("Status:") {
                last.connected = status.trim() == "Connected";
            } else if let Some(total) = line.strip_prefix("Total Number of entries:") {
                last.pending = total.trim().parse().ok();
            }
        }
    }
    counts
}

/// How a brick removal (or a rebalance) is doing, over every node that moves data.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// Every node finished.
    pub completed: bool,
    /// Files that could not be moved, over all nodes.
    pub failures: u64,
    /// Files left where they are (no space on the others, open for writing), over all nodes.
    pub skipped: u64,
    /// Some node reports its process failed.
    pub failed: bool,
    /// Files moved so far.
    pub moved: u64,
}

/// Parses the table of `volume remove-brick ... status` (and `volume rebalance ... status`):
/// `Node Rebalanced-files size scanned failures skipped status run-time`.
pub fn parse_migration(text: &str) -> Option<Migration> {
    let mut rows = 0;
    let mut migration = Migration {
        completed: true,
        failures: 0,
        skipped: 0,
        failed: false,
        moved: 0,
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Node, files, size, scanned, failures, skipped, status (one or two words), run time.
        if fields.len() < 8 || fields[1].parse::<u64>().is_err() {
            continue;
        }
        let (Ok(moved), Ok(failures), Ok(skipped)) = (
            fields[1].parse::<u64>(),
            fields[4].parse::<u64>(),
            fields[5].parse::<u64>(),
        ) else {
            continue;
        };
        let status = fields[6..fields.len() - 1].join(" ");
        rows += 1;
        migration.moved += moved;
        migration.failures += failures;
        migration.skipped += skipped;
        migration.completed &= status == "completed";
        migration.failed |= status == "failed";
    }
    (rows > 0).then_some(migration)
}

/// The pid files glusterd and the processes it starts write under `dir` (bricks, self-heal,
/// rebalance), read.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "pid")
                && let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                pids.push(pid);
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "
Volume Name: uploads
Type: Distributed-Replicate
Volume ID: 199a833b-17b4-4c4e-86cc-6706d666709d
Status: Started
Snapshot Count: 0
Number of Bricks: 2 x 2 = 4
Transport-type: tcp
Bricks:
Brick1: 127.0.10.1:/run/conpaas-gluster/ns/fs-storage-0/uploads-1
Brick2: 127.0.10.2:/run/conpaas-gluster/ns/fs-storage-1/uploads-1
Brick3: 127.0.10.3:/run/conpaas-gluster/ns/fs-storage-2/uploads-2
Brick4: 127.0.10.4:/run/conpaas-gluster/ns/fs-storage-3/uploads-2
Options Reconfigured:
cluster.min-free-disk: 10%
nfs.disable: on

Volume Name: logs
Type: Distribute
Status: Created
Bricks:
Brick1: 127.0.10.1:/run/conpaas-gluster/ns/fs-storage-0/logs-1
";

    #[test]
    fn volume_info_lists_volumes_states_and_bricks_in_order() {
        let volumes = parse_volume_info(INFO);
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].name, "uploads");
        assert!(volumes[0].started);
        assert_eq!(volumes[0].bricks.len(), 4);
        assert_eq!(volumes[0].bricks[2].host, "127.0.10.3");
        assert_eq!(
            volumes[0].bricks[2].path,
            "/run/conpaas-gluster/ns/fs-storage-2/uploads-2"
        );
        assert_eq!(volumes[0].options["cluster.min-free-disk"], "10%");
        assert_eq!(volumes[0].options.len(), 2);
        assert!(!volumes[1].started);
        assert_eq!(volumes[1].bricks.len(), 1);
        assert!(parse_volume_info("No volumes present").is_empty());
    }

    #[test]
    fn pool_list_tells_connected_peers() {
        let text = "UUID\t\t\t\t\tHostname  \tState
44aa6287-a626-4c0a-a5ac-65f8115f4e6f\t127.0.10.2\tConnected
a4c26181-3c88-42f4-80cc-1746d7a724f1\t127.0.10.3\tDisconnected
a07df0e1-affe-470f-a7ca-c95eabbc6940\tlocalhost \tConnected";
        let peers = parse_pool_list(text);
        assert_eq!(peers.len(), 3);
        assert!(peers[0].connected);
        assert!(!peers[1].connected);
        assert_eq!(peers[2].host, "localhost");
    }

    #[test]
    fn a_removal_is_done_only_when_every_node_completed_without_failures() {
        let done = "                                    Node Rebalanced-files          size       scanned      failures       skipped               status  run time in h:m:s
                               ---------      -----------   -----------   -----------   -----------   -----------         ------------     --------------
                              127.0.10.2               13       34Bytes            20             0             0            completed        0:00:02
                               localhost                7       17Bytes            40             0             0            completed        0:00:01";
        let m = parse_migration(done).unwrap();
        assert!(m.completed && !m.failed);
        assert_eq!((m.moved, m.failures), (20, 0));

        let short_of_space = done.replace(
            "20             0             0            completed",
            "20             7             0            completed",
        );
        assert_eq!(parse_migration(&short_of_space).unwrap().failures, 7);
        let left_behind = done.replace(
            "40             0             0            completed",
            "40             0             3            completed",
        );
        assert_eq!(parse_migration(&left_behind).unwrap().skipped, 3);

        let running = done.replace("completed        0:00:01", "in progress        0:00:01");
        let m = parse_migration(&running).unwrap();
        assert!(!m.completed);
        assert!(parse_migration("volume remove-brick status: failed: not started").is_none());
    }

    #[test]
    fn a_heal_is_done_when_every_brick_answers_with_nothing_left() {
        // As glfsheal printed it here right after a replace-brick, then a moment later.
        let started = "Brick 127.0.99.1:/b1/v
Status: Connected
Total Number of entries: 44
Number of entries in heal pending: 44

Brick 127.0.99.3:/b3/v
Status: Transport endpoint is not connected
Total Number of entries: -
";
        let counts = parse_heal_summary(started);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[0].pending, Some(44));
        assert!(!counts[1].connected && counts[1].pending.is_none());
        assert!(!healed(&counts));
        let done = started
            .replace("entries: 44", "entries: 0")
            .replace("Transport endpoint is not connected", "Connected")
            .replace("entries: -", "entries: 0");
        assert!(healed(&parse_heal_summary(&done)));
        assert!(!healed(&parse_heal_summary("Volume heal failed.")));
    }
}
