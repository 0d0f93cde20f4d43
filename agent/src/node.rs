//! The agent's main loop: watch the own ServiceNode (the only one its token can read), run the
//! startup script once, converge the role to each new spec, report status only when it changes,
//! renew the node's heartbeat Lease (a small write that wakes no reconciler), and stop the role
//! cleanly on SIGTERM (the cloud terminating the VM).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use conpaas_crds::bootstrap::AgentBootstrap;
use conpaas_crds::labels::MANAGER_AGENT;
use conpaas_crds::v1alpha1::{AgentState, AgentStatus, ServiceNode, heartbeat_interval};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::report;
use crate::roles::{self, Role, RoleEnv, RoleReport};

/// How often the role is polled for changes of its own (a script ended).
const POLL: Duration = Duration::from_millis(500);

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    client: Client,
    boot: AgentBootstrap,
    work_dir: PathBuf,
    address: String,
    service: Arc<OnceLock<String>>,
) -> anyhow::Result<()> {
    let api: Api<ServiceNode> = Api::namespaced(client.clone(), &boot.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", boot.node));
    let mut updates = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut poll = tokio::time::interval(POLL);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &boot.namespace);
    let mut beat_every =
        heartbeat_interval(conpaas_crds::v1alpha1::HealthSpec::default().heartbeat_timeout_seconds);
    let mut last_beat = tokio::time::Instant::now();
    let mut next_beat = last_beat;

    let env = RoleEnv {
        client,
        namespace: boot.namespace.clone(),
        work_dir: work_dir.clone(),
        address,
        node: boot.node.clone(),
    };
    let mut role: Option<Box<dyn Role>> = None;
    let mut generation: Option<i64> = None;
    let mut role_name: Option<String> = None;
    let mut startup_error: Option<String> = None;
    let mut last_sent: Option<(Option<i64>, RoleReport)> = None;
    // When a drain the node was released for may end (its work in flight had that long).
    let mut drain_until: Option<tokio::time::Instant> = None;

    loop {
        tokio::select! {
            update = updates.next() => match update {
                Some(Ok(node)) => {
                    // The log endpoint authorizes readers against the node's Service.
                    let _ = service.set(node.spec.service.clone());
                    if role.is_none() {
                        startup_error = run_startup_script(&node, &work_dir).await.err();
                        role = Some(roles::for_type(
                            node.spec.service_type,
                            &node.spec.role,
                            env.clone(),
                        ));
                    }
                    if let Some(role) = role.as_mut() {
                        role.apply(&node.spec).await;
                        if let Some(drain) = node.spec.drain.as_ref().filter(|d| d.released)
                            && drain_until.is_none()
                        {
                            tracing::info!(seconds = drain.seconds, "released: draining");
                            role.drain().await;
                            drain_until = Some(
                                tokio::time::Instant::now()
                                    + Duration::from_secs(drain.seconds.max(0) as u64),
                            );
                        }
                    }
                    generation = node.metadata.generation;
                    beat_every = heartbeat_interval(node.spec.heartbeat_timeout_seconds);
                    // A shorter interval takes effect now, not after the beat already scheduled.
                    next_beat = next_beat.min(last_beat + beat_every);
                    role_name = Some(node.spec.role.clone());
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching own ServiceNode"),
                None => anyhow::bail!("the watch of the own ServiceNode ended"),
            },
            _ = poll.tick() => {
                if let Some(role) = role.as_mut() {
                    role.poll().await;
                }
            }
            _ = tokio::time::sleep_until(next_beat) => {
                last_beat = tokio::time::Instant::now();
                next_beat = last_beat + beat_every;
                if let Err(e) = renew(&leases, &boot.node).await {
                    tracing::warn!(error = %e, "renew heartbeat lease");
                }
                continue;
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let Some(current) = role.as_ref() else {
            continue;
        };
        let mut now = current.report();
        if let Some(e) = &startup_error {
            now.state = Some(AgentState::Failed);
            now.message = Some(e.clone());
        } else if drain_until.is_some_and(|t| t <= tokio::time::Instant::now()) && current.drained()
        {
            now.state = Some(AgentState::Drained);
            now.message = Some("drained: the work in flight is done".into());
        }
        let changed = last_sent.as_ref() != Some(&(generation, now.clone()));
        if changed {
            let status = AgentStatus {
                state: now.state,
                observed_generation: generation,
                role: role_name.clone(),
                message: now.message.clone(),
                code_version: now.code_version.clone(),
                greeting: now.greeting.clone(),
                scripts: now.scripts.clone(),
                routes_to: now.routes_to.clone(),
                credentials_version: now.credentials_version.clone(),
                saved: now.saved.clone(),
                metrics: now.metrics.clone(),
            };
            match report::send(&api, &boot.node, &status).await {
                Ok(()) => last_sent = Some((generation, now)),
                Err(e) => tracing::warn!(error = %e, "report status"),
            }
        }
    }
    tracing::info!("stopping");
    if let Some(role) = role.as_mut() {
        role.drain().await;
        role.shutdown().await;
    }
    Ok(())
}

/// Renews the node's heartbeat Lease (created by the controller).
async fn renew(leases: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
    let pp = PatchParams {
        field_manager: Some(MANAGER_AGENT.into()),
        ..Default::default()
    };
    leases
        .patch(node, &pp, &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Runs the Service's startup script once, before the role starts.
async fn run_startup_script(node: &ServiceNode, work_dir: &std::path::Path) -> Result<(), String> {
    let Some(script) = &node.spec.startup_script else {
        return Ok(());
    };
    let path = work_dir.join("startup.sh");
    std::fs::write(&path, script).map_err(|e| format!("write {}: {e}", path.display()))?;
    let status = tokio::process::Command::new("sh")
        .arg(&path)
        .current_dir(work_dir)
        .status()
        .await
        .map_err(|e| format!("run startup script: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("startup script exited with {status}"))
    }
}
