//! The ServiceNode loop owns the node's VM: observe -> plan (pure) -> act -> status.
//!
//! - [`observe`]: the node's Cloud and driver; its VM from the shared listing, or by ID and tag
//!   while deleting and after a journaled create.
//! - [`plan`]: finalizer, credentials, journal, create or adopt, terminate or orphan, release.
//! - [`act`]: performs the plan; a created VM's provider ID is recorded at once.
//! - [`status`]: the VM, the agent's heartbeat and report, as Ready and Healthy.
//!
//! A failed cloud call reaches the node's Ready condition (`Provider<category>` with the
//! provider's message) and an Event; a permanent one is tried again when the node or its Cloud
//! changes, and otherwise only every 10 minutes.
//!
//! Network: the API server, and the node's Cloud through its driver.

pub mod act;
pub mod credentials;
pub mod lease_clock;
pub mod observe;
pub mod parked_memo;
pub mod plan;
pub mod ready_memo;
pub mod recorded_memo;
pub mod status;
pub mod vm_cache;
pub mod vm_view;

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::v1alpha1::ServiceNode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;

use crate::error::Error;
use crate::{Context, events, status_apply};
use plan::{Next, StatusUpdate};

/// Reconciles one ServiceNode.
#[tracing::instrument(skip_all, fields(kind = "ServiceNode", namespace = node.namespace().unwrap_or_default(), name = node.name_any()))]
pub async fn reconcile(node: Arc<ServiceNode>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // The Cloud as this pass starts (shared from the cache, not copied: every pass reads it).
    let cached = ctx.caches.clouds.get(&ObjectRef::new(&node.spec.cloud));
    let cloud = cached.as_ref().and_then(|c| c.0.as_ref().ok());
    if let Some(left) = ctx.parked.holds(&node, cloud) {
        return Ok(Requeue::requeue(left));
    }
    let now = Time(Timestamp::now());
    let result = pipeline(&node, &ctx, &now).await;
    match &result {
        Err(error) => {
            // Only a node without a VM: one with a VM must keep being looked at (its health).
            let has_vm = node
                .status
                .as_ref()
                .is_some_and(|s| s.provider_id.is_some());
            if error.is_permanent() && !has_vm {
                ctx.parked.park(&node, cloud);
            }
            report_failure(&ctx, &node, error, &now).await;
        }
        Ok(_) => ctx.parked.forget(&node),
    }
    result
}

async fn pipeline(node: &ServiceNode, ctx: &Context, now: &Time) -> Result<Requeue, Error> {
    if ctx.vms_recorded.lagging(node) {
        // Its update is on the way (and wakes this node): nothing to decide from an old copy.
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let observed = observe::observe(ctx, node).await?;
    let plan = plan::plan(&observed.facts);
    if !plan.actions.is_empty() {
        tracing::debug!(actions = ?plan.actions, "plan");
    }
    act::act(ctx, node, observed.driver.as_deref(), plan.actions, now).await?;

    let status = match plan.status {
        StatusUpdate::Unchanged => None,
        StatusUpdate::Observed => Some(status::build(
            node,
            &observed.vm,
            heartbeat(ctx, node).as_ref(),
            now,
        )),
        StatusUpdate::Blocked(problem) => {
            let built = status::build(node, &observed.vm, None, now);
            Some(status::with_ready(node, built, problem, now))
        }
        StatusUpdate::Gone => Some(status::gone(node, now)),
    };
    if let Some(status) = status {
        let (status, first_ready) = ctx.ready_written.settle(node, status);
        if status::changed(node, &status)
            && let Err(e) = status_apply::apply(&api(ctx, node)?, node, &status).await
        {
            // Not written: the next pass records the first Ready again.
            if first_ready.is_some() {
                ctx.ready_written.forget(node);
            }
            return Err(e);
        }
        if let Some(seconds) = first_ready {
            ctx.metrics.node_ready(seconds);
        }
    }
    Ok(match plan.next {
        Next::AwaitChange => Requeue::await_change(),
        Next::After(wait) => Requeue::requeue(wait),
        // Look again within half a heartbeat timeout, so a silent agent is noticed in time.
        Next::Resync => {
            let timeout = Duration::from_secs(node.spec.heartbeat_timeout_seconds.max(1) as u64);
            Requeue::requeue(ctx.settings.node_resync.min(timeout / 2))
        }
    })
}

/// Shows a failed cloud call where the user looks: the node's Ready condition carries the
/// provider's message ([`status::failure_status`]) and an Event says it, once. The node is read
/// again first: the pass may have written its status (the journal before a create), and the
/// failure is written over that, keeping the journal (the create may have happened).
async fn report_failure(ctx: &Context, node: &ServiceNode, error: &Error, now: &Time) {
    let Ok(api) = api(ctx, node) else {
        return;
    };
    let node = match api.get_status(&node.name_any()).await {
        Ok(fresh) => fresh,
        Err(e) if crate::error::is_not_found(&e) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the node to report the cloud's refusal");
            return;
        }
    };
    let Some((reason, failed)) = status::failure_status(&node, error, now) else {
        return;
    };
    if !status::changed(&node, &failed) {
        return;
    }
    if let Err(e) = status_apply::apply(&api, &node, &failed).await {
        tracing::warn!(error = %e.chain(), "could not report the cloud's refusal on the node");
    }
    events::publish(ctx, &node, true, &reason, "Reconcile", error.chain()).await;
}

fn api(ctx: &Context, node: &ServiceNode) -> Result<Api<ServiceNode>, Error> {
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    Ok(Api::namespaced(ctx.client.clone(), &ns))
}

/// When the node's agent last renewed its heartbeat Lease.
pub fn heartbeat(ctx: &Context, node: &ServiceNode) -> Option<Timestamp> {
    let key = ObjectRef::<Lease>::new(&node.name_any()).within(&node.namespace()?);
    ctx.leases
        .get(&key)?
        .spec
        .as_ref()?
        .renew_time
        .as_ref()
        .map(|t| t.0)
}
