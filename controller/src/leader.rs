//! Leader election on a Lease: replicas wait until they hold it before reconciling, and a
//! replica that loses it exits at once (its Deployment restarts it as a standby), so two
//! replicas never act together. A replica that stops cleanly gives the Lease up.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "conpaas-controller";

/// Leadership held by this replica.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

/// Blocks until this replica leads.
pub async fn acquire(
    client: Client,
    namespace: &str,
    identity: &str,
    lease_seconds: u64,
) -> anyhow::Result<Leadership> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(lease_seconds)
        .with_grace((lease_seconds / 5).max(1))
        .with_field_manager("conpaas-controller-leader")
        .build()
        .await
        .context("set up leader election")?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(lease = LEASE_NAME, namespace, identity, "waiting to lead");
    while !*leading.borrow_and_update() {
        leading.changed().await.context("leader election stopped")?;
    }
    tracing::info!(identity, "leading");
    Ok(Leadership { leading, task })
}

impl Leadership {
    /// Resolves when leadership is lost (or the election stops).
    pub async fn lost(&self) {
        let mut leading = self.leading.clone();
        while *leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up, so a restarted or standby replica leads at once instead of waiting
    /// for it to expire.
    pub async fn release(self) {
        // Closing the channel makes the manager's task release the Lease and end.
        drop(self.leading);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("leadership released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release leadership"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader election task failed"),
            Err(_) => tracing::warn!("releasing leadership timed out"),
        }
    }
}
