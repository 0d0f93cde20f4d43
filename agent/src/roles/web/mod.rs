//! php and java: ConPaaS' web hosting on Debian's daemons, one role for both stacks.
//! - `proxy`: nginx on port 80 balancing over the ready backends and web nodes of its member
//!   list, rewritten and gracefully reloaded on every change; it reports the members it routes to
//!   (`routesTo`), which is what releases a leaving node. A php proxy sends static files to the
//!   web nodes and the rest to the backends, and the first one runs the redis that keeps the
//!   sessions; a java proxy reads the active WAR's servlet paths and sends those (and JSPs) to
//!   the backends, the rest to the web nodes.
//! - `web`: nginx serving the active code version's static files on port 8080.
//! - `backend`: php: nginx on port 8080 in front of a local php-fpm running the active code
//!   version, with the Service's settings, sessions in the first proxy's redis. java: Tomcat 10
//!   on port 8080 ([`tomcat`]).
//!
//! Code versions are unpacked by [`crate::code`] and switched by replacing the `www` symlink
//! atomically (Tomcat deploys the unpacked WAR itself). Configuration and logs live under the
//! node's work folder (`php/`, `java/`, `logs/`).

mod config;
mod install;
mod latency;
mod lifecycle;
mod serving;
mod tomcat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conpaas_crds::types::php;
use conpaas_crds::v1alpha1::{Member, NodeCode, ServiceNodeSpec, ServiceType};
use nix::sys::signal::Signal;

use super::{Role, RoleEnv, RoleReport, first_member};
use crate::daemon::{self, Daemon};
use crate::links::LinkCache;
use crate::volumes::Mounts;
use config::Dynamic;
use lifecycle::{Part, Seen};
use serving::{Serving, Verdict};
use tomcat::Tomcat;

/// How soon a failed or waiting convergence is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How often a php node reads the sessions' password again (a tenant may change it).
const SESSIONS_PASSWORD_EVERY: Duration = Duration::from_secs(10);
/// How long a java backend reports not Ready before Tomcat restarts for a new link environment:
/// the controller drops it from the proxies' member lists and they reload (about a second
/// here), and the requests it holds finish.
const LEAVE_BEFORE_RESTART: Duration = Duration::from_secs(5);
/// How long daemons get to finish their requests when the node stops.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a proxy keeps reporting the members its old nginx workers may still send requests
/// to after a reload: a request longer than this (a long poll, a big download) no longer holds
/// back the drain of a leaving node.
const RETIRING_LIMIT: Duration = Duration::from_secs(60);

/// nginx workers of a configuration replaced by a reload, finishing their requests, and the
/// members that configuration routed to.
struct Retiring {
    workers: Vec<nix::unistd::Pid>,
    routes_to: Vec<String>,
    since: std::time::Instant,
}

/// What the backends run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Php,
    Java,
}

pub struct WebHosting {
    stack: Stack,
    env: RoleEnv,
    role: String,
    dir: PathBuf,
    user: Option<&'static str>,
    /// Whether nginx serves the active code version (roles whose nginx serves code).
    serving: Serving,
    /// The links' environment, read again only when they change.
    links: LinkCache,
    nginx: Option<Daemon>,
    fpm: Option<Daemon>,
    redis: Option<Daemon>,
    tomcat: Option<Tomcat>,
    /// A java proxy: the servlet paths of the installed WAR.
    servlet_patterns: Vec<String>,
    installed: Option<NodeCode>,
    /// Why the role cannot run (a missing daemon, a refused configuration).
    error: Option<String>,
    /// A daemon that died, until the restarted one listens.
    dead: Option<String>,
    /// Why the active code version could not be installed (the previous one keeps serving).
    code_error: Option<String>,
    /// Why the active code version is not installed yet while the node may not read it yet.
    code_waiting: Option<String>,
    routes_to: Option<Vec<String>>,
    /// Old workers of earlier configurations: a member they route to is still in use.
    retiring: Vec<Retiring>,
    /// A proxy's measurements of the requests it served.
    latency: Option<latency::Latency>,
    listening: bool,
    /// The code version the spec names.
    spec_code: Option<String>,
    /// What the backend waits for (a linked service without an endpoint yet).
    waiting: Option<String>,
    spec: Option<ServiceNodeSpec>,
    last_converge: Option<std::time::Instant>,
    /// java backends: Tomcat restarts for a new link environment at this time; until then the
    /// node reports not Ready, so that the proxies stop sending it requests first.
    restart_at: Option<std::time::Instant>,
    /// Linked filesystem volumes, linked into every code version's folder.
    mounts: Mounts,
    /// php: the password of the sessions' redis, and when it was read.
    sessions_password: Option<(String, std::time::Instant)>,
}

