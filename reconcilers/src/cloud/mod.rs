//! The Cloud loop: says which provider a Cloud selects and whether this controller can use it
//! (a driver can be built: the backend is compiled in and its settings are complete), counts
//! its nodes, and sweeps its orphan VMs ([`sweep`]).
//!
//! Network: the API server, and the Cloud through its driver (one list call per sweep).

pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::labels::conditions::READY;
use conpaas_crds::labels::{FINALIZER_NODES, MANAGER_CONTROLLER};
use conpaas_crds::v1alpha1::{Cloud, CloudStatus, ServiceNode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions::{Desired, merge};
use crate::error::{Error, KubeResultExt};
use crate::{Context, finalizers};

/// Reconciles one Cloud.
#[tracing::instrument(skip_all, fields(kind = "Cloud", name = cloud.name_any()))]
pub async fn reconcile(cloud: Arc<Cloud>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let _metrics = ctx.metrics.reconcile("Cloud");
    let api: Api<Cloud> = Api::all(ctx.client.clone());
    let nodes = Api::all(ctx.client.clone());
    let name = cloud.name_any();
    let (all_nodes, unreadable) = crate::guard::list::<ServiceNode>(&nodes, &ListParams::default())
        .await
        .ctx("list service nodes", "")?;
    let count = all_nodes
        .iter()
        .filter(|n| n.spec.cloud == name && n.metadata.deletion_timestamp.is_none())
        .count();
    // Nodes need their Cloud to terminate their VMs, so a deleted Cloud stays until none is
    // left (`kubectl delete -f` of a whole example deletes the Cloud first).
    let holders = all_nodes.iter().filter(|n| n.spec.cloud == name).count();
    let deleting = cloud.metadata.deletion_timestamp.is_some();
    if deleting && holders == 0 {
        finalizers::remove(&api, cloud.as_ref(), FINALIZER_NODES).await?;
        return Ok(Requeue::await_change());
    }
    if !deleting {
        finalizers::add(&api, cloud.as_ref(), FINALIZER_NODES).await?;
    }
    let driver = ctx.drivers.driver(&cloud).await;
    // The sweep's listing is also the check that the cloud answers and takes our credentials.
    let swept = match &driver {
        Ok(driver) => {
            let claims = sweep::claims(&all_nodes, &unreadable);
            sweep::sweep(&ctx, &cloud, driver.as_ref(), &claims)
                .await
                .map(|_| ())
        }
        Err(_) => Ok(()),
    };
    let condition = match (driver, &swept) {
        _ if deleting => Desired::new(
            READY,
            false,
            "Deleting",
            format!("waiting for {holders} nodes to terminate their VMs before the Cloud goes"),
        ),
        (Ok(_), Err(e)) => Desired::new(READY, false, "CloudUnavailable", e.chain()),
        (Ok(_), Ok(())) => Desired::new(
            READY,
            true,
            "DriverReady",
            format!(
                "the {} driver is ready",
                cloud.spec.provider().unwrap_or("?")
            ),
        ),
        (Err(why), _) => Desired::new(READY, false, "DriverUnavailable", why),
    };
    let previous = cloud.status.clone().unwrap_or_default();
    let status = CloudStatus {
        provider: cloud.spec.provider().map(Into::into),
        nodes: Some(count as i32),
        conditions: merge(
            &previous.conditions,
            vec![condition],
            cloud.meta().generation,
            &Time(Timestamp::now()),
        ),
    };
    if status != previous {
        let patch = json!({"apiVersion": Cloud::api_version(&()), "kind": Cloud::kind(&()), "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .ctx("patch status", &name)?;
    }
    swept?;
    ctx.backoff.succeeded(&format!("cloud/{name}"));
    let again = if deleting { 2 } else { 60 };
    Ok(Requeue::requeue(Duration::from_secs(again)))
}

/// What to do after a failed reconcile: back off per object.
pub fn error_policy(cloud: Arc<Cloud>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.failed("Cloud", error.category());
    let key = format!("cloud/{}", finalizers::full_name(cloud.as_ref()));
    let wait = ctx.backoff.failed(&key);
    tracing::warn!(error = %error, category = error.category(), retry_in = ?wait, object = %key, "reconcile failed");
    Requeue::requeue(wait)
}
