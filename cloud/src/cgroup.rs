//! A local VM's cgroup: what its instance type gives it of the host (a CPU quota and a memory
//! limit), enforced by the kernel over the agent and every daemon it starts, as a hypervisor
//! would size a VM. cgroup v1 controllers (`/sys/fs/cgroup/{cpu,memory}`); the folder of VM
//! `<id>` is `conpaas-local/<id>` under each. Membership is also what finds every process of a
//! VM, including a daemon that left the agent's process group.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::VmSize;

/// Where the cgroup v1 controllers are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The folder, under each controller, that holds one folder per local VM.
const PARENT: &str = "conpaas-local";
/// The CPU quota's period (the kernel's default): a VM of `n` millicpus runs `n * 100` µs of
/// every 100 ms.
const PERIOD_US: u64 = 100_000;

/// The controller folders of VM `id`: none for an id that is not a VM's (a path such as `..`
/// must never name another cgroup, whose processes would be killed).
fn folders(id: &str) -> Vec<PathBuf> {
    if crate::driver::check_token(id).is_err() {
        return Vec::new();
    }
    ["cpu", "memory"]
        .iter()
        .map(|controller| Path::new(ROOT).join(controller).join(PARENT).join(id))
        .collect()
}

/// What a sized VM's first process runs (`sh -c JOIN_AND_EXEC sh CPU_PROCS MEMORY_PROCS AGENT
/// ARGS...`): it writes its own pid into the VM's cgroups, then becomes the agent (same pid).
pub const JOIN_AND_EXEC: &str = r#"echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@""#;

/// Makes VM `id`'s cgroup with `size`'s limits (or updates them); its `cgroup.procs` files, for
/// [`JOIN_AND_EXEC`].
pub fn create(id: &str, size: VmSize) -> Result<[PathBuf; 2], String> {
    if !Path::new(ROOT).join("cpu/cpu.cfs_quota_us").exists() {
        return Err(format!(
            "instance types on the local cloud need the cgroup v1 cpu and memory controllers at {ROOT}/cpu and {ROOT}/memory (this host has none: cgroup v2 is not supported yet)"
        ));
    }
    let [cpu, memory] =
        <[PathBuf; 2]>::try_from(folders(id)).map_err(|_| format!("{id:?} is not a VM id"))?;
    let quota = (u64::from(size.millicpus) * PERIOD_US / 1000).max(1000);
    let bytes = u64::from(size.memory_mib) << 20;
    let settings = [
        (&cpu, "cpu.cfs_period_us", PERIOD_US),
        (&cpu, "cpu.cfs_quota_us", quota),
        (&memory, "memory.limit_in_bytes", bytes),
    ];
    for dir in [&cpu, &memory] {
        fs::create_dir_all(dir).map_err(|e| format!("create cgroup {}: {e}", dir.display()))?;
    }
    for (dir, file, value) in settings {
        let path = dir.join(file);
        fs::write(&path, value.to_string())
            .map_err(|e| format!("write {value} to {}: {e}", path.display()))?;
    }
    Ok([cpu.join("cgroup.procs"), memory.join("cgroup.procs")])
}

/// The processes in VM `id`'s cgroups and any cgroup made below them (none when it has no
/// cgroup).
pub fn members(id: &str) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for dir in folders(id) {
        walk(&dir, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Kills every process in VM `id`'s cgroup.
pub fn kill_members(id: &str) {
    for pid in members(id) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Removes VM `id`'s cgroups (and any made below them) once their processes are gone: killed
/// ones take a moment to exit. Blocks for up to a second.
pub fn remove(id: &str) {
    fn remove_tree(dir: &Path) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    for _ in 0..50 {
        if members(id).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for dir in folders(id) {
        remove_tree(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_vm_id_names_a_cgroup() {
        assert_eq!(folders("vm-1").len(), 2);
        for bad in ["..", "../..", "a/b", "", "x y"] {
            assert!(folders(bad).is_empty(), "{bad:?}");
            assert!(members(bad).is_empty());
        }
    }
}
