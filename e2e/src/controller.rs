//! The ConPaaS controller as a child process, with its own local-cloud state folder. Dropping
//! it stops the controller and every local VM it left running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::ControlPlane;

/// A running `conpaas-controller`.
pub struct Controller {
    child: Option<Child>,
    kubeconfig: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    subnet: u8,
    env: Vec<(String, String)>,
    /// Where this controller serves /metrics, /healthz and /readyz.
    pub http_address: std::net::SocketAddr,
    /// Where it serves the code API (the API server reaches it through an ExternalName Service).
    pub code_api_address: std::net::SocketAddr,
}

impl Controller {
    /// Starts the controller against `cp`, keeping local VMs under `state_dir` with addresses
    /// 127.`subnet`.x.y.
    pub fn start(cp: &ControlPlane, state_dir: &Path, subnet: u8) -> anyhow::Result<Self> {
        Self::start_with(cp, state_dir, subnet, &[])
    }

    /// Like [`Controller::start`], with extra environment variables (flags) for the controller.
    pub fn start_with(
        cp: &ControlPlane,
        state_dir: &Path,
        subnet: u8,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = crate::process::free_port()?;
        let code_api_port = crate::process::free_port()?;
        let mut controller = Controller {
            http_address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            code_api_address: std::net::SocketAddr::from(([127, 0, 0, 1], code_api_port)),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            kubeconfig: cp.kubeconfig.clone(),
            state_dir: state_dir.to_path_buf(),
            log: cp
                .dir()
                .join("logs")
                .join(format!("conpaas-controller-{subnet}-{port}.log")),
            subnet,
        };
        controller.restart()?;
        Ok(controller)
    }

    /// The controller's `conpaas_cloud_calls_total` lines from /metrics.
    pub async fn cloud_calls(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(self.http_address).await?;
        let (mut r, mut w) = stream.into_split();
        w.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        r.read_to_string(&mut text).await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("conpaas_cloud_calls_total{"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Sets an environment variable (a flag) for the controller's next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts the controller again after [`Controller::kill`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let bin = crate::built_binary("conpaas-controller");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&bin)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("CONPAAS_STATE_DIR", &self.state_dir)
            .env("CONPAAS_AGENT_BINARY", crate::built_binary("conpaas-agent"))
            .env("CONPAAS_LOCAL_SUBNET", self.subnet.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube_runtime=warn".into()),
            )
            .env("CONPAAS_HTTP_ADDRESS", self.http_address.to_string())
            .env(
                "CONPAAS_CODE_API_ADDRESS",
                self.code_api_address.to_string(),
            )
            .env("CONPAAS_CODE_API_EXTERNAL_NAME", "localhost")
            // Git sources on this machine's loopback (the git e2e's daemon listens on
            // 127.0.0.1); other non-public addresses stay refused, as in a cluster.
            .env("CONPAAS_GIT_ALLOWED_NETWORKS", "127.0.0.1/32")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "start {} (build it first: cargo build --workspace --bins)",
                    bin.display()
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the controller at once (SIGKILL), as a crash would; its VMs keep running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the controller gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// PIDs of the live local VMs' agents: every process started from this state folder, also
    /// one a crash kept from being recorded.
    pub fn vm_pids(&self) -> Vec<i32> {
        // Arguments are NUL-separated: this matches agents, not the scripts they start.
        let marker = format!("--user-data\0{}/vms/", self.state_dir.display());
        conpaas_cloud::local::find_by_cmdline(&marker)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The local cloud this controller's VMs live in, as a test reaches it from outside (to
    /// reset a VM, say).
    pub fn local_cloud(&self) -> conpaas_cloud::local::LocalCloud {
        conpaas_cloud::local::LocalCloud::new(conpaas_cloud::local::LocalConfig {
            state_dir: self.state_dir.clone(),
            agent_binary: crate::built_binary("conpaas-agent"),
            subnet: self.subnet,
            stop_grace: std::time::Duration::ZERO,
        })
    }

    /// The controller's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        for pid in self.vm_pids() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // And the daemons that left their agent's process group (php-fpm), as terminating the
        // VMs would have.
        let vms = std::fs::read_dir(self.state_dir.join("vms"))
            .into_iter()
            .flatten();
        for vm in vms.flatten() {
            conpaas_cloud::local::kill_recorded_groups(
                &vm.path().join(conpaas_cloud::local::PROCESS_GROUPS_FILE),
            );
            // Volume mounts of linked filesystems, whose clients were just killed.
            conpaas_cloud::local::unmount_under(&vm.path());
            // A sized VM's cgroup, with whatever is left in it.
            conpaas_cloud::local::release_cgroup(&vm.file_name().to_string_lossy());
        }
    }
}

/// The sum of `conpaas_cloud_calls_total` lines (from [`Controller::cloud_calls`]) for one
/// operation.
pub fn sum_calls(metrics: &str, operation: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.contains(&format!("operation=\"{operation}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
