//! generic (ConPaaS 2.0): the user's archive carries lifecycle scripts, run with `MY_IP`,
//! `MY_ROLE`, `MASTER_IP`, `MEMBERS` (space-separated addresses) and `AGENTS_FILE` (the member
//! list as JSON, as ConPaaS' agents.json):
//! - `init.sh` when a code version is activated, then `run.sh` once `init.sh` succeeded;
//! - `notify.sh` whenever the member list changes (after `init.sh`);
//! - `interrupt.sh` (if `run.sh` still runs) and `cleanup.sh` when the node stops.
//!
//! Each script's state is reported as ConPaaS did: `NEVER STARTED`, `RUNNING`,
//! `STOPPED (return code N)`. Output goes to `<work>/logs/<script>.log`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use conpaas_crds::v1alpha1::{
    AgentState, Member, NodeCode, NodeLink, ScriptStatus, ServiceNodeSpec,
};
use tokio::process::{Child, Command};

use super::{Role, RoleEnv, RoleReport};
use crate::code;
use crate::links::{LinkCache, LinkEnvironment};
use crate::volumes::Mounts;

const SCRIPTS: [&str; 5] = [
    "init.sh",
    "run.sh",
    "notify.sh",
    "interrupt.sh",
    "cleanup.sh",
];
/// How long scripts get to end when the node stops, unless `spec.generic.stopGraceSeconds` says.
const DEFAULT_STOP_WAIT: Duration = Duration::from_secs(5);

enum ScriptState {
    NeverStarted,
    Running(Child),
    Stopped(i32),
}

struct Script {
    state: ScriptState,
    runs: i32,
}

pub struct Generic {
    env: RoleEnv,
    role: String,
    code_dir: Option<PathBuf>,
    installed: Option<NodeCode>,
    members: Vec<Member>,
    scripts: BTreeMap<&'static str, Script>,
    notify_pending: bool,
    // A new code version waits here until the master's address is known, so MASTER_IP is set.
    init_pending: bool,
    error: Option<String>,
    /// The code version that did not install, and the error it left.
    failed_install: Option<(String, String)>,
    stop_wait: Duration,
    /// Linked filesystem volumes; scripts start once they are mounted.
    mounts: Mounts,
    links: Vec<NodeLink>,
    /// What the links give the scripts ([`crate::links`]).
    link_env: LinkCache,
}

impl Generic {
    pub fn new(env: RoleEnv) -> Self {
        let scripts = SCRIPTS
            .iter()
            .map(|s| {
                (
                    *s,
                    Script {
                        state: ScriptState::NeverStarted,
                        runs: 0,
                    },
                )
            })
            .collect();
        Self {
            mounts: Mounts::new(env.work_dir.clone()),
            env,
            role: String::new(),
            code_dir: None,
            installed: None,
            members: Vec::new(),
            scripts,
            notify_pending: false,
            init_pending: false,
            error: None,
            failed_install: None,
            stop_wait: DEFAULT_STOP_WAIT,
            links: Vec::new(),
            link_env: LinkCache::default(),
        }
    }
}

