//! The local cloud, the embedded default: every VM is a detached `conpaas-agent` process on this
//! host with its own loopback address (127.S.x.y; Linux routes all of 127/8 to loopback, so
//! nodes can bind the same port without root) and its own folder under the state directory:
//!
//! ```text
//! <state>/vms/<id>/vm.json     the VM record: token, tags, address, process identity
//! <state>/vms/<id>/user-data   what the agent reads at boot
//! <state>/vms/<id>/work/       the agent's working directory ("the VM's disk")
//! <state>/vms/<id>/agent.log   the agent's output
//! <state>/logs/<id>.log        the log of a terminated VM, kept for post-mortems
//! ```
//!
//! The VM ID is its token, so a create after a controller crash finds the VM it started. The
//! processes run in their own process group and outlive the controller; a new controller finds
//! them through the state directory.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;

use crate::cgroup;
use crate::driver::{check_token, tags_match};
use crate::{CloudError, ComputeDriver, CreateRequest, Tags, Vm, VmSize, VmState};

/// Environment variable through which a local VM's agent learns its own address.
pub const ENV_VM_ADDRESS: &str = conpaas_crds::bootstrap::local_vm::ADDRESS;
/// Environment variable through which a local VM's agent learns its VM ID.
pub const ENV_VM_ID: &str = conpaas_crds::bootstrap::local_vm::ID;
/// Where a local VM's agent records the process groups of the daemons it starts, one id per
/// line, so that terminating the VM stops them too.
pub const ENV_PROCESS_GROUPS: &str = conpaas_crds::bootstrap::local_vm::PROCESS_GROUPS;
/// Environment variable through which a local VM's agent learns where its data volume is (the
/// folder `work/volume`, made with the VM, whose size is noted in `volume-gib` beside it).
pub const ENV_VOLUME_DIR: &str = conpaas_crds::bootstrap::local_vm::VOLUME_DIR;
pub const PROCESS_GROUPS_FILE: &str = "process-groups";

/// How a local cloud is set up.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Folder holding the VMs' records, disks and logs.
    pub state_dir: PathBuf,
    /// The `conpaas-agent` executable every VM runs.
    pub agent_binary: PathBuf,
    /// VMs get addresses 127.`subnet`.x.y; two local clouds on one host need different subnets.
    pub subnet: u8,
    /// How long a VM's agent may take to stop after SIGTERM before it is killed.
    pub stop_grace: Duration,
}

/// The local cloud.
pub struct LocalCloud {
    config: LocalConfig,
    // Creates are serialised: address allocation and the token check must not interleave.
    create_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    token: String,
    name: String,
    address: String,
    tags: Tags,
    instance_type: Option<String>,
    // The VM's data volume: `work/volume`, its size as asked.
    #[serde(default)]
    volume_gib: Option<u32>,
    // Its instance type's share of the host (a cgroup), when the Cloud lists its types.
    #[serde(default)]
    size: Option<VmSize>,
    // 0 until the process is started: the record is written first, so a crash between the two
    // leaves a record to find, never an unrecorded process.
    pid: i32,
    // The process start time from /proc, so a recycled PID is never mistaken for the VM.
    start_ticks: u64,
    created_unix_ms: u64,
}

