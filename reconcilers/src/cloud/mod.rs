//! The Cloud loop: observe -> plan (pure) -> act -> status. It says which provider a Cloud
//! selects and whether this controller can use it (a driver can be built and its listing
//! answers), counts its nodes, keeps it while nodes need it, and sweeps its orphan VMs
//! ([`sweep`]). A refused listing shows on the Cloud's Ready condition with the provider's
//! message, and as an Event.
//!
//! Network: the API server, and the Cloud through its driver (one list call per pass).

pub mod plan;
pub mod sweep;

use std::sync::Arc;
use std::time::SystemTime;

use conpaas_cloud::{ComputeDriver, Tags};
use conpaas_crds::labels::{
    FINALIZER_NODES, MANAGED_BY_VALUE, TAG_MANAGED_BY, TAG_NAMESPACE, TAG_NODE,
};
use conpaas_crds::v1alpha1::{Cloud, CloudStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use crate::conditions::merge;
use crate::error::Error;
use crate::{Context, events, finalizers, status_apply};
use plan::CloudAction;

/// Reconciles one Cloud.
#[tracing::instrument(skip_all, fields(kind = "Cloud", name = cloud.name_any()))]
pub async fn reconcile(cloud: Arc<Cloud>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let api: Api<Cloud> = Api::all(ctx.client.clone());
    let (facts, driver, listing_error) = observe(&ctx, &cloud).await?;
    let plan = plan::plan(&facts, SystemTime::now(), ctx.settings.orphan_grace);

    for action in plan.actions {
        match action {
            CloudAction::AddFinalizer => {
                finalizers::add(&api, cloud.as_ref(), FINALIZER_NODES).await?
            }
            CloudAction::DropFinalizer => {
                finalizers::remove(&api, cloud.as_ref(), FINALIZER_NODES).await?
            }
            CloudAction::TerminateOrphan(vm) => {
                let driver = driver.as_deref().ok_or(Error::MissingField("a driver"))?;
                terminate_orphan(&ctx, &cloud, driver, &vm).await?;
            }
        }
    }

    if let Some(ready) = plan.ready {
        let previous = cloud.status.clone().unwrap_or_default();
        let status = CloudStatus {
            provider: facts.provider.clone(),
            nodes: Some(facts.nodes as i32),
            conditions: merge(
                &previous.conditions,
                vec![ready.clone()],
                cloud.meta().generation,
                &Time(Timestamp::now()),
            ),
        };
        if status != previous {
            status_apply::apply(&api, cloud.as_ref(), &status).await?;
            let was = previous.conditions.first();
            let flipped =
                was.is_none_or(|c| c.reason != ready.reason || c.message != ready.message);
            if !ready.status && flipped {
                events::publish(
                    &ctx,
                    cloud.as_ref(),
                    true,
                    &ready.reason,
                    "Reconcile",
                    ready.message.clone(),
                )
                .await;
            }
        }
    }
    // A listing that failed for a passing reason is retried with backoff; a refusal that repeats
    // (credentials) is looked at again at the usual pace, and its condition says why.
    if let Some(error) = listing_error
        && !error.is_permanent()
    {
        return Err(error);
    }
    Ok(plan
        .next
        .map_or_else(Requeue::await_change, Requeue::requeue))
}

/// Reads the Cloud's nodes (all of them: one driver may serve several Clouds, so any node may
/// claim a VM it lists), its driver, and its listing of our VMs.
async fn observe(
    ctx: &Context,
    cloud: &Cloud,
) -> Result<(plan::Facts, Option<Arc<dyn ComputeDriver>>, Option<Error>), Error> {
    let name = cloud.name_any();
    let (all_nodes, unreadable) = ctx.caches.all_nodes();
    let on_cloud = || all_nodes.iter().filter(|n| n.spec.cloud == name);
    let deleting = cloud.metadata.deletion_timestamp.is_some();
    let mut facts = plan::Facts {
        deleting,
        has_finalizer: cloud.finalizers().iter().any(|f| f == FINALIZER_NODES),
        provider: cloud.spec.provider().map(Into::into),
        holders: on_cloud().count(),
        nodes: on_cloud()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .count(),
        driver_problem: None,
        listing: None,
        claims: sweep::claims(&all_nodes, &unreadable),
    };
    if deleting {
        return Ok((facts, None, None));
    }
    let driver = match ctx.drivers.driver(cloud).await {
        Ok(driver) => driver,
        Err(why) => {
            facts.driver_problem = Some(why);
            return Ok((facts, None, None));
        }
    };
    let ours = Tags::from([(TAG_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())]);
    let mut listing_error = None;
    facts.listing = Some(match driver.list(&ours).await {
        Ok(vms) => Ok(vms),
        Err(source) => {
            let error = Error::Cloud {
                operation: "list VMs",
                cloud: name.clone(),
                source,
            };
            let why = error.chain();
            listing_error = Some(error);
            Err(why)
        }
    });
    Ok((facts, Some(driver), listing_error))
}

async fn terminate_orphan(
    ctx: &Context,
    cloud: &Cloud,
    driver: &dyn ComputeDriver,
    vm: &conpaas_cloud::Vm,
) -> Result<(), Error> {
    tracing::warn!(vm = %vm.provider_id, "terminating orphan VM");
    driver.delete(&vm.id).await.map_err(|source| Error::Cloud {
        operation: "terminate VM",
        cloud: cloud.name_any(),
        source,
    })?;
    let owner = format!(
        "{}/{}",
        vm.tags.get(TAG_NAMESPACE).map_or("?", String::as_str),
        vm.tags.get(TAG_NODE).map_or("?", String::as_str)
    );
    let note = format!(
        "terminated VM {} tagged for {owner}, which no ServiceNode claims",
        vm.provider_id
    );
    events::publish(ctx, cloud, true, "OrphanSwept", "DeleteVm", note).await;
    Ok(())
}
