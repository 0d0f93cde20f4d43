//! The daemons a role runs (nginx, php-fpm, redis, ...): found on PATH or where Debian installs
//! them, started in the foreground as the agent's children (so the VM's process group stops them
//! with the agent), reloaded by signal, restarted when they die, stopped gracefully.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Where Debian puts daemons that are not on a user's PATH.
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"];

/// The first of `names` found on PATH or in the system folders, or a message naming what is
/// missing and which package has it.
pub fn find(names: &[&str], package: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .collect();
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "{} not found on PATH or in {} (Debian package {package})",
        names.join(" or "),
        SYSTEM_DIRS.join(", ")
    ))
}

/// The first file matching `prefix*` in the system folders (php-fpm8.2, php-fpm8.3, ...).
pub fn find_versioned(prefix: &str, package: &str) -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = SYSTEM_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
                && is_executable(p)
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        format!(
            "{prefix}* not found in {} (Debian package {package})",
            SYSTEM_DIRS.join(", ")
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One running daemon.
pub struct Daemon {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Environment given on top of the agent's own.
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// How it stops gracefully.
    stop_signal: Signal,
    restarts: u32,
}

impl Daemon {
    /// A daemon `name` run as `program args`, its output appended to `log`.
    pub fn new(
        name: &'static str,
        program: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        stop_signal: Signal,
    ) -> Self {
        Self {
            name,
            program,
            args,
            env: Vec::new(),
            log,
            child: None,
            stop_signal,
            restarts: 0,
        }
    }

    /// Runs it with `env` added to the agent's environment (from its next start on).
    pub fn set_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        self.env = env.into_iter().collect();
    }

    /// Starts it unless it runs.
    pub fn ensure_started(&mut self) -> Result<(), String> {
        if self.running() {
            return Ok(());
        }
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| format!("open {}: {e}", self.log.display()))
        };
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| format!("start {} ({}): {e}", self.name, self.program.display()))?;
        if self.child.is_some() {
            self.restarts += 1;
        }
        tracing::info!(daemon = self.name, pid = child.id(), "started");
        if let Some(pid) = child.id() {
            record_group(pid);
            crate::leftovers::note(pid, self.stop_signal);
        }
        self.child = Some(child);
        Ok(())
    }

    /// Whether it runs; a daemon that exited is noted in the agent's log.
    pub fn running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::warn!(daemon = self.name, %status, log = %self.log.display(), "exited");
                false
            }
            Err(_) => false,
        }
    }

    /// Why it is not running, for the node's report.
    pub fn exited_message(&self) -> String {
        format!(
            "{} is not running (restarted {} times; see {})",
            self.name,
            self.restarts,
            self.log.display()
        )
    }

    /// Sends `signal` (a reload) if it runs.
    pub fn signal(&mut self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// Its process id while it runs.
    pub fn pid(&mut self) -> Option<Pid> {
        if !self.running() {
            return None;
        }
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .map(|id| Pid::from_raw(id as i32))
    }

    /// Stops it gracefully, killing it after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(pid) = self.pid() else {
            return;
        };
        let _ = kill(pid, self.stop_signal);
        let mut child = self.child.take().expect("a running daemon has a child");
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            tracing::warn!(daemon = self.name, "did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// On the local cloud, notes the daemon's pid where the cloud looks for the VM's process groups
/// when it terminates it: a daemon that makes itself a session leader (php-fpm) leaves the
/// agent's group, and would outlive the VM otherwise. Real VMs need nothing of the kind.
pub fn record_group(pid: u32) {
    use std::io::Write;
    let Some(file) = std::env::var_os(conpaas_crds::bootstrap::local_vm::PROCESS_GROUPS) else {
        return;
    };
    // With its start time, so a pid reused later is not killed.
    let started = crate::leftovers::start_ticks(pid as i32)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| writeln!(f, "{pid} {started}"));
    if let Err(e) = written {
        tracing::warn!(error = %e, "record the daemon's process group");
    }
}