impl WebHosting {
    pub fn new(env: RoleEnv, stack: Stack) -> Self {
        let dir = env.work_dir.join(match stack {
            Stack::Php => "php",
            Stack::Java => "java",
        });
        Self {
            mounts: Mounts::new(env.work_dir.clone()),
            sessions_password: None,
            stack,
            // The web workers run as www-data where they can.
            user: daemon::unprivileged_user("www-data", &env.work_dir),
            serving: Serving::default(),
            links: LinkCache::default(),
            env,
            role: String::new(),
            dir,
            nginx: None,
            fpm: None,
            redis: None,
            tomcat: None,
            servlet_patterns: Vec::new(),
            installed: None,
            error: None,
            dead: None,
            code_error: None,
            code_waiting: None,
            routes_to: None,
            retiring: Vec::new(),
            latency: None,
            listening: false,
            spec_code: None,
            waiting: None,
            spec: None,
            last_converge: None,
            restart_at: None,
        }
    }

    fn port(&self) -> u16 {
        if self.role == "proxy" {
            config::PROXY_PORT
        } else {
            config::NODE_PORT
        }
    }

    fn www(&self) -> PathBuf {
        self.env.work_dir.join("www")
    }

    /// Folders, and `www` pointing at an empty folder until a code version is installed.
    fn prepare(&self) -> Result<(), String> {
        for sub in [
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
        }
        let logs = self.env.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
        let empty = self.env.work_dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(|e| format!("create {}: {e}", empty.display()))?;
        if std::fs::symlink_metadata(self.www()).is_err() {
            switch_symlink(&self.www(), &empty)?;
        }
        if let Some(user) = self.user {
            // The workers write request bodies and caches here.
            let _ = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(self.dir.join("tmp"))
                .status();
        }
        Ok(())
    }

    /// The nginx configuration of the node's role, and for a proxy the members it routes to.
    fn nginx_config(&self, spec: &ServiceNodeSpec) -> (String, Option<Vec<String>>) {
        let address = self.env.address.as_str();
        let max_body = match self.stack {
            Stack::Php => setting(spec, "post_max_size"),
            // Tomcat decides what a request may carry.
            Stack::Java => "0".into(),
        };
        match self.role.as_str() {
            "proxy" => {
                let backends = ready_members(&spec.members, "backend");
                let webs = ready_members(&spec.members, "web");
                let routes = backends.iter().chain(&webs).map(|m| m.name.clone());
                let text = config::proxy_nginx(
                    &self.dir,
                    self.nginx_user(),
                    address,
                    &addresses(&backends),
                    &addresses(&webs),
                    &max_body,
                    &match self.stack {
                        Stack::Php => Dynamic::Php,
                        Stack::Java => Dynamic::Servlets(self.servlet_patterns.clone()),
                    },
                );
                (text, Some(routes.collect()))
            }
            "web" => {
                let hidden: &[&str] = match self.stack {
                    Stack::Php => &["\\.php$"],
                    Stack::Java => &["^/(WEB-INF|META-INF)(/|$)", "\\.jspx?$"],
                };
                let root = self.www();
                let text = config::web_nginx(&self.dir, self.nginx_user(), address, &root, hidden);
                (text, None)
            }
            _ => (
                config::backend_nginx(
                    &self.dir,
                    self.nginx_user(),
                    address,
                    &self.www(),
                    &self.dir.join("fpm.sock"),
                    &max_body,
                ),
                None,
            ),
        }
    }

