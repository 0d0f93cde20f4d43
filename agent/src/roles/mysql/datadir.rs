//! What the node's data folder says about the data in it, across agent restarts: whether it
//! ever held the cluster's data (then it is never deleted to retry a join), and whether a
//! MariaDB from an earlier agent still runs on it (then it is stopped cleanly before another
//! one starts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon;

/// Written next to the data folder (in the role's folder, `dir`) once the node was Synced: from
/// then on the folder holds the cluster's data, whatever an agent restart forgot. Not inside
/// it, where a state transfer could copy it to a joiner that is not Synced yet.
const HELD_DATA: &str = "data-held";

/// Whether the data folder held the cluster's data (the node was Synced with it once).
pub fn held_data(dir: &Path) -> bool {
    dir.join(HELD_DATA).exists()
}

/// Notes that the data folder holds the cluster's data.
pub fn mark_held(dir: &Path) -> Result<(), String> {
    let marker = dir.join(HELD_DATA);
    if marker.exists() {
        return Ok(());
    }
    std::fs::write(&marker, b"").map_err(|e| {
        format!(
            "could not note the data as held in {}: {e}",
            marker.display()
        )
    })
}

/// A MariaDB an earlier agent started on this node's configuration that still runs (the agent
/// was restarted while MariaDB kept the data folder locked).
pub fn leftover(pid_file: &Path, config: &Path) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pid = Pid::from_raw(pid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = String::from_utf8_lossy(&cmdline).contains(&config.display().to_string());
    (ours && daemon::alive(pid)).then_some(pid)
}

/// Stops a leftover MariaDB cleanly (SIGTERM: it writes its state, so the node rejoins by an
/// incremental transfer or bootstraps from it); an error if it is still there after `grace`.
pub async fn stop_leftover(pid: Pid, grace: Duration) -> Result<(), String> {
    tracing::warn!(%pid, "a MariaDB of an earlier agent runs on the data folder: stopping it");
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while daemon::alive(pid) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "a MariaDB started before this agent (pid {pid}) still runs on the data folder \
                 {} s after it was asked to stop",
                grace.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The pid file MariaDB writes (the configuration's `pid-file`).
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("mysqld.pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_data_is_noted_for_the_next_agent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!held_data(dir.path()));
        mark_held(dir.path()).unwrap();
        mark_held(dir.path()).unwrap();
        assert!(held_data(dir.path()));
    }

    #[tokio::test]
    async fn a_mariadb_of_an_earlier_agent_is_found_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("my.cnf");
        // A stand-in whose command line names the configuration, as mariadbd's does.
        let mut child = std::process::Command::new("bash")
            .args([
                "-c",
                &format!(
                    "exec -a 'mariadbd --defaults-file={}' sleep 60",
                    config.display()
                ),
            ])
            .spawn()
            .unwrap();
        let pid_file = pid_file(dir.path());
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        // Until bash has exec'd, the command line is bash's.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while leftover(&pid_file, &config).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = leftover(&pid_file, &config).expect("found by its pid file");
        assert_eq!(
            leftover(&pid_file, &dir.path().join("other.cnf")),
            None,
            "another configuration's process is not ours"
        );
        let reaper = std::thread::spawn(move || child.wait());
        stop_leftover(pid, Duration::from_secs(5)).await.unwrap();
        reaper.join().unwrap().unwrap();
        assert_eq!(leftover(&pid_file, &config), None, "stopped");
    }
}
