//! Command-line flags; each has an environment variable and a default that works on one machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use conpaas_cloud::local::LocalConfig;

/// The ConPaaS operator: reconciles Clouds, Applications, Services and ServiceNodes.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Folder for the local cloud's VMs [default: $XDG_STATE_HOME/conpaas, else ~/.local/state/conpaas]
    #[arg(long, env = "CONPAAS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The agent executable local VMs run [default: conpaas-agent beside this executable]
    #[arg(long, env = "CONPAAS_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,
    /// What serves `local` Clouds: `process` (a conpaas-agent process per VM) or `memory` (VMs
    /// exist only in this process and boot nothing; for benchmarks with simulated agents)
    #[arg(long, env = "CONPAAS_LOCAL_BACKEND", default_value = "process", value_parser = ["process", "memory"])]
    pub local_backend: String,
    /// Local VMs get addresses 127.<subnet>.x.y
    #[arg(long, env = "CONPAAS_LOCAL_SUBNET", default_value_t = 100)]
    pub local_subnet: u8,
    /// How long a local VM's agent may stop gracefully (SIGTERM) before it is killed; 0 powers
    /// VMs off at once, as EC2 terminates an instance (nothing in the VM gets to finish)
    #[arg(long, env = "CONPAAS_LOCAL_STOP_GRACE_SECONDS", default_value_t = 10)]
    pub local_stop_grace_seconds: u64,
    /// API server URL written into agents' bootstrap [default: the URL this controller uses]
    #[arg(long, env = "CONPAAS_AGENT_API_SERVER")]
    pub agent_api_server: Option<String>,
    /// Seconds an unclaimed VM carrying our tag is spared before the orphan sweep terminates it
    #[arg(long, env = "CONPAAS_ORPHAN_GRACE_SECONDS", default_value_t = 120)]
    pub orphan_grace_seconds: u64,
    /// Seconds in a credit hour: each started one of a node costs its price once; at least 60
    /// unless `--test-short-credit-hour` (tests use a few seconds)
    #[arg(long, env = "CONPAAS_CREDIT_HOUR_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub credit_hour_seconds: u64,
    /// Allows a credit hour under 60 s: for tests only (a hour of seconds bills every node again
    /// and again)
    #[arg(long, env = "CONPAAS_TEST_SHORT_CREDIT_HOUR")]
    pub test_short_credit_hour: bool,
    /// Lifetime of the token each agent gets (the API server's minimum is 600)
    #[arg(long, env = "CONPAAS_AGENT_TOKEN_TTL_SECONDS", default_value_t = 3600)]
    pub agent_token_ttl_seconds: u64,
    /// When agents renew their token [default: two thirds of its lifetime]
    #[arg(long, env = "CONPAAS_AGENT_TOKEN_REFRESH_SECONDS")]
    pub agent_token_refresh_seconds: Option<u64>,
    /// Where /metrics, /healthz and /readyz are served
    #[arg(long, env = "CONPAAS_HTTP_ADDRESS", default_value = "127.0.0.1:9464")]
    pub http_address: std::net::SocketAddr,
    /// Elect a leader among replicas; only the leader reconciles
    #[arg(long, env = "CONPAAS_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease and of the Clouds' credential Secrets [default:
    /// the controller's own namespace in a cluster, else `default`]
    #[arg(long, env = "CONPAAS_LEADER_NAMESPACE")]
    pub leader_namespace: Option<String>,
    /// Seconds a leader's Lease lasts without renewal; a standby takes over after about this long
    #[arg(long, env = "CONPAAS_LEADER_LEASE_SECONDS", default_value_t = 15)]
    pub leader_lease_seconds: u64,
    /// Writes to the API server in flight at once; more wait their turn, and a write the server
    /// refuses for load (429) keeps its slot while it waits the server's Retry-After.
    #[arg(long, env = "CONPAAS_MAX_CONCURRENT_WRITES", default_value_t = 32)]
    pub max_concurrent_writes: usize,
    /// Where the code API (uploads and downloads of code archives, behind the API server as
    /// `code.conpaas.io`) listens
    #[arg(
        long,
        env = "CONPAAS_CODE_API_ADDRESS",
        default_value = "127.0.0.1:9443"
    )]
    pub code_api_address: std::net::SocketAddr,
    /// The Service, in the controller's namespace, that the code API's APIService names
    #[arg(
        long,
        env = "CONPAAS_CODE_API_SERVICE",
        default_value = "conpaas-code-api"
    )]
    pub code_api_service: String,
    /// Outside a cluster: make that Service an ExternalName for this host, so the API server
    /// dials this host at the code API's own port [default outside a pod: `localhost` for an
    /// API server on this machine, else the host's name; in a pod, or empty: none, the Helm
    /// chart makes a ClusterIP Service for the controller's pods]
    #[arg(long, env = "CONPAAS_CODE_API_EXTERNAL_NAME")]
    pub code_api_external_name: Option<String>,
    /// The port of that Service [default: the code API's own port with an external name, else
    /// 443]
    #[arg(long, env = "CONPAAS_CODE_API_SERVICE_PORT")]
    pub code_api_service_port: Option<u16>,
    /// Where code archives are kept: `file:///folder` or `memory://` [default: the `artifacts`
    /// folder in the state folder]
    #[arg(long, env = "CONPAAS_ARTIFACT_STORE")]
    pub artifact_store: Option<String>,
    /// The largest archive an upload may carry, in bytes
    #[arg(long, env = "CONPAAS_MAX_ARCHIVE_BYTES", default_value_t = 2 << 30)]
    pub max_archive_bytes: u64,
    /// The most bytes of archives one namespace may hold in the store (what its Services name
    /// or keep, its recent uploads and those in progress); 0 for no quota. Saved data counts,
    /// so a Stop whose save does not fit keeps its nodes and says so
    #[arg(long, env = "CONPAAS_NAMESPACE_STORE_BYTES", default_value_t = 64 << 30)]
    pub namespace_store_bytes: u64,
    /// Seconds an archive that no code version names stays in the store (covers an upload
    /// whose version is not written yet)
    #[arg(
        long,
        env = "CONPAAS_ARTIFACT_GC_GRACE_SECONDS",
        default_value_t = 3600
    )]
    pub artifact_gc_grace_seconds: u64,
    /// Seconds between sweeps of the store
    #[arg(
        long,
        env = "CONPAAS_ARTIFACT_GC_INTERVAL_SECONDS",
        default_value_t = 600
    )]
    pub artifact_gc_interval_seconds: u64,
    /// Non-public networks a git source may reach, comma-separated (`10.0.0.0/8,127.0.0.1/32`);
    /// loopback, private, link-local (cloud metadata) and the like are refused otherwise
    #[arg(long, env = "CONPAAS_GIT_ALLOWED_NETWORKS", default_value = "")]
    pub git_allowed_networks: crate::git::destination::AllowedNetworks,
    /// Log as JSON lines instead of text
    #[arg(long, env = "CONPAAS_LOG_JSON")]
    pub log_json: bool,
}

impl Args {
    /// Logs go to stderr; `RUST_LOG` filters them (default `info`).
    pub fn init_logging(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if self.log_json {
            builder.json().init()
        } else {
            builder.init()
        }
    }

    /// The local cloud's settings.
    pub fn local_config(&self) -> anyhow::Result<LocalConfig> {
        let state_dir = match &self.state_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .context("neither CONPAAS_STATE_DIR, XDG_STATE_HOME nor HOME is set")?
                .join("conpaas"),
        };
        let agent_binary = match &self.agent_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("locate this executable")?
                .with_file_name("conpaas-agent"),
        };
        Ok(LocalConfig {
            state_dir,
            agent_binary,
            subnet: self.local_subnet,
            stop_grace: Duration::from_secs(self.local_stop_grace_seconds),
        })
    }
}
