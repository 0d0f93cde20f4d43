//! Daemons an earlier agent on this VM started and left running. An agent that crashed and was
//! started again by the VM's init finds its MariaDB, redis-server or nginx still holding the
//! data folder's lock and the ports; its own would fail to start, and a role that then takes
//! the data folder for broken could delete a live one. So every daemon the agent starts is
//! noted (pid, start time, boot, stop signal) in the work folder, and a new agent first stops the
//! ones still running, each with its own graceful signal: they write their state (MariaDB its
//! Galera position, redis its AOF) and the roles start again from the data on disk, as after a
//! reboot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where the daemons this agent starts are noted (set once at startup).
static NOTES: OnceLock<PathBuf> = OnceLock::new();

fn notes_file(work_dir: &Path) -> PathBuf {
    work_dir.join("daemons.started")
}

/// The start time of process `pid` (field 22 of /proc/PID/stat): with the pid, a process no
/// other one is mistaken for once the pid is reused.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This boot of the machine: after a reboot pids and start times begin again, so a note from an
/// earlier boot could name an unrelated process.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}

/// Notes a daemon this agent started, for the next agent.
pub fn note(pid: u32, stop: Signal) {
    let Some(file) = NOTES.get() else {
        return;
    };
    let Some(ticks) = start_ticks(pid as i32) else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| writeln!(f, "{pid} {ticks} {} {}", stop as i32, boot_id()));
    if let Err(e) = written {
        tracing::warn!(error = %e, file = %file.display(), "note a started daemon");
    }
}

/// The noted daemons still running (the same process: boot, pid and start time).
fn still_running(notes: &str) -> Vec<(Pid, Signal)> {
    let boot = boot_id();
    notes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let pid: i32 = fields.next()?.parse().ok()?;
            let ticks: u64 = fields.next()?.parse().ok()?;
            let signal = Signal::try_from(fields.next()?.parse::<i32>().ok()?).ok()?;
            let same = fields.next() == Some(boot.as_str())
                && start_ticks(pid) == Some(ticks)
                && crate::daemon::alive(Pid::from_raw(pid));
            same.then_some((Pid::from_raw(pid), signal))
        })
        .collect()
}

/// Stops the daemons an earlier agent in `work_dir` left running (each with its graceful
/// signal, killed after `grace`), then notes this agent's from now on. How many it stopped.
pub async fn stop_earlier(work_dir: &Path, grace: Duration) -> usize {
    let file = notes_file(work_dir);
    let left = std::fs::read_to_string(&file)
        .map(|notes| still_running(&notes))
        .unwrap_or_default();
    for (pid, signal) in &left {
        tracing::warn!(%pid, ?signal, "a daemon of an earlier agent still runs: stopping it");
        let _ = kill(*pid, *signal);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while left.iter().any(|(pid, _)| crate::daemon::alive(*pid)) {
        if tokio::time::Instant::now() > deadline {
            for (pid, _) in left.iter().filter(|(pid, _)| crate::daemon::alive(*pid)) {
                tracing::warn!(%pid, "did not stop in time; killing it");
                let _ = kill(*pid, Signal::SIGKILL);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(&file);
    let _ = NOTES.set(file);
    left.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_earlier_agents_daemon_is_stopped_with_its_signal() {
        let dir = tempfile::tempdir().unwrap();
        // A daemon noted as an earlier agent would have, beside a line of a process gone, one of
        // a pid now another process's, one from an earlier boot, and one that does not parse.
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = start_ticks(pid).unwrap();
        let boot = boot_id();
        let gone = format!("{} {} 15 {boot}", i32::MAX - 1, 1);
        let reused = format!("{pid} {} 15 {boot}", ticks + 1);
        let earlier_boot = format!("{pid} {ticks} 9 another-boot");
        std::fs::write(
            notes_file(dir.path()),
            format!("{pid} {ticks} 15 {boot}\n{gone}\n{reused}\n{earlier_boot}\nnot a line\n"),
        )
        .unwrap();
        let reaper = std::thread::spawn(move || child.wait());
        let stopped = stop_earlier(dir.path(), Duration::from_secs(5)).await;
        assert_eq!(stopped, 1, "only the same process, once");
        let status = reaper.join().unwrap().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(15), "stopped by its own signal");
        assert!(
            !notes_file(dir.path()).exists(),
            "a fresh list for this agent"
        );
    }
}