impl LocalCloud {
    /// A local cloud keeping its state under `config.state_dir`.
    pub fn new(config: LocalConfig) -> Self {
        Self {
            config,
            create_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn vms_dir(&self) -> PathBuf {
        self.config.state_dir.join("vms")
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir().join(id)
    }

    fn read_record(&self, id: &str) -> Result<Option<Record>, CloudError> {
        if check_token(id).is_err() {
            return Ok(None);
        }
        let path = self.vm_dir(id).join("vm.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CloudError::Other(format!("corrupt VM record {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read VM record", &path, e)),
        }
    }

    fn records(&self) -> Result<Vec<Record>, CloudError> {
        let dir = self.vms_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list VMs", &dir, e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list VMs", &dir, e))?;
            if let Some(record) = self.read_record(&entry.file_name().to_string_lossy())? {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn free_address(&self, records: &[Record]) -> Result<String, CloudError> {
        let used: std::collections::HashSet<&str> =
            records.iter().map(|r| r.address.as_str()).collect();
        (1u32..=0xfeff)
            .map(|i| Ipv4Addr::new(127, self.config.subnet, (i >> 8) as u8, (i & 0xff) as u8))
            .filter(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255)
            .map(|ip| ip.to_string())
            .find(|ip| !used.contains(ip.as_str()))
            .ok_or_else(|| {
                CloudError::QuotaExceeded(format!(
                    "no free address in 127.{}.0.0/16",
                    self.config.subnet
                ))
            })
    }

    /// The VM's process: from the record, or (when a crash interrupted the boot before the PID
    /// was recorded) found by the user-data path on its command line.
    fn process(&self, record: &Record) -> Option<(i32, u64)> {
        if record.pid != 0 {
            return (process_state(record.pid, record.start_ticks) == ProcessState::Alive)
                .then_some((record.pid, record.start_ticks));
        }
        let marker = self.vm_dir(&record.id).join("user-data");
        find_by_cmdline(&marker.to_string_lossy())
            .into_iter()
            .next()
    }

    fn to_vm(&self, record: Record) -> Vm {
        let state = if self.process(&record).is_some() {
            VmState::Running
        } else {
            VmState::Failed
        };
        Vm {
            provider_id: format!("local:///{}", record.id),
            id: record.id,
            token: record.token,
            state,
            address: Some(record.address),
            tags: record.tags,
            created_at: UNIX_EPOCH + Duration::from_millis(record.created_unix_ms),
        }
    }

    /// Writes the VM's record, then starts its process and records the PID.
    fn boot(&self, request: &CreateRequest, address: &str) -> Result<Record, CloudError> {
        let id = request.token.clone();
        let dir = self.vm_dir(&id);
        let mut record = Record {
            id: id.clone(),
            token: request.token.clone(),
            name: request.name.clone(),
            address: address.to_string(),
            tags: request.tags.clone(),
            instance_type: request.instance_type.clone(),
            volume_gib: request.volume_gib,
            size: request.size,
            pid: 0,
            start_ticks: 0,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
        };
        fs::create_dir_all(&dir).map_err(|e| io_error("create VM folder", &dir, e))?;
        fs::write(dir.join("user-data"), &request.user_data)
            .map_err(|e| io_error("write user-data", &dir.join("user-data"), e))?;
        self.write_record(&record)?;
        self.start_process(&mut record)?;
        Ok(record)
    }

    fn write_record(&self, record: &Record) -> Result<(), CloudError> {
        write_atomically(
            &self.vm_dir(&record.id).join("vm.json"),
            &serde_json::to_vec_pretty(record).expect("a record serialises"),
        )
    }

    /// Starts the agent of a recorded VM and records its PID.
    fn start_process(&self, record: &mut Record) -> Result<(), CloudError> {
        let id = record.id.clone();
        let address = record.address.clone();
        let dir = self.vm_dir(&id);
        let work = dir.join("work");
        fs::create_dir_all(&work).map_err(|e| io_error("create VM folder", &work, e))?;
        let user_data = dir.join("user-data");
        let log_path = dir.join("agent.log");
        // Appended to: a VM booted again keeps the log of its earlier boots.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_error("create agent log", &log_path, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_error("open agent log", &log_path, e))?;

        let mut command = match record.size {
            None => Command::new(&self.config.agent_binary),
            // A sized VM's first process joins its cgroup before it becomes the agent, so
            // nothing of the VM ever runs unlimited.
            Some(size) => {
                let procs = cgroup::create(&id, size).map_err(CloudError::Unsupported)?;
                let mut command = Command::new("/bin/sh");
                command
                    .args(["-c", cgroup::JOIN_AND_EXEC, "sh"])
                    .args(procs)
                    .arg(&self.config.agent_binary);
                command
            }
        };
        // A VM's environment is its own: no variable of the controller's (its KUBECONFIG, its
        // cloud keys) is inherited by a tenant's scripts.
        command.env_clear().envs(vm_environment(&work));
        if let Some(gib) = record.volume_gib {
            let volume = work.join("volume");
            fs::create_dir_all(&volume)
                .map_err(|e| io_error("create the VM's volume", &volume, e))?;
            let size = dir.join("volume-gib");
            fs::write(&size, gib.to_string()).map_err(|e| io_error("write", &size, e))?;
            command.env(ENV_VOLUME_DIR, &volume);
        }
        let mut child = command
            .arg("--user-data")
            .arg(&user_data)
            .arg("--work-dir")
            .arg(&work)
            .env(ENV_VM_ADDRESS, &address)
            .env(ENV_VM_ID, &id)
            .env(ENV_PROCESS_GROUPS, dir.join(PROCESS_GROUPS_FILE))
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: the VM outlives the controller and stops as one unit.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                CloudError::Transient(format!("start {}: {e}", self.config.agent_binary.display()))
            })?;
        let pid = child.id() as i32;
        // Reap the agent when it exits while this controller lives; after a restart init does.
        std::thread::spawn(move || child.wait());
        record.pid = pid;
        record.start_ticks = start_ticks(pid).unwrap_or(0);
        self.write_record(record)
    }

    /// Resets VM `id` as a power loss and power-on would: every process of it is killed at
    /// once (nothing gets to finish or write its state), then its agent boots again on the same
    /// disk, as the VM's init would start it. Tests use it for the faults of a reset.
    pub async fn power_cycle(&self, id: &str) -> Result<(), CloudError> {
        self.power_cycle_together(&[id]).await
    }

    /// Resets VMs `ids` as one power loss would (a whole rack): every process of each is killed
    /// before any of them boots again.
    pub async fn power_cycle_together(&self, ids: &[&str]) -> Result<(), CloudError> {
        let mut records = Vec::new();
        for id in ids {
            records.push(self.kill_every_process(id).await?);
        }
        for record in &mut records {
            self.start_process(record)?;
        }
        Ok(())
    }

    /// Powers VM `id` off as a power loss would: every process of it is killed at once, and
    /// it stays off (the cloud reports it failed). Tests use it for the faults of a dead VM.
    pub async fn power_off(&self, id: &str) -> Result<(), CloudError> {
        self.kill_every_process(id).await.map(|_| ())
    }

    async fn kill_every_process(&self, id: &str) -> Result<Record, CloudError> {
        let record = self
            .read_record(id)?
            .ok_or_else(|| CloudError::NotFound(format!("no local VM {id}")))?;
        if let Some((pid, ticks)) = self.process(&record) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            while process_state(pid, ticks) != ProcessState::Gone {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        kill_recorded_groups(&self.vm_dir(id).join(PROCESS_GROUPS_FILE));
        cgroup::kill_members(id);
        Ok(record)
    }

    /// Restarts VM `id`'s agent as the VM's init would after the agent crashed: the agent alone
    /// is killed (SIGKILL), the daemons it started keep running, and a new agent starts on the
    /// same disk. The old daemons stay in the old agent's process group, which terminating the
    /// VM no longer reaches: the new agent must take them over or stop them.
    pub async fn restart_agent(&self, id: &str) -> Result<(), CloudError> {
        let mut record = self
            .read_record(id)?
            .ok_or_else(|| CloudError::NotFound(format!("no local VM {id}")))?;
        if let Some((pid, ticks)) = self.process(&record) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            while process_state(pid, ticks) != ProcessState::Gone {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.start_process(&mut record)
    }

    async fn stop(&self, record: &Record) {
        if let Some((pid, ticks)) = self.process(record) {
            let group = Pid::from_raw(pid);
            // No grace is a power-off: nothing in the VM gets to finish.
            if !self.config.stop_grace.is_zero() {
                let _ = killpg(group, Signal::SIGTERM);
            }
            let deadline = tokio::time::Instant::now() + self.config.stop_grace;
            while tokio::time::Instant::now() < deadline {
                if process_state(pid, ticks) == ProcessState::Gone {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Whatever is left of the group (scripts the agent started) goes too.
            let _ = killpg(group, Signal::SIGKILL);
        }
        // And the daemons that left the group, even when the agent itself is gone already.
        kill_recorded_groups(&self.vm_dir(&record.id).join(PROCESS_GROUPS_FILE));
        // A sized VM's cgroup holds whatever is left, however it got away.
        cgroup::kill_members(&record.id);
    }
}

/// The variables a local VM's agent starts with, as a VM's init would give them: a search
/// path, the locale, and a home in the VM's own folder. What the agent needs of its VM comes
/// from its bootstrap and the `CONPAAS_VM_*` variables set beside these. `RUST_LOG` and the
/// daemons' install locations (`SPARK_HOME`, `JAVA_HOME`) are the host's facts, not secrets.
fn vm_environment(home: &Path) -> Vec<(String, std::ffi::OsString)> {
    const PASSED: [&str; 6] = [
        "LANG",
        "LC_ALL",
        "TZ",
        "RUST_LOG",
        "SPARK_HOME",
        "JAVA_HOME",
    ];
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut vars = vec![
        ("PATH".to_string(), path),
        ("HOME".to_string(), home.as_os_str().to_owned()),
    ];
    for name in PASSED {
        if let Some(value) = std::env::var_os(name) {
            vars.push((name.to_string(), value));
        }
    }
    vars
}

/// Kills the daemons the VM's agent recorded in `file` (`<pid> <start ticks>` a line), each with
/// the process group it leads: a daemon that left the agent's group for a session of its own
/// (php-fpm calls setsid) is part of the VM all the same, and so is one still in the group of an
/// agent that crashed and was started again (terminating the VM kills the new agent's group
/// only). A pid that now belongs to a process started at another time is left alone.
pub fn kill_recorded_groups(file: &Path) {
    let Ok(text) = fs::read_to_string(file) else {
        return;
    };
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(Ok(pid)), Some(Ok(ticks))) = (
            fields.next().map(str::parse::<i32>),
            fields.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if pid > 1 && process_state(pid, ticks) == ProcessState::Alive {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[async_trait]
impl ComputeDriver for LocalCloud {
    fn provider(&self) -> &'static str {
        "local"
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        check_token(&request.token)?;
        let _guard = self.create_lock.lock().await;
        if let Some(mut record) = self.read_record(&request.token)? {
            // A boot a crash interrupted before the process started is completed, not repeated.
            if record.pid == 0 && self.process(&record).is_none() {
                self.start_process(&mut record)?;
            }
            return Ok(self.to_vm(record));
        }
        let records = self.records()?;
        let address = self.free_address(&records)?;
        let record = self.boot(request, &address)?;
        Ok(self.to_vm(record))
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        Ok(self.read_record(id)?.map(|r| self.to_vm(r)))
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| tags_match(&r.tags, tags))
            .map(|r| self.to_vm(r))
            .collect())
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        let _guard = self.create_lock.lock().await;
        let mut record = self
            .read_record(id)?
            .ok_or_else(|| CloudError::NotFound(format!("VM {id}")))?;
        record.tags.extend(tags.clone());
        self.write_record(&record)
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        let Some(record) = self.read_record(id)? else {
            // A delete retried after the record went still releases what its cgroup holds.
            let id = id.to_string();
            let _ = tokio::task::spawn_blocking(move || release_cgroup(&id)).await;
            return Ok(());
        };
        self.stop(&record).await;
        let released = id.to_string();
        let _ = tokio::task::spawn_blocking(move || cgroup::remove(&released)).await;
        let dir = self.vm_dir(id);
        unmount_under(&dir);
        let logs = self.config.state_dir.join("logs");
        if fs::create_dir_all(&logs).is_ok() {
            let _ = fs::rename(dir.join("agent.log"), logs.join(format!("{id}.log")));
        }
        // The record goes last: until it is gone, a retry of this delete finds the VM again.
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove VM folder", &dir, e)),
        }
    }
}

/// Kills what is left of VM `id` in its cgroup and removes the cgroup: for a harness that
/// stops its VMs without the cloud's delete.
pub fn release_cgroup(id: &str) {
    cgroup::kill_members(id);
    cgroup::remove(id);
}

/// Detaches what a VM's daemons mounted inside its folder (a filesystem client killed with the
/// VM leaves its FUSE mount behind, which no one could remove the folder through).
pub fn unmount_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        let point = PathBuf::from(point.replace("\\040", " "));
        if point.starts_with(&dir) {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ProcessState {
    Alive,
    Gone,
}

/// Reads `/proc/<pid>/stat`: (state letter, start time in clock ticks).
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Processes whose command line contains `needle`, with their start times.
pub fn find_by_cmdline(needle: &str) -> Vec<(i32, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .filter_map(|pid| {
            let (state, start) = proc_stat(pid)?;
            (state != 'Z' && state != 'X').then_some((pid, start))
        })
        .collect()
}

fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

fn process_state(pid: i32, expected_start: u64) -> ProcessState {
    match proc_stat(pid) {
        Some((state, start)) if start == expected_start && state != 'Z' && state != 'X' => {
            ProcessState::Alive
        }
        _ => ProcessState::Gone,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CloudError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| io_error("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("rename", path, e))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CloudError {
    CloudError::Transient(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A stand-in agent: a shell script that sleeps until it is stopped, and records its address.
    // No `exec`: like the real agent, it keeps its command line (with --user-data) while it runs.
    fn fake_agent(dir: &Path) -> PathBuf {
        let path = dir.join("fake-agent");
        fs::write(
            &path,
            "#!/bin/sh\necho \"$CONPAAS_VM_ADDRESS\" > address\necho \"$CONPAAS_VOLUME_DIR\" > volume-dir\nenv > environment\nsleep 600\n",
        )
        .unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    fn cloud(dir: &Path) -> LocalCloud {
        LocalCloud::new(LocalConfig {
            state_dir: dir.join("state"),
            agent_binary: fake_agent(dir),
            subnet: 201,
            stop_grace: Duration::from_secs(2),
        })
    }

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        crate::conformance::run(&cloud(dir.path())).await;
    }

    #[tokio::test]
    async fn a_vm_starts_with_its_own_environment_and_within_its_instance_types_share() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path());
        let size = VmSize {
            millicpus: 250,
            memory_mib: 96,
        };
        let vm = cloud
            .create(&CreateRequest {
                size: Some(size),
                ..crate::conformance::request("sized-1")
            })
            .await
            .unwrap();
        let work = cloud.vm_dir(&vm.id).join("work");
        let environment = work.join("environment");
        for _ in 0..100 {
            if fs::read_to_string(&environment).is_ok_and(|e| e.contains("HOME=")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let environment = fs::read_to_string(&environment).unwrap();
        // The test runs with cargo's variables; the VM gets none of its starter's.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(!environment.contains("CARGO"), "{environment}");
        assert!(
            environment.contains(&format!("HOME={}", work.display())),
            "{environment}"
        );
        assert!(environment.contains("CONPAAS_VM_ADDRESS="), "{environment}");
        // The agent and what it starts are in the VM's cgroup, with the type's quota.
        let record = cloud.read_record(&vm.id).unwrap().unwrap();
        let members = cgroup::members(&vm.id);
        assert!(members.contains(&record.pid), "{members:?}");
        assert!(members.len() >= 2, "the agent's children too: {members:?}");
        let cpu = Path::new("/sys/fs/cgroup/cpu/conpaas-local").join(&vm.id);
        let memory = Path::new("/sys/fs/cgroup/memory/conpaas-local").join(&vm.id);
        let read = |p: PathBuf| fs::read_to_string(p).unwrap().trim().to_string();
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(
            read(memory.join("memory.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
        // A new boot keeps the share.
        cloud.power_cycle(&vm.id).await.unwrap();
        let record = cloud.read_record(&vm.id).unwrap().unwrap();
        for _ in 0..100 {
            if cgroup::members(&vm.id).contains(&record.pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cgroup::members(&vm.id).contains(&record.pid));
        cloud.delete(&vm.id).await.unwrap();
        assert!(
            !cpu.exists() && !memory.exists(),
            "the cgroup goes with the VM"
        );
        assert_eq!(
            process_state(record.pid, record.start_ticks),
            ProcessState::Gone
        );
    }

    #[tokio::test]
    async fn vms_are_processes_with_their_own_address_and_outlive_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let vm = cloud(dir.path())
            .create(&crate::conformance::request("proc-1"))
            .await
            .unwrap();
        let address = vm.address.clone().unwrap();
        assert!(address.starts_with("127.201."), "{address}");

        // A new driver on the same state folder (a restarted controller) finds the running VM.
        let restarted = cloud(dir.path());
        let found = restarted
            .get(&vm.id)
            .await
            .unwrap()
            .expect("the VM survives the driver");
        assert_eq!(found.state, VmState::Running);
        let second = restarted
            .create(&crate::conformance::request("proc-2"))
            .await
            .unwrap();
        assert_ne!(second.address, vm.address, "each VM gets its own address");

        let record = restarted.read_record(&vm.id).unwrap().unwrap();
        restarted.delete(&vm.id).await.unwrap();
        restarted.delete(&second.id).await.unwrap();
        assert_eq!(
            process_state(record.pid, record.start_ticks),
            ProcessState::Gone,
            "the process is gone"
        );
        assert!(
            dir.path()
                .join("state/logs")
                .join(format!("{}.log", vm.id))
                .exists(),
            "the log is kept"
        );
    }

    #[tokio::test]
    async fn a_vm_with_a_volume_gets_a_folder_that_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path());
        let request = CreateRequest {
            volume_gib: Some(3),
            ..crate::conformance::request("vol-1")
        };
        let vm = cloud.create(&request).await.unwrap();
        let vm_dir = cloud.vm_dir(&vm.id);
        let volume = vm_dir.join("work/volume");
        assert!(volume.is_dir());
        assert_eq!(fs::read_to_string(vm_dir.join("volume-gib")).unwrap(), "3");
        let told = vm_dir.join("work/volume-dir");
        for _ in 0..100 {
            if told.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            fs::read_to_string(&told).unwrap().trim(),
            volume.display().to_string(),
            "the agent is told where its volume is"
        );
        cloud.delete(&vm.id).await.unwrap();
        assert!(!vm_dir.exists(), "the volume goes with the VM");
    }

    #[tokio::test]
    async fn a_vm_whose_process_died_is_reported_failed() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path());
        let vm = cloud
            .create(&crate::conformance::request("dies-1"))
            .await
            .unwrap();
        let record = cloud.read_record(&vm.id).unwrap().unwrap();
        killpg(Pid::from_raw(record.pid), Signal::SIGKILL).unwrap();
        let mut state = VmState::Running;
        for _ in 0..100 {
            state = cloud.get(&vm.id).await.unwrap().unwrap().state;
            if state == VmState::Failed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state, VmState::Failed);
        cloud.delete(&vm.id).await.unwrap();
    }

    fn crashed_boot(cloud: &LocalCloud, token: &str) -> Record {
        let request = crate::conformance::request(token);
        let record = Record {
            id: token.into(),
            token: token.into(),
            name: request.name.clone(),
            address: "127.201.9.9".into(),
            tags: request.tags.clone(),
            instance_type: None,
            volume_gib: None,
            size: None,
            pid: 0,
            start_ticks: 0,
            created_unix_ms: 0,
        };
        fs::create_dir_all(cloud.vm_dir(token)).unwrap();
        fs::write(cloud.vm_dir(token).join("user-data"), "{}").unwrap();
        cloud.write_record(&record).unwrap();
        record
    }

    #[tokio::test]
    async fn a_boot_cut_off_before_the_process_started_is_completed_by_the_next_create() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path());
        crashed_boot(&cloud, "crash-1");
        assert_eq!(
            cloud.get("crash-1").await.unwrap().unwrap().state,
            VmState::Failed
        );
        let vm = cloud
            .create(&crate::conformance::request("crash-1"))
            .await
            .unwrap();
        assert_eq!(vm.state, VmState::Running);
        assert_eq!(
            cloud.list(&Tags::new()).await.unwrap().len(),
            1,
            "still one VM for the token"
        );
        cloud.delete("crash-1").await.unwrap();
    }

    #[test]
    fn a_recorded_daemon_left_in_a_crashed_agents_group_is_killed() {
        // A daemon that leads no group of its own, as MariaDB in the group of an agent that
        // was killed and started again: only its pid reaches it.
        let mut daemon = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = daemon.id() as i32;
        let (_, ticks) = proc_stat(pid).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PROCESS_GROUPS_FILE);
        fs::write(&file, format!("{pid} {ticks}\n")).unwrap();
        kill_recorded_groups(&file);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            daemon.wait().unwrap().signal(),
            Some(Signal::SIGKILL as i32),
            "killed with the VM"
        );
    }

    #[tokio::test]
    async fn a_process_started_but_not_recorded_is_found_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = cloud(dir.path());
        let mut record = crashed_boot(&cloud, "crash-2");
        // Start the process, then forget its PID, as a crash right after the spawn would.
        cloud.start_process(&mut record).unwrap();
        let pid = record.pid;
        record.pid = 0;
        cloud.write_record(&record).unwrap();
        assert_eq!(
            cloud.get("crash-2").await.unwrap().unwrap().state,
            VmState::Running
        );
        cloud.delete("crash-2").await.unwrap();
        assert_eq!(
            process_state(pid, record.start_ticks),
            ProcessState::Gone,
            "no process outlives the delete"
        );
    }
}