#[async_trait::async_trait]
impl Role for Generic {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.role = spec.role.clone();
        self.stop_wait = spec
            .generic
            .as_ref()
            .and_then(|g| g.stop_grace_seconds)
            .map_or(DEFAULT_STOP_WAIT, |s| Duration::from_secs(s.max(1) as u64));
        self.links = spec.links.clone();
        if let Err(e) = self.mounts.apply(&spec.links).await {
            self.error = Some(e);
        }
        if spec.members != self.members {
            self.members = spec.members.clone();
            if let Err(e) = self.write_members() {
                self.error = Some(e);
            }
            self.notify_pending = true;
        }
        if spec.code != self.installed
            && let Some(code) = &spec.code
        {
            match code::install(
                &self.env.client,
                &self.env.namespace,
                &spec.service,
                code,
                &self.env.work_dir,
            )
            .await
            {
                Ok(dir) => {
                    tracing::info!(version = %code.version, "code version installed");
                    // The new version runs its own run.sh once its init.sh succeeded.
                    self.stop_script("run.sh").await;
                    if let Some(run) = self.scripts.get_mut("run.sh") {
                        run.state = ScriptState::NeverStarted;
                    }
                    self.code_dir = Some(dir);
                    self.installed = Some(code.clone());
                    self.error = None;
                    self.init_pending = true;
                }
                // The version that ran keeps running; the message names the one that failed.
                Err(e) => {
                    let message = format!("code version {}: {e:#}", code.version);
                    self.failed_install = Some((code.version.clone(), message.clone()));
                    self.error = Some(message);
                }
            }
        }
        if let Some(dir) = &self.code_dir
            && let Err(e) = self.mounts.link_into(dir)
        {
            self.error = Some(e);
        }
        self.poll().await;
    }

    async fn poll(&mut self) {
        if let Err(e) = self.mounts.apply(&self.links.clone()).await {
            self.error = Some(e);
        }
        let _ = self
            .link_env
            .get(
                &self.env.client,
                &self.env.namespace,
                &self.links,
                &self.mounts,
            )
            .await;
        if self.init_pending
            && self.master_ip().is_some()
            && self.mounts.pending(&self.links).is_none()
            && matches!(self.link_env.last(), Some(Ok(LinkEnvironment::Ready(_))))
        {
            self.init_pending = false;
            self.start("init.sh");
        }
        for (name, script) in self.scripts.iter_mut() {
            if let ScriptState::Running(child) = &mut script.state
                && let Ok(Some(exit)) = child.try_wait()
            {
                let code = exit.code().unwrap_or(-1);
                tracing::info!(script = name, code, "script stopped");
                script.state = ScriptState::Stopped(code);
                if *name == "init.sh" && code == 0 {
                    self.notify_pending = true;
                }
            }
        }
        if self.init_succeeded() {
            if matches!(self.scripts["run.sh"].state, ScriptState::NeverStarted) {
                self.start("run.sh");
            }
            if self.notify_pending
                && !matches!(self.scripts["notify.sh"].state, ScriptState::Running(_))
            {
                self.notify_pending = false;
                self.start("notify.sh");
            }
        }
    }

    fn report(&self) -> RoleReport {
        let scripts = self
            .scripts
            .iter()
            .map(|(name, s)| ScriptStatus {
                name: name.to_string(),
                state: match &s.state {
                    ScriptState::NeverStarted => "NEVER STARTED".into(),
                    ScriptState::Running(_) => "RUNNING".into(),
                    ScriptState::Stopped(code) => format!("STOPPED (return code {code})"),
                },
                runs: s.runs,
            })
            .collect();
        let (state, message) = if let Some(e) = &self.error {
            (AgentState::Failed, e.clone())
        } else if self.code_dir.is_none() {
            (AgentState::Ready, "no code version active".into())
        } else if let Some(waiting) = self.mounts.pending(&self.links) {
            (AgentState::Starting, waiting)
        } else if let Some(Ok(LinkEnvironment::Waiting(waiting)) | Err(waiting)) =
            self.link_env.last()
        {
            (AgentState::Starting, waiting.clone())
        } else if self.link_env.last().is_none() {
            (
                AgentState::Starting,
                "reading the links' credentials".into(),
            )
        } else if self.init_pending {
            (
                AgentState::Starting,
                "waiting for the master's address".into(),
            )
        } else {
            match &self.scripts["init.sh"].state {
                ScriptState::Running(_) => (AgentState::Starting, "init.sh is running".into()),
                ScriptState::Stopped(0) | ScriptState::NeverStarted => {
                    (AgentState::Ready, format!("role {} up", self.role))
                }
                ScriptState::Stopped(code) => (
                    AgentState::Failed,
                    format!(
                        "init.sh of code version {} exited with {code}",
                        self.installed.as_ref().map_or("", |c| c.version.as_str())
                    ),
                ),
            }
        };
        RoleReport {
            state: Some(state),
            message: Some(message),
            code_version: self.installed.as_ref().map(|c| c.version.clone()),
            failed_code_version: self
                .failed_install
                .as_ref()
                .filter(|(_, message)| self.error.as_ref() == Some(message))
                .map(|(version, _)| version.clone()),
            scripts,
            ..Default::default()
        }
    }

    async fn shutdown(&mut self) {
        if matches!(self.scripts["run.sh"].state, ScriptState::Running(_)) {
            self.start("interrupt.sh");
            self.wait_for("interrupt.sh").await;
            self.stop_script("run.sh").await;
        }
        if self.code_dir.is_some() {
            self.start("cleanup.sh");
            self.wait_for("cleanup.sh").await;
        }
        self.mounts.shutdown().await;
    }
}