/// The processes whose parent is `parent` (an nginx master's workers).
pub fn children(parent: Pid) -> Vec<Pid> {
    let parent = parent.as_raw().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == parent).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// Whether the process `pid` still exists (a worker that exited and was reaped is gone).
pub fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Waits until each of `workers` has exited or is shutting down (nginx renames a worker that
/// stopped accepting connections "worker process is shutting down"); false after `limit`.
pub async fn wait_retired(workers: &[Pid], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let accepting = workers.iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| !String::from_utf8_lossy(&c).contains("shutting down"))
        });
        if !accepting {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `user` when the agent runs as root, the user exists and it can reach `dir` (it may search
/// every folder from `/` down to the real `dir`, as its owner, one of its groups or any other
/// user): the daemons' workers then run as it. None otherwise: they run as the agent's own user.
pub fn unprivileged_user(user: &'static str, dir: &Path) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let account = nix::unistd::User::from_name(user).ok().flatten()?;
    // Its primary group and the groups /etc/group lists it in, as the kernel will see them
    // once the workers drop to it (initgroups).
    let name = std::ffi::CString::new(user).ok()?;
    let groups: Vec<u32> = nix::unistd::getgrouplist(&name, account.gid)
        .ok()?
        .iter()
        .map(|g| g.as_raw())
        .collect();
    // The real path: a relative folder or one reached through a link has other ancestors.
    let dir = std::fs::canonicalize(dir).ok()?;
    let reachable = dir.ancestors().all(|a| {
        std::fs::metadata(a).is_ok_and(|m| {
            may_search(
                (account.uid.as_raw(), &groups),
                (m.uid(), m.gid(), m.mode()),
            )
        })
    });
    (nix::unistd::geteuid().is_root() && reachable).then_some(user)
}

/// Whether a user (uid, its groups) may search a folder (owner, group, mode).
fn may_search((uid, groups): (u32, &[u32]), (owner, group, mode): (u32, u32, u32)) -> bool {
    if uid == owner {
        mode & 0o100 != 0
    } else if groups.contains(&group) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Runs `program args` to its end; on failure, `what` and the program's own words.
pub async fn run_checked(program: &Path, args: &[String], what: &str) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes `contents` to `path` when it differs; whether it changed.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<bool, String> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(true)
}

/// Like [`write_if_changed`], readable by the agent's user only (it holds a password).
pub fn write_private_if_changed(path: &Path, contents: &str) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        // Written by an earlier agent for everyone to read, perhaps.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("make {} private: {e}", path.display()))?;
        return Ok(false);
    }
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, contents)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(true)
}

/// Writes `contents` to `path` readable by the agent's user only (it holds a password).
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// Whether something accepts TCP connections at `address`.
pub async fn listening(address: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_searched_by_the_bits_that_apply_to_the_user() {
        let www = (33, &[33, 1000][..]);
        assert!(may_search(www, (0, 0, 0o755)), "others may search");
        assert!(!may_search(www, (0, 0, 0o700)), "root's home");
        assert!(may_search(www, (0, 33, 0o750)), "through its group");
        assert!(
            may_search(www, (0, 1000, 0o710)),
            "through a supplementary group"
        );
        assert!(
            !may_search(www, (0, 1001, 0o750)),
            "not through a group it is not in"
        );
        assert!(
            !may_search(www, (33, 0, 0o077)),
            "its owner's bits, not others'"
        );
    }

    #[test]
    fn a_folder_under_a_closed_parent_is_unreachable() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("home/work");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::set_permissions(root.path().join("home"), PermissionsExt::from_mode(0o700))
            .unwrap();
        assert_eq!(unprivileged_user("www-data", &work), None);
        if nix::unistd::geteuid().is_root()
            && nix::unistd::User::from_name("www-data")
                .ok()
                .flatten()
                .is_some()
        {
            std::fs::set_permissions(root.path().join("home"), PermissionsExt::from_mode(0o755))
                .unwrap();
            assert_eq!(unprivileged_user("www-data", &work), Some("www-data"));
        }
    }
}
