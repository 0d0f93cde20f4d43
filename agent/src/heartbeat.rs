//! The node's heartbeat: its Lease renewed on a thread and a runtime of its own, with a client of
//! its own, so nothing the role does (a blocking unpack, a `chown -R`, a slow drain, a VM with
//! one CPU whose only runtime worker is busy) can make the node look dead.

use std::time::Duration;

use conpaas_crds::labels::MANAGER_AGENT;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Config};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// Starts renewing `node`'s Lease every `every` (read again after each renewal: a shorter
/// interval takes effect at once). Ends when the sender of `every` is dropped.
pub fn spawn(
    config: Config,
    namespace: String,
    node: String,
    every: watch::Receiver<Duration>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "start the heartbeat's runtime");
                    return;
                }
            };
            runtime.block_on(beat(config, namespace, node, every));
        })
}

async fn beat(
    config: Config,
    namespace: String,
    node: String,
    mut every: watch::Receiver<Duration>,
) {
    // The client's connection pool lives on this runtime, not on the one the roles may keep busy.
    let client = match Client::try_from(config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "build the heartbeat's API client");
            return;
        }
    };
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last: Option<Instant> = None;
    loop {
        let interval = *every.borrow_and_update();
        let due = last.map_or_else(Instant::now, |l| l + interval);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {
                last = Some(Instant::now());
                // A renewal that hangs must not hold back the next one.
                match tokio::time::timeout(interval.max(Duration::from_secs(1)), renew(&leases, &node)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "renew heartbeat lease"),
                    Err(_) => tracing::warn!(seconds = interval.as_secs(), "renew heartbeat lease: no answer in time"),
                }
            }
            changed = every.changed() => if changed.is_err() {
                return;
            },
        }
    }
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