    /// Writes the nginx configuration and starts nginx, or reloads it gracefully when the
    /// configuration changed. A new configuration is checked before it replaces the running one:
    /// a refused one never lands, so the next apply checks (and refuses) it again, and a proxy
    /// reports the members it routes to only once its configuration says so.
    async fn converge_nginx(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let program = daemon::find(&["nginx"], "nginx")?;
        let conf = self.dir.join("nginx.conf");
        let (text, routes) = self.nginx_config(spec);
        let changed = std::fs::read_to_string(&conf).ok().as_deref() != Some(text.as_str());
        if changed {
            let next = self.dir.join("nginx.conf.next");
            std::fs::write(&next, &text).map_err(|e| format!("write {}: {e}", next.display()))?;
            check_nginx(&program, &next).await?;
            std::fs::rename(&next, &conf).map_err(|e| format!("write {}: {e}", conf.display()))?;
        }
        let nginx = self.nginx.get_or_insert_with(|| {
            Daemon::new(
                "nginx",
                program,
                vec![
                    "-e".into(),
                    self.env
                        .work_dir
                        .join("logs/nginx-error.log")
                        .display()
                        .to_string(),
                    "-c".into(),
                    conf.display().to_string(),
                ],
                self.env.work_dir.join("logs/nginx.log"),
                Signal::SIGQUIT,
            )
        });
        if changed && let Some(master) = nginx.pid() {
            let old = daemon::children(master);
            nginx.signal(Signal::SIGHUP);
            // The reload has taken effect once no old worker accepts connections any more.
            if !daemon::wait_retired(&old, Duration::from_secs(5)).await {
                tracing::warn!("nginx's old workers still accept connections 5 s after a reload");
            }
            // Their requests in flight may still be with a member the new list dropped.
            self.retiring.push(Retiring {
                workers: old,
                routes_to: self.routes_to.clone().unwrap_or_default(),
                since: std::time::Instant::now(),
            });
        }
        nginx.ensure_started()?;
        self.routes_to = routes;
        Ok(())
    }

