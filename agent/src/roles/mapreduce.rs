//! mapreduce (ConPaaS' Hadoop) on Apache Spark standalone: the master node runs the Spark
//! master, every worker node a Spark worker registered with it, both as the agent's children
//! through `spark-class` (pyspark's pip package ships it and the jars, without `sbin` scripts).
//!
//! Linked filesystem volumes are mounted as for the other types, and the Spark daemons run in a
//! mount namespace of their own where each appears at `/var/lib/conpaas/volumes/<mountPath>`:
//! the same path on every node (and, through `cpsctl mapreduce submit`, on the driver's machine),
//! as `file://` paths in a job must be, even where several nodes share one machine.
//!
//! A leaving worker is decommissioned (SIGPWR, Spark's own signal for it): the master offers it
//! no more work and tells the jobs' drivers, whose executors on it finish their running tasks,
//! hand their shuffle blocks to the others (in rounds 30 s apart) and exit; the node reports
//! drained once no executor runs on it. (SIGPWR sent to an executor itself kills it on Java 17:
//! Spark's handler passes the signal on to the JVM's, which throws.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conpaas_crds::types::mapreduce::{
    self, MASTER_PORT, MASTER_UI_PORT, VOLUME_ROOT, WORKER_UI_PORT,
};
use conpaas_crds::v1alpha1::{AgentState, ServiceNodeSpec};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Role, RoleEnv, RoleReport, first_member};
use crate::daemon::{self, Daemon};
use crate::links::LinkCache;
use crate::volumes::Mounts;

/// How often the node looks at what Spark says.
const EVERY: Duration = Duration::from_secs(2);
const STOP_GRACE: Duration = Duration::from_secs(15);

pub struct Mapreduce {
    env: RoleEnv,
    role: String,
    spec: Option<ServiceNodeSpec>,
    spark: Option<Daemon>,
    /// The master URL a worker was started with: a new master address restarts it.
    master_url: Option<String>,
    mounts: Mounts,
    error: Option<String>,
    waiting: Option<String>,
    ready: bool,
    next_look: Instant,
    /// SIGPWR was sent: the worker is decommissioning.
    decommissioning: bool,
    /// Executors still running on this worker, as its last look said.
    executors: Option<usize>,
    /// When the decommission began: a worker whose executors do not end within the setting
    /// `decommission_seconds` is let go anyway.
    decommissioned_at: Option<Instant>,
    /// The volume binds the running daemon was started with.
    started_binds: Vec<(String, PathBuf, PathBuf)>,
    /// The links' environment the daemon (and so its executors) started with.
    started_links: BTreeMap<String, String>,
    /// The links' environment, read again only when they change.
    links: LinkCache,
    /// Why the daemon was last restarted, shown until it is ready again.
    restarted: Option<String>,
}

impl Mapreduce {
    pub fn new(env: RoleEnv, role: &str) -> Self {
        Self {
            mounts: Mounts::new(env.work_dir.clone()),
            env,
            role: role.to_string(),
            spec: None,
            spark: None,
            master_url: None,
            error: None,
            waiting: None,
            ready: false,
            next_look: Instant::now(),
            decommissioning: false,
            executors: None,
            decommissioned_at: None,
            started_binds: Vec::new(),
            started_links: BTreeMap::new(),
            links: LinkCache::default(),
            restarted: None,
        }
    }

    fn dir(&self) -> PathBuf {
        self.env.work_dir.join("spark")
    }

