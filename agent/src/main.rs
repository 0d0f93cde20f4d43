//! `conpaas-agent`: runs inside every ConPaaS VM. It reads its bootstrap (API server, CA, its
//! ServiceNode, a token that may read only that node and patch only its status), watches its
//! ServiceNode, runs the role's software, and reports into `status.agent` with its own field
//! manager, only when what it reports changes (plus a heartbeat Lease on a thread of its own).
//!
//! Start at [`node::run`], then [`supervisor::run`] (the role's task); each service type's role
//! is a module under `roles/`.

mod bootstrap;
mod code;
mod daemon;
mod heartbeat;
mod leftovers;
mod links;
mod log_auth;
mod logserver;
mod node;
mod report;
mod roles;
mod secrets;
mod supervisor;
mod token;
mod volumes;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The ConPaaS agent: runs one ServiceNode's role inside its VM.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The bootstrap document (JSON): API server, CA, namespace, node, token.
    #[arg(long, env = "CONPAAS_USER_DATA")]
    user_data: PathBuf,
    /// The agent's working folder: code versions, script logs, member list.
    #[arg(long, env = "CONPAAS_WORK_DIR", default_value = ".")]
    work_dir: PathBuf,
    /// This VM's IP address [default: CONPAAS_VM_ADDRESS, else 127.0.0.1]
    #[arg(long, env = conpaas_crds::bootstrap::local_vm::ADDRESS, default_value = "127.0.0.1")]
    address: String,
}

// At least two workers whatever the VM's CPUs: a role's blocking call (a `chown -R`) then never
// holds up the watch, the reports and SIGTERM (the heartbeat has a thread of its own).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let log = logserver::LogBuffer::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let boot = bootstrap::read(&args.user_data)?;
    let config = bootstrap::config(&boot, &args.work_dir)?;
    let client = kube::Client::try_from(config.clone()).context("build the API client")?;
    tracing::info!(node = %boot.node, namespace = %boot.namespace, address = %args.address, "agent starting");
    let log_auth = log_auth::LogAuth::default();
    let log_key = log_auth.key.clone();
    let (log_tls, log_pin) = logserver::tls_identity(&args.address)?;
    tokio::spawn(logserver::serve(
        args.address.clone(),
        log_tls,
        log,
        args.work_dir.join("logs"),
        log_auth,
    ));
    tokio::spawn(token::keep_fresh(
        client.clone(),
        boot.namespace.clone(),
        boot.node.clone(),
        args.work_dir.join("token"),
        std::time::Duration::from_secs(boot.token_ttl_seconds),
        std::time::Duration::from_secs(boot.token_refresh_seconds.max(1)),
    ));
    // Started again on the same VM (the agent crashed): the earlier agent's daemons go first.
    let stopped = leftovers::stop_earlier(&args.work_dir, std::time::Duration::from_secs(60)).await;
    if stopped > 0 {
        tracing::warn!(stopped, "stopped the daemons an earlier agent left running");
    }
    let log_endpoint = node::LogEndpoint {
        key: log_key,
        pin: log_pin,
    };
    node::run(config, boot, args.work_dir, args.address, log_endpoint).await
}