impl Generic {
    /// The master's address: the own one on the master, else from the member list.
    fn master_ip(&self) -> Option<String> {
        if self.role == "master" {
            return Some(self.env.address.clone());
        }
        self.members
            .iter()
            .find(|m| m.role == "master")
            .map(|m| m.address.clone())
    }

    fn init_succeeded(&self) -> bool {
        let Some(dir) = &self.code_dir else {
            return false;
        };
        match self.scripts["init.sh"].state {
            ScriptState::Stopped(0) => true,
            ScriptState::NeverStarted => !dir.join("init.sh").exists(),
            _ => false,
        }
    }

    fn start(&mut self, name: &'static str) {
        let Some(dir) = &self.code_dir else { return };
        let path = dir.join(name);
        if !path.exists() {
            return;
        }
        let logs = self.env.work_dir.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.log")));
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let master = self.master_ip().unwrap_or_default();
        let members: Vec<&str> = self.members.iter().map(|m| m.address.as_str()).collect();
        let spawned = Command::new("sh")
            .arg(&path)
            .current_dir(dir)
            .env("MY_IP", &self.env.address)
            .env("MY_ROLE", &self.role)
            .env("MASTER_IP", master)
            .env("MEMBERS", members.join(" "))
            .env("AGENTS_FILE", self.env.work_dir.join("agents.json"))
            .envs(match self.link_env.last() {
                Some(Ok(LinkEnvironment::Ready(env))) => env.clone(),
                _ => BTreeMap::new(),
            })
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        let script = self.scripts.get_mut(name).expect("known script");
        match spawned {
            Ok(child) => {
                tracing::info!(script = name, "script started");
                script.state = ScriptState::Running(child);
                script.runs += 1;
            }
            Err(e) => {
                self.error = Some(format!("start {name}: {e}"));
            }
        }
    }

    async fn wait_for(&mut self, name: &'static str) {
        let script = self.scripts.get_mut(name).expect("known script");
        if let ScriptState::Running(child) = &mut script.state
            && let Ok(Ok(exit)) = tokio::time::timeout(self.stop_wait, child.wait()).await
        {
            script.state = ScriptState::Stopped(exit.code().unwrap_or(-1));
        }
    }

    async fn stop_script(&mut self, name: &'static str) {
        let script = self.scripts.get_mut(name).expect("known script");
        if let ScriptState::Running(child) = &mut script.state {
            let _ = child.kill().await;
            let code = child.wait().await.ok().and_then(|e| e.code()).unwrap_or(-1);
            script.state = ScriptState::Stopped(code);
        }
    }

    fn write_members(&self) -> Result<(), String> {
        let path = self.env.work_dir.join("agents.json");
        let body = serde_json::to_vec_pretty(&self.members).expect("members serialise");
        std::fs::write(&path, body).map_err(|e| format!("write {}: {e}", path.display()))
    }
}
