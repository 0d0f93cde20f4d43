//! mysql `glb`: haproxy in TCP mode on port 3306 of the node's address, balancing clients over
//! the Synced MariaDB nodes of its member list (each also health-checked by haproxy), rewritten
//! and reloaded on every membership change. haproxy runs in master-worker mode: a reload
//! (SIGUSR2) starts new workers with the new configuration while the old ones finish their
//! connections. It reports the members it balances over (`routesTo`), which is what releases a
//! leaving mysql node: it leaves every glb before it shuts down. It is Ready once it listens and
//! has a node to balance over (so the endpoint never moves to a glb that refuses every client).

use std::path::{Path, PathBuf};
use std::time::Duration;

use conpaas_crds::v1alpha1::{AgentState, ServiceNodeSpec};
use nix::sys::signal::Signal;

use super::{Role, RoleEnv, RoleReport};
use crate::daemon::{self, Daemon};

const PORT: u16 = 3306;
/// How long haproxy gets to finish its connections when the node stops.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Glb {
    env: RoleEnv,
    dir: PathBuf,
    haproxy: Option<Daemon>,
    routes_to: Option<Vec<String>>,
    /// The code version (a mysql dump) the spec names: a glb serves no code, it runs any at once.
    spec_code: Option<String>,
    listening: bool,
    error: Option<String>,
    dead: Option<String>,
}

impl Glb {
    pub fn new(env: RoleEnv) -> Self {
        Self {
            dir: env.work_dir.join("glb"),
            env,
            haproxy: None,
            routes_to: None,
            spec_code: None,
            listening: false,
            error: None,
            dead: None,
        }
    }

    async fn converge(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let program = daemon::find(&["haproxy"], "haproxy")?;
        for dir in [self.dir.clone(), self.env.work_dir.join("logs")] {
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let servers: Vec<(String, String)> = spec
            .members
            .iter()
            .filter(|m| m.role == "mysql" && m.ready)
            .map(|m| (m.name.clone(), m.address.clone()))
            .collect();
        let conf = self.dir.join("haproxy.cfg");
        let text = haproxy_cfg(&self.dir, &self.env.address, &servers);
        let changed = std::fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str());
        if changed {
            // A configuration haproxy refuses never replaces the running one.
            let next = self.dir.join("haproxy.cfg.next");
            std::fs::write(&next, &text).map_err(|e| format!("write {}: {e}", next.display()))?;
            let args = ["-c", "-f"].map(String::from);
            let mut args = args.to_vec();
            args.push(next.display().to_string());
            daemon::run_checked(&program, &args, "haproxy refused its configuration")
                .await
                .map_err(|e| {
                    // Its [ALERT] lines say why; the [NOTICE] lines only name the version.
                    let alerts: Vec<&str> = e.lines().filter(|l| l.contains("[ALERT]")).collect();
                    if alerts.is_empty() {
                        e.clone()
                    } else {
                        format!("haproxy refused its configuration: {}", alerts.join(" | "))
                    }
                })?;
            std::fs::rename(&next, &conf).map_err(|e| format!("write {}: {e}", conf.display()))?;
        }
        let haproxy = self.haproxy.get_or_insert_with(|| {
            Daemon::new(
                "haproxy",
                program,
                vec![
                    "-W".into(),
                    "-db".into(),
                    "-f".into(),
                    conf.display().to_string(),
                ],
                self.env.work_dir.join("logs/haproxy.log"),
                Signal::SIGUSR1,
            )
        });
        if changed && haproxy.running() {
            // The master starts a worker with the new configuration and soft-stops the old
            // one, which keeps its connections but stops accepting. Only then is the new member
            // list reported: a node dropped from it is shut down soon after the report.
            let log = self.env.work_dir.join("logs/haproxy.log");
            let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
            haproxy.signal(Signal::SIGUSR2);
            if !old_worker_stopped(&log, offset, Duration::from_secs(5)).await {
                tracing::warn!("haproxy's old worker still accepts connections 5 s after a reload");
            }
        }
        haproxy.ensure_started()?;
        self.routes_to = Some(servers.into_iter().map(|(name, _)| name).collect());
        Ok(())
    }
}