    /// The user nginx's workers run as: the unprivileged one; else, on roles that serve code,
    /// the agent's own (an nginx started as root with no `user` runs them as `nobody`, who may
    /// not reach the code). A proxy serves no code: its workers stay unprivileged.
    fn nginx_user(&self) -> Option<&'static str> {
        self.user.or_else(|| {
            (lifecycle::serves_code_from_nginx(self.stack, &self.role)
                && nix::unistd::geteuid().is_root())
            .then_some("root")
        })
    }

    /// The members this proxy may send requests to: those of its configuration, and those of
    /// earlier ones while old workers finish their requests (so a leaving node is released only
    /// once no request to it is in flight here).
    fn routes_to(&self) -> Option<Vec<String>> {
        let mut routes = self.routes_to.clone()?;
        for old in self.retiring.iter().flat_map(|r| &r.routes_to) {
            if !routes.contains(old) {
                routes.push(old.clone());
            }
        }
        Some(routes)
    }

    /// The link environment ([`crate::links`]), or `None` (and what the node waits for) while
    /// a linked service has no endpoint yet.
    async fn links_ready(
        &mut self,
        spec: &ServiceNodeSpec,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        Ok(self
            .links
            .get(
                &self.env.client,
                &self.env.namespace,
                &spec.links,
                &self.mounts,
            )
            .await?
            .or_wait(&mut self.waiting))
    }

    async fn converge_fpm(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let Some(environment) = self.links_ready(spec).await? else {
            return Ok(());
        };
        let program = daemon::find_versioned("php-fpm", "php-fpm")?;
        let conf = self.dir.join("php-fpm.conf");
        let settings: BTreeMap<&str, String> = ServiceType::Php
            .descriptor()
            .settings
            .iter()
            .map(|s| (s.key, setting(spec, s.key)))
            .collect();
        // Sessions go to a linked kvstore when there is one (shared with whatever else links
        // it), else to the redis beside the first proxy.
        let kvstore = spec
            .links
            .iter()
            .find(|l| l.service_type == Some(ServiceType::Kvstore));
        let sessions = match kvstore {
            Some(link) => Some(config::Sessions::Cluster {
                seeds: environment
                    .get(&format!("{}_HOSTS", link.prefix))
                    .cloned()
                    .unwrap_or_default(),
                password: environment
                    .get(&format!("{}_PASSWORD", link.prefix))
                    .cloned()
                    .unwrap_or_default(),
            }),
            None => match first_member(&spec.members, "proxy") {
                Some(proxy) => Some(config::Sessions::Proxy {
                    address: format!("{}:{}", proxy.address, config::REDIS_PORT),
                    password: self.sessions_password(&spec.service).await?,
                }),
                None => None,
            },
        };
        let text = config::php_fpm(
            &self.dir,
            self.user,
            &self.dir.join("fpm.sock"),
            &settings,
            sessions.as_ref(),
            &environment,
        );
        // Private: it holds the sessions' password.
        let changed = daemon::write_private_if_changed(&conf, &text)?;
        let mut args = vec![
            "--nodaemonize".to_string(),
            "--fpm-config".into(),
            conf.display().to_string(),
        ];
        if nix::unistd::geteuid().is_root() && self.user.is_none() {
            args.push("--allow-to-run-as-root".into());
        }
        let fpm = self.fpm.get_or_insert_with(|| {
            Daemon::new(
                "php-fpm",
                program,
                args,
                self.env.work_dir.join("logs/php-fpm.out"),
                Signal::SIGQUIT,
            )
        });
        if changed && fpm.running() {
            // A graceful reload: workers finish their requests first.
            fpm.signal(Signal::SIGUSR2);
        }
        fpm.ensure_started()
    }

    /// A java backend: the active WAR unpacked and deployed to Tomcat, run with the link
    /// environment.
    async fn converge_tomcat(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let Some(environment) = self.links_ready(spec).await? else {
            return Ok(());
        };
        let folder = match &spec.code {
            Some(code) => self.unpack_code(spec, code).await.map(|dir| {
                self.code_error = None;
                self.code_waiting = None;
                (code, dir)
            }),
            None => None,
        };
        if self.tomcat.is_none() {
            let user = daemon::unprivileged_user("tomcat", &self.env.work_dir);
            self.tomcat = Some(Tomcat::new(&self.env.work_dir, &self.env.address, user));
        }
        let tomcat = self.tomcat.as_mut().expect("made above");
        if tomcat.needs_restart(&environment) {
            // Leave the proxies first (the node reports not Ready), restart a moment later.
            let at = *self
                .restart_at
                .get_or_insert_with(|| std::time::Instant::now() + LEAVE_BEFORE_RESTART);
            if std::time::Instant::now() < at {
                return Ok(());
            }
        }
        self.restart_at = None;
        let tomcat = self.tomcat.as_mut().expect("made above");
        let restarted = tomcat
            .converge(
                folder.as_ref().map(|(c, d)| (*c, d.as_path())),
                &environment,
            )
            .await?;
        if restarted {
            self.listening = false;
        }
        Ok(())
    }

    /// The first proxy keeps the sessions in a redis beside it, behind the sessions password.
    async fn converge_redis(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let first = first_member(&spec.members, "proxy").is_some_and(|m| m.name == self.env.node);
        if !first {
            return Ok(());
        }
        let program = daemon::find(&["redis-server"], "redis-server")?;
        let password = self.sessions_password(&spec.service).await?;
        let conf = self.dir.join("redis.conf");
        let text = config::redis_conf(&self.dir, &self.env.address, &password);
        if daemon::write_private_if_changed(&conf, &text)?
            && let Some(mut old) = self.redis.take()
        {
            // A redis of another configuration (an agent's earlier password) goes.
            old.stop(std::time::Duration::from_secs(5)).await;
        }
        let redis = self.redis.get_or_insert_with(|| {
            Daemon::new(
                "redis",
                program,
                vec![conf.display().to_string()],
                self.env.work_dir.join("logs/redis.log"),
                Signal::SIGTERM,
            )
        });
        redis.ensure_started()
    }

    /// The sessions' redis password (the Secret `<service>-php`), as last read.
    async fn sessions_password(&mut self, service: &str) -> Result<String, String> {
        if let Some((password, _)) = &self.sessions_password {
            return Ok(password.clone());
        }
        let (password, _) = super::read_password(&self.env, &php::secret_name(service))
            .await
            .map_err(|e| format!("read the sessions' password: {e}"))?;
        self.sessions_password = Some((password.clone(), std::time::Instant::now()));
        Ok(password)
    }

    /// Reads the sessions' password again once it is [`SESSIONS_PASSWORD_EVERY`] old: whether
    /// it changed (the node then converges to it). A failed read keeps the one in use.
    async fn sessions_password_changed(&mut self, service: &str) -> bool {
        let Some((old, read)) = &self.sessions_password else {
            return false;
        };
        if read.elapsed() < SESSIONS_PASSWORD_EVERY {
            return false;
        }
        let old = old.clone();
        match super::read_password(&self.env, &php::secret_name(service)).await {
            Ok((password, _)) => {
                let changed = password != old;
                self.sessions_password = Some((password, std::time::Instant::now()));
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "read the sessions' password again");
                self.sessions_password = Some((old, std::time::Instant::now()));
                false
            }
        }
    }

    /// What the node sees of itself (all but Tomcat's refusal, which needs the spec).
    fn seen(&self) -> Seen {
        Seen {
            error: self.error.clone(),
            dead: self.dead.clone(),
            code_error: self.code_error.clone(),
            refused: None,
            not_served: match self.serving.verdict() {
                Verdict::NotServed(why) => Some(why.clone()),
                _ => None,
            },
            waiting: self.waiting.clone(),
            code_waiting: self.code_waiting.clone(),
            restarting: self.restart_at.is_some(),
            listening: self.listening,
            checking: *self.serving.verdict() == Verdict::Checking,
        }
    }

    fn daemons(&mut self) -> impl Iterator<Item = &mut Daemon> {
        let tomcat = self.tomcat.as_mut().and_then(Tomcat::daemon);
        [
            self.nginx.as_mut(),
            self.fpm.as_mut(),
            self.redis.as_mut(),
            tomcat,
        ]
        .into_iter()
        .flatten()
    }

    /// Converges the node's daemons to `spec`; what fails is kept in `error` (tried again).
    async fn converge(&mut self, spec: &ServiceNodeSpec) {
        self.role = spec.role.clone();
        self.spec_code = spec.code.as_ref().map(|c| c.version.clone());
        let result = async {
            self.prepare()?;
            // Code is served only with the linked volumes in place.
            self.mounts.apply(&spec.links).await?;
            if let Some(waiting) = self.mounts.pending(&spec.links) {
                self.waiting = Some(waiting);
                return Ok(());
            }
            self.waiting = None;
            if let Some(user) = self.user {
                self.mounts.give_to(user)?;
            }
            // A volume linked after the version was installed appears in it too.
            if self.installed.is_some()
                && let Ok(serving) = std::fs::read_link(self.www())
            {
                self.mounts.link_into(&serving)?;
            }
            for part in lifecycle::parts(self.stack, &self.role) {
                match part {
                    Part::InstallCode => self.install_code(spec).await,
                    Part::Fpm => self.converge_fpm(spec).await?,
                    Part::Tomcat => self.converge_tomcat(spec).await?,
                    Part::Redis => self.converge_redis(spec).await?,
                    Part::Nginx => self.converge_nginx(spec).await?,
                }
                // A backend whose links have no endpoint yet goes no further.
                if self.waiting.is_some() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        self.error = result.err();
        self.last_converge = Some(std::time::Instant::now());
    }

    /// Restarts daemons that died, and notes when the node starts listening.
    async fn watch_daemons(&mut self) {
        let mut dead = None;
        for d in self.daemons() {
            if !d.running() {
                dead = Some(d.exited_message());
                // Restarted at once; a daemon that keeps dying keeps the node Failed.
                let _ = d.ensure_started();
            }
        }
        if dead.is_some() {
            self.listening = false;
            self.dead = dead;
        }
        if let Some(tomcat) = self.tomcat.as_mut() {
            tomcat.poll();
        }
        if !self.listening && (self.nginx.is_some() || self.tomcat.is_some()) {
            self.listening = match &self.tomcat {
                // With code, Tomcat serves once the WAR is deployed.
                Some(tomcat) if self.spec_code.is_some() => tomcat.serving().await,
                // A php backend serves once php-fpm takes connections too: nginx alone would
                // answer the first requests with 502.
                _ => {
                    daemon::listening(&format!("{}:{}", self.env.address, self.port())).await
                        && (self.fpm.is_none()
                            || tokio::net::UnixStream::connect(self.dir.join("fpm.sock"))
                                .await
                                .is_ok())
                }
            };
            if self.listening {
                self.dead = None;
            }
        }
        if self.listening && lifecycle::serves_code_from_nginx(self.stack, &self.role) {
            let address = format!("{}:{}", self.env.address, self.port());
            self.serving.probe(&address).await;
        }
    }
}

#[async_trait::async_trait]
impl Role for WebHosting {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.spec = Some(spec.clone());
        self.converge(spec).await;
        self.poll().await;
    }

    async fn poll(&mut self) {
        self.watch_daemons().await;
        if self.role == "proxy" {
            let log = self.env.work_dir.join("logs/requests.log");
            self.latency
                .get_or_insert_with(|| latency::Latency::new(log))
                .poll();
        }
        self.retiring.retain(|r| {
            r.since.elapsed() < RETIRING_LIMIT && r.workers.iter().any(|pid| daemon::alive(*pid))
        });
        let restart_due = self
            .restart_at
            .is_some_and(|at| at <= std::time::Instant::now());
        let stuck = self.seen().converge_again(restart_due);
        let Some(spec) = self.spec.clone() else {
            return;
        };
        let rotated = self.sessions_password_changed(&spec.service).await;
        if rotated {
            tracing::info!("the sessions' password changed");
        }
        if rotated || (stuck && self.last_converge.is_none_or(|t| t.elapsed() >= RETRY)) {
            self.converge(&spec).await;
        }
    }

    fn report(&self) -> RoleReport {
        // A proxy serves no code: it runs whatever version its spec names, at once.
        let installed = match &self.tomcat {
            Some(tomcat) => tomcat.deployed.as_ref(),
            None => self.installed.as_ref(),
        };
        let code_version = if self.role == "proxy" && self.stack == Stack::Php {
            self.spec_code.clone()
        } else {
            installed.map(|c| c.version.clone())
        };
        let refused = self
            .tomcat
            .as_ref()
            .zip(self.spec.as_ref())
            .and_then(|(t, spec)| {
                let code = spec.code.as_ref()?;
                let why = t.refused(code)?;
                Some(format!("code version {}: {why}", code.version))
            });
        let seen = Seen {
            refused,
            ..self.seen()
        };
        let serving = format!(
            "{} serving http://{}:{}/",
            self.role,
            self.env.address,
            self.port()
        );
        let health = lifecycle::health(&seen, &self.role, &serving);
        let failed_code_version = health
            .code_failed
            .then(|| self.spec.as_ref()?.code.as_ref().map(|c| c.version.clone()))
            .flatten();
        RoleReport {
            state: Some(health.state),
            message: Some(health.message),
            code_version,
            failed_code_version,
            routes_to: self.routes_to().filter(|_| self.listening),
            metrics: self
                .latency
                .as_ref()
                .map(latency::Latency::metrics)
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    async fn shutdown(&mut self) {
        for d in self.daemons() {
            d.stop(STOP_GRACE).await;
        }
        self.mounts.shutdown().await;
    }
}

/// A php setting's value, or the type's default.
fn setting(spec: &ServiceNodeSpec, key: &str) -> String {
    spec.settings.get(key).cloned().unwrap_or_else(|| {
        ServiceType::Php
            .descriptor()
            .setting(key)
            .and_then(|s| s.default)
            .unwrap_or_default()
            .to_string()
    })
}

/// The members of `role` whose agents report them ready, by name.
fn ready_members<'a>(members: &'a [Member], role: &str) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|m| m.role == role && m.ready)
        .collect()
}

fn addresses(members: &[&Member]) -> Vec<String> {
    members.iter().map(|m| m.address.clone()).collect()
}

/// Points `link` at `target` in one rename, so a request sees either version, never a mix.
fn switch_symlink(link: &Path, target: &Path) -> Result<(), String> {
    let tmp = link.with_extension("next");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, link))
        .map_err(|e| format!("point {} at {}: {e}", link.display(), target.display()))
}

/// Runs `nginx -t` on a new configuration; its own words when it refuses.
async fn check_nginx(program: &Path, conf: &Path) -> Result<(), String> {
    let args = ["-t", "-q", "-e", "/dev/null", "-c"].map(String::from);
    let mut args = args.to_vec();
    args.push(conf.display().to_string());
    daemon::run_checked(program, &args, "nginx refused its configuration").await
}