    /// Starts the node's Spark daemon once its volumes are mounted (and, for a worker, the
    /// master's address is known); restarts a worker whose master moved.
    async fn converge(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        self.mounts.apply(&spec.links).await?;
        if let Some(waiting) = self.mounts.pending(&spec.links) {
            self.waiting = Some(waiting);
            return Ok(());
        }
        let master_url = if self.role == "master" {
            None
        } else {
            let Some(master) = first_member(&spec.members, "master") else {
                self.waiting = Some("waiting for the master's address".into());
                return Ok(());
            };
            Some(format!("spark://{}:{MASTER_PORT}", master.address))
        };
        let Some(links) = self
            .links
            .get(
                &self.env.client,
                &self.env.namespace,
                &spec.links,
                &self.mounts,
            )
            .await?
            .or_wait(&mut self.waiting)
        else {
            return Ok(());
        };
        let binds = self.mounts.binds(Path::new(VOLUME_ROOT));
        let restart = if self.spark.is_none() {
            None
        } else if self.master_url != master_url {
            Some(format!("the master moved to {master_url:?}"))
        } else if binds != self.started_binds {
            Some("the linked volumes changed".to_string())
        } else if links != self.started_links {
            Some("the links changed".to_string())
        } else {
            self.unseen_volume()
        };
        if let Some(why) = restart {
            tracing::warn!(why, "restarting the Spark daemon");
            self.restarted = Some(format!("restarting the Spark {}: {why}", self.role));
            self.ready = false;
            if let Some(mut spark) = self.spark.take() {
                spark.stop(STOP_GRACE).await;
            }
        }
        if self.spark.is_none() {
            let (secret, _) = super::read_config_secret(
                &self.env,
                &mapreduce::secret_name(&spec.service),
                "secret",
            )
            .await?;
            self.spark = Some(self.daemon(spec, master_url.as_deref(), &binds, &links, &secret)?);
            self.master_url = master_url;
            self.started_binds = binds;
            self.started_links = links;
        }
        let spark = self.spark.as_mut().expect("made above");
        if !spark.running() {
            let message = spark.exited_message();
            self.ready = false;
            self.restarted = Some(message.clone());
            spark
                .ensure_started()
                .map_err(|e| format!("{message}; restarting it: {e}"))?;
        }
        Ok(())
    }

    /// A linked volume the running daemon does not see where its namespace binds it (a bind
    /// of a FUSE mount that has since been replaced shows nothing): `/proc/<pid>/root` is the
    /// daemon's own view of the filesystem.
    fn unseen_volume(&mut self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let pid = self.spark.as_mut()?.pid()?;
        for (_, source, target) in &self.started_binds {
            let inner = PathBuf::from(format!("/proc/{pid}/root"))
                .join(target.strip_prefix("/").unwrap_or(target));
            let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
            let (outer, seen) = (device(source), device(&inner));
            if outer.is_some() && seen != outer {
                return Some(format!(
                    "it does not see the volume mounted at {}",
                    target.display()
                ));
            }
        }
        None
    }

