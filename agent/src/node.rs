//! The agent's loop: watch the own ServiceNode (the only one its token can read), hand each new
//! spec to the role's supervisor ([`crate::supervisor`], a task of its own), write what it
//! publishes into `status.agent` only when that changes, and stop the role cleanly on SIGTERM
//! (the cloud terminating the VM). The heartbeat Lease is renewed on a thread of its own
//! ([`crate::heartbeat`]). Nothing here waits on the role.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use conpaas_crds::bootstrap::AgentBootstrap;
use conpaas_crds::v1alpha1::{AgentStatus, HealthSpec, ServiceNode, heartbeat_interval};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::roles::RoleEnv;
use crate::supervisor::{self, Published};
use crate::{heartbeat, report};

/// How often a report the API server refused is tried again.
const REPORT_RETRY: Duration = Duration::from_secs(1);

/// How long one status write may take before it is given up and tried again.
const REPORT_TIMEOUT: Duration = Duration::from_secs(20);

/// The node's log endpoint: the key it accepts (set once the ServiceNode is read) and the
/// digest of its certificate (reported for the controller to pin).
pub struct LogEndpoint {
    pub key: Arc<OnceLock<String>>,
    pub pin: String,
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    boot: AgentBootstrap,
    work_dir: PathBuf,
    address: String,
    log_endpoint: LogEndpoint,
) -> anyhow::Result<()> {
    let client = Client::try_from(config.clone()).context("build the API client")?;
    let api: Api<ServiceNode> = Api::namespaced(client.clone(), &boot.namespace);
    let watch_config = watcher::Config::default()
        .fields(&format!("metadata.name={}", boot.node))
        .timeout(crate::bootstrap::WATCH_SECONDS);
    let mut updates = watcher(api.clone(), watch_config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;

    let (beat_every, beat_rx) = watch::channel(heartbeat_interval(
        HealthSpec::default().heartbeat_timeout_seconds,
    ));
    heartbeat::spawn(config, boot.namespace.clone(), boot.node.clone(), beat_rx)
        .context("start the heartbeat thread")?;

    let env = RoleEnv {
        client,
        namespace: boot.namespace.clone(),
        work_dir,
        address,
        node: boot.node.clone(),
    };
    let (specs, specs_rx) = watch::channel(None);
    let (reports_tx, mut reports) = watch::channel::<Option<Published>>(None);
    let (stop, stop_rx) = watch::channel(false);
    let role = tokio::spawn(supervisor::run(env, specs_rx, reports_tx, stop_rx));

    let mut last_sent: Option<Published> = None;
    let mut retry = tokio::time::interval(REPORT_RETRY);
    loop {
        tokio::select! {
            update = updates.next() => match update {
                Some(Ok(node)) => {
                    // The log endpoint opens to the key of this node.
                    let _ = log_endpoint
                        .key
                        .set(conpaas_crds::code_api::node_log_key(&node.spec.token));
                    beat_every.send_if_modified(|every| {
                        let new = heartbeat_interval(node.spec.heartbeat_timeout_seconds);
                        std::mem::replace(every, new) != new
                    });
                    specs.send_replace(Some(Arc::new(node)));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching own ServiceNode"),
                None => anyhow::bail!("the watch of the own ServiceNode ended"),
            },
            changed = reports.changed() => if changed.is_err() {
                // The supervisor ended on its own: nothing more will be reported.
                break;
            },
            _ = retry.tick() => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let now = reports.borrow().clone();
        if let Some(now) = now.filter(|now| last_sent.as_ref() != Some(now)) {
            let status = agent_status(&now, &log_endpoint.pin);
            match tokio::time::timeout(REPORT_TIMEOUT, report::send(&api, &boot.node, &status))
                .await
            {
                Ok(Ok(())) => last_sent = Some(now),
                Ok(Err(e)) => tracing::warn!(error = %e, "report status"),
                Err(_) => tracing::warn!("report status: no answer in time"),
            }
        }
    }
    tracing::info!("stopping");
    let _ = stop.send(true);
    role.await.context("the role's supervisor")?;
    Ok(())
}

fn agent_status(now: &Published, log_pin: &str) -> AgentStatus {
    let report = &now.report;
    AgentStatus {
        state: report.state,
        observed_generation: now.generation,
        role: now.role.clone(),
        message: report.message.clone(),
        code_version: report.code_version.clone(),
        failed_code_version: report.failed_code_version.clone(),
        greeting: report.greeting.clone(),
        scripts: report.scripts.clone(),
        routes_to: report.routes_to.clone(),
        credentials_version: report.credentials_version.clone(),
        recovered_position: report.recovered_position.clone(),
        saved: report.saved.clone(),
        save_failure: report.save_failure.clone(),
        log_certificate_sha256: Some(log_pin.to_string()),
        metrics: report.metrics.clone(),
    }
}