#[async_trait::async_trait]
impl Role for Glb {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.spec_code = spec.code.as_ref().map(|c| c.version.clone());
        self.error = self.converge(spec).await.err();
        self.poll().await;
    }

    async fn poll(&mut self) {
        if let Some(haproxy) = self.haproxy.as_mut()
            && !haproxy.running()
        {
            self.dead = Some(haproxy.exited_message());
            self.listening = false;
            let _ = haproxy.ensure_started();
        }
        if !self.listening && self.haproxy.is_some() {
            self.listening = daemon::listening(&format!("{}:{PORT}", self.env.address)).await;
            if self.listening {
                self.dead = None;
            }
        }
    }

    fn report(&self) -> RoleReport {
        let (state, message) = match self.error.as_ref().or(self.dead.as_ref()) {
            Some(e) => (AgentState::Failed, e.clone()),
            None if !self.listening => (AgentState::Starting, "starting haproxy".to_string()),
            // A glb with nobody to send clients to must not become the endpoint.
            None if self.routes_to.as_ref().is_none_or(Vec::is_empty) => (
                AgentState::Starting,
                "waiting for a Synced mysql node to balance over".to_string(),
            ),
            None => (
                AgentState::Ready,
                format!(
                    "glb balancing {} mysql nodes on {}:{PORT}",
                    self.routes_to.as_ref().map_or(0, Vec::len),
                    self.env.address
                ),
            ),
        };
        RoleReport {
            state: Some(state),
            message: Some(message),
            routes_to: self.routes_to.clone().filter(|_| self.listening),
            code_version: self.spec_code.clone(),
            ..Default::default()
        }
    }

    async fn shutdown(&mut self) {
        if let Some(haproxy) = self.haproxy.as_mut() {
            haproxy.stop(STOP_GRACE).await;
        }
    }
}

/// Waits until haproxy's log, past `offset`, says a worker stopped its frontend (what an old
/// worker logs when it stops accepting after a reload); false after `limit`.
async fn old_worker_stopped(log: &Path, offset: u64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let new = text.get(offset as usize..).unwrap_or_default();
        if String::from_utf8_lossy(new).contains("Proxy mysql stopped") {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// haproxy's configuration: TCP on the node's address, least connections over `servers`
/// (name, address), each checked every second; no server: connections are refused at once.
pub fn haproxy_cfg(dir: &Path, address: &str, servers: &[(String, String)]) -> String {
    let lines: String = servers
        .iter()
        .map(|(name, server)| {
            format!("    server {name} {server}:{PORT} check inter 1s fall 2 rise 2\n")
        })
        .collect();
    format!(
        "# Written by the ConPaaS agent.
global
    maxconn 4096
    pidfile {dir}/haproxy.pid
    log stderr format short local0 notice

defaults
    mode tcp
    log global
    option tcplog
    option dontlog-normal
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    option redispatch
    retries 2

frontend mysql
    bind {address}:{PORT}
    default_backend galera

backend galera
    balance leastconn
{lines}",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glb_balances_over_the_servers_it_is_given_on_its_own_address() {
        let cfg = haproxy_cfg(
            Path::new("/n/glb"),
            "10.0.0.5",
            &[
                ("db-mysql-0".into(), "10.0.0.1".into()),
                ("db-mysql-1".into(), "10.0.0.2".into()),
            ],
        );
        assert!(cfg.contains("bind 10.0.0.5:3306"), "{cfg}");
        assert!(cfg.contains("server db-mysql-0 10.0.0.1:3306 check"));
        assert!(cfg.contains("server db-mysql-1 10.0.0.2:3306 check"));
        assert!(cfg.contains("mode tcp"));
    }
}