    /// The Spark master or worker, run through `spark-class` in a mount namespace that shows
    /// the linked volumes at their fixed paths.
    fn daemon(
        &self,
        spec: &ServiceNodeSpec,
        master_url: Option<&str>,
        binds: &[(String, PathBuf, PathBuf)],
        links: &BTreeMap<String, String>,
        secret: &str,
    ) -> Result<Daemon, String> {
        let home = spark_home()?;
        daemon::find(&["java"], "openjdk-17-jre-headless")?;
        let dir = self.dir();
        for d in [dir.join("work"), self.env.work_dir.join("logs")] {
            std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let properties = dir.join("spark-defaults.conf");
        daemon::write_private(&properties, &properties_text(secret))?;
        let address = &self.env.address;
        let mut spark_args = vec![home.join("bin/spark-class").display().to_string()];
        match master_url {
            None => spark_args.extend([
                "org.apache.spark.deploy.master.Master".to_string(),
                "--host".into(),
                address.clone(),
                "--port".into(),
                MASTER_PORT.to_string(),
                "--webui-port".into(),
                MASTER_UI_PORT.to_string(),
            ]),
            Some(url) => spark_args.extend([
                "org.apache.spark.deploy.worker.Worker".to_string(),
                "--host".into(),
                address.clone(),
                "--webui-port".into(),
                WORKER_UI_PORT.to_string(),
                "--cores".into(),
                setting(spec, "worker_cores"),
                "--memory".into(),
                format!("{}m", setting(spec, "worker_memory_mb")),
                "--work-dir".into(),
                dir.join("work").display().to_string(),
                url.to_string(),
            ]),
        }
        spark_args.extend([
            "--properties-file".to_string(),
            properties.display().to_string(),
        ]);
        let (program, args) = in_namespace(binds, spark_args)?;
        let mut daemon = Daemon::new(
            if master_url.is_none() {
                "spark-master"
            } else {
                "spark-worker"
            },
            program,
            args,
            self.env.work_dir.join("logs/spark.out"),
            Signal::SIGTERM,
        );
        let mut env = vec![
            ("SPARK_HOME".to_string(), home.display().to_string()),
            // Every port, the web UI's too, on the node's own address.
            ("SPARK_LOCAL_IP".into(), address.clone()),
            ("SPARK_PUBLIC_DNS".into(), address.clone()),
            ("PYSPARK_PYTHON".into(), "python3".into()),
        ];
        // Executors inherit the worker's environment: jobs find the links' services and the
        // volumes by the link's name (the volumes where the namespace binds them).
        env.extend(
            links
                .iter()
                .filter(|(name, _)| !name.ends_with("_MOUNT"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend(
            binds.iter().map(|(prefix, _, target)| {
                (format!("{prefix}_MOUNT"), target.display().to_string())
            }),
        );
        daemon.set_env(env);
        Ok(daemon)
    }

    /// Asks Spark how the node is: the master answers, or the master lists this worker alive;
    /// a decommissioning worker's running executors.
    async fn look(&mut self, spec: &ServiceNodeSpec) {
        let address = &self.env.address.clone();
        if self.role == "master" {
            let said = get_json(&format!("http://{address}:{MASTER_UI_PORT}/json/")).await;
            self.ready = said
                .as_ref()
                .is_ok_and(|j| j["status"].as_str() == Some("ALIVE"));
            if self.ready {
                self.restarted = None;
            }
            return;
        }
        if self.decommissioning {
            let said = get_json(&format!("http://{address}:{WORKER_UI_PORT}/json/")).await;
            let running = self.spark.as_mut().is_some_and(Daemon::running);
            self.executors = match said {
                Ok(json) => json["executors"].as_array().map(Vec::len),
                // A worker that exited runs nothing; one that did not answer may.
                Err(_) if !running => Some(0),
                Err(_) => self.executors,
            };
            return;
        }
        let Some(master) = first_member(&spec.members, "master") else {
            self.ready = false;
            return;
        };
        let said = get_json(&format!("http://{}:{MASTER_UI_PORT}/json/", master.address)).await;
        self.ready = said.is_ok_and(|json| {
            json["workers"].as_array().is_some_and(|workers| {
                workers.iter().any(|w| {
                    w["host"].as_str() == Some(address) && w["state"].as_str() == Some("ALIVE")
                })
            })
        });
        if self.ready {
            self.restarted = None;
        }
    }
}

/// The daemons' Spark properties (readable by the agent only: they hold the secret).
fn properties_text(secret: &str) -> String {
    format!(
        "# Written by the ConPaaS agent.
# Only drivers holding the Service's secret run jobs (cpsctl mapreduce submit reads it).
spark.authenticate true
spark.authenticate.secret {secret}
# What goes between the daemons and the drivers (RPC, shuffle and cached blocks) is encrypted
# with a key agreed from the secret, and a client that will not encrypt is refused.
spark.network.crypto.enabled true
spark.network.crypto.saslFallback false
# The web UIs show, they do not kill.
spark.ui.killEnabled false
# SIGPWR decommissions a worker: no new tasks, running ones finish, blocks move.
spark.decommission.enabled true
# A taken port is an error, not a silent move to the next one.
spark.port.maxRetries 0
# Jobs come through the master's port, never its REST server, which has no authentication.
spark.master.rest.enabled false
spark.worker.cleanup.enabled true
"
    )
}

fn setting(spec: &ServiceNodeSpec, key: &str) -> String {
    spec.settings.get(key).cloned().unwrap_or_else(|| {
        conpaas_crds::types::mapreduce::DESCRIPTOR
            .setting(key)
            .and_then(|s| s.default)
            .unwrap_or_default()
            .to_string()
    })
}

/// Where Spark is: `SPARK_HOME`, else `/opt/spark`, else pyspark's pip package.
fn spark_home() -> Result<PathBuf, String> {
    let candidates = std::env::var_os("SPARK_HOME")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/opt/spark")])
        .chain(pyspark_dir());
    for home in candidates {
        if home.join("bin/spark-class").is_file() {
            return Ok(home);
        }
    }
    Err("Spark is not installed: set SPARK_HOME, or install it with `pip install pyspark==4.3.0` (and Java 17: apt openjdk-17-jre-headless)".into())
}

fn pyspark_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `command` run in a mount namespace of its own where each `(source, target)` is bound; the
/// command itself when there is nothing to bind.
fn in_namespace(
    binds: &[(String, PathBuf, PathBuf)],
    command: Vec<String>,
) -> Result<(PathBuf, Vec<String>), String> {
    if binds.is_empty() {
        let mut command = command.into_iter();
        let program = command.next().expect("a command");
        return Ok((PathBuf::from(program), command.collect()));
    }
    let unshare = daemon::find(&["unshare"], "util-linux")?;
    // The binds come as arguments (no quoting), then `--`, then the command.
    let script = "while [ \"$1\" != -- ]; do mkdir -p \"$2\" && mount --bind \"$1\" \"$2\" || exit 1; shift 2; done; shift; exec \"$@\"";
    let mut args = vec![
        "--mount".to_string(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
    ];
    for (_, source, target) in binds {
        args.push(source.display().to_string());
        args.push(target.display().to_string());
    }
    args.push("--".into());
    args.extend(command);
    Ok((unshare, args))
}

async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let text = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}"))
}

#[async_trait::async_trait]
impl Role for Mapreduce {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.spec = Some(spec.clone());
        if self.decommissioning {
            return;
        }
        self.error = self.converge(spec).await.err();
        self.next_look = Instant::now();
        self.poll().await;
    }

    async fn poll(&mut self) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        if self.next_look > Instant::now() {
            return;
        }
        self.next_look = Instant::now() + EVERY;
        if !self.decommissioning {
            self.error = self.converge(&spec).await.err();
        }
        if self.spark.is_some() {
            self.look(&spec).await;
        }
    }

    fn report(&self) -> RoleReport {
        let (state, message) = if let Some(e) = &self.error {
            (AgentState::Failed, e.clone())
        } else if let Some(w) = &self.waiting {
            (AgentState::Starting, w.clone())
        } else if self.decommissioning {
            (
                AgentState::Ready,
                format!(
                    "decommissioning: {} executors still running (they finish their tasks and hand their blocks over)",
                    self.executors.map_or("?".into(), |n| n.to_string())
                ),
            )
        } else if self.ready && self.role == "master" {
            (AgentState::Ready, "Spark master alive".into())
        } else if self.ready {
            (
                AgentState::Ready,
                format!(
                    "Spark worker registered with {}",
                    self.master_url.as_deref().unwrap_or("?")
                ),
            )
        } else {
            (
                AgentState::Starting,
                self.restarted
                    .clone()
                    .unwrap_or_else(|| format!("starting the Spark {}", self.role)),
            )
        };
        RoleReport {
            state: Some(state),
            message: Some(message),
            ..Default::default()
        }
    }

    async fn drain(&mut self) {
        if self.role != "worker" || self.decommissioning {
            return;
        }
        if let Some(spark) = self.spark.as_mut() {
            tracing::info!("decommissioning the worker");
            spark.signal(Signal::SIGPWR);
            self.decommissioning = true;
            self.decommissioned_at = Some(Instant::now());
            self.executors = None;
            self.next_look = Instant::now();
        }
    }

    fn drained(&self) -> bool {
        let limit = self
            .spec
            .as_ref()
            .map(|spec| setting(spec, "decommission_seconds"))
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        let overdue = self
            .decommissioned_at
            .is_some_and(|at| at.elapsed() >= limit);
        if overdue && self.executors != Some(0) {
            tracing::warn!("executors still run past decommission_seconds: letting the node go");
        }
        self.role != "worker" || self.spark.is_none() || self.executors == Some(0) || overdue
    }

    async fn shutdown(&mut self) {
        if let Some(mut spark) = self.spark.take() {
            spark.stop(STOP_GRACE).await;
        }
        self.mounts.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_bound_in_a_namespace_of_the_daemons_own() {
        let (program, args) =
            in_namespace(&[], vec!["/s/bin/spark-class".into(), "M".into()]).unwrap();
        assert_eq!(
            (program, args),
            (PathBuf::from("/s/bin/spark-class"), vec!["M".to_string()])
        );
        let binds = vec![(
            "DATA".to_string(),
            PathBuf::from("/w/volumes/fs-data"),
            PathBuf::from("/var/lib/conpaas/volumes/data"),
        )];
        // util-linux is essential on Debian: unshare is always there.
        let (program, args) = in_namespace(&binds, vec!["/s/bin/spark-class".into()])
            .expect("unshare from util-linux");
        assert!(program.ends_with("unshare"));
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "/w/volumes/fs-data",
                "/var/lib/conpaas/volumes/data",
                "--",
                "/s/bin/spark-class"
            ]
        );
    }
}
