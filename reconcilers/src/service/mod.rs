//! The Service loop: observe -> validate -> plan (pure) -> act -> status.
//!
//! Network: `observe` and `act` talk to the API server; `validate`, `plan` and the status
//! builder are pure. No step ever calls a cloud: VMs belong to the ServiceNode loop.

pub mod act;
pub mod scaling_memo;
pub mod secrets;

pub use conpaas_planner::service::{Preview, decide, observe, outcome, plan, status, validate};

use std::sync::Arc;

use conpaas_crds::labels::{
    ANNOTATION_ORPHAN_VM, ANNOTATION_ROLLED_BACK_FROM, ANNOTATION_SAVED_DATA, FINALIZER_NODES,
};
use conpaas_crds::v1alpha1::{DeletionPolicy, SavedData, Service, ServiceNode, saves_with};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use serde_json::json;

use crate::caches::readable;
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::{Context, credits, events, finalizers, status_apply};

use outcome::CONVERGING;

/// Reconciles one Service.
#[tracing::instrument(skip_all, fields(kind = "Service", namespace = service.namespace().unwrap_or_default(), name = service.name_any()))]
pub async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let (service, ctx) = (service.as_ref(), ctx.as_ref());
    let ns = service
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);

    if service.metadata.deletion_timestamp.is_some() {
        return delete_nodes_then_release(ctx, &api, service, &ns).await;
    }
    finalizers::add(&api, service, FINALIZER_NODES).await?;
    secrets::ensure(ctx, service).await?;

    // One trip down to the decision and one back: observe from the caches, decide (pure: node
    // actions, rollback, status, Events, the next look), then carry it out.
    let Preview {
        actions,
        rollback,
        status,
        events,
        requeue,
        ..
    } = decide(
        &with_latest_scaling(ctx, service),
        observe_cached(ctx, service, &ns).await?,
    );
    if !actions.is_empty() {
        tracing::debug!(?actions, "plan");
        act::act(ctx, service, actions).await?;
    }
    if let Some(rollback) = &rollback {
        roll_back(&api, service, rollback).await?;
    }
    for note in events {
        events::publish(
            ctx,
            service,
            note.warning,
            &note.reason,
            note.action,
            note.note,
        )
        .await;
    }
    if status != service.status.clone().unwrap_or_default() {
        status_apply::apply(&api, service, &status).await?;
        ctx.scaling_written.remember(service, &status.autoscaling);
    }
    if let Some(saved) = &status.saved_data {
        list_save(&api, service, saved).await?;
    }
    Ok(Requeue::requeue(requeue))
}

/// Lists a recorded save in the Service's annotation ([`ANNOTATION_SAVED_DATA`]) once, after
/// the status records it: the store then keeps it even if the status is lost.
async fn list_save(api: &Api<Service>, service: &Service, saved: &SavedData) -> Result<(), Error> {
    let listed = service.annotations().get(ANNOTATION_SAVED_DATA);
    let Some(value) = saves_with(listed.map(String::as_str), saved) else {
        return Ok(());
    };
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_SAVED_DATA: value}}});
    api.patch(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .ctx("list the save", service.name_any())?;
    Ok(())
}

/// Observes `service` from the watch caches: no LIST or GET, but for a ConfigMap that holds the
/// active code version.
async fn observe_cached(
    ctx: &Context,
    service: &Service,
    ns: &str,
) -> Result<observe::Observed, Error> {
    let nodes = ctx.caches.nodes_of(ns, &service.name_any());
    let services = if service.spec.links.is_empty() {
        Vec::new()
    } else {
        ctx.caches.services_in(ns)
    };
    let objects = observe::Objects {
        application: ctx.caches.application(ns, &service.spec.application),
        clouds: ctx.caches.cloud_names(),
        services: services.iter().filter_map(readable).collect(),
        nodes: nodes.iter().filter_map(readable).collect(),
        tenancy: tenancy(ctx, ns, service, &nodes),
    };
    let code = observe::resolve_code(&ctx.client, ns, service).await?;
    let heartbeats = |node: &ServiceNode| crate::service_node::heartbeat(ctx, node);
    Ok(observe::from_objects(
        service,
        objects,
        code,
        &heartbeats,
        &Timestamp::now(),
    ))
}

/// The Service with the autoscaler's latest decisions ([`scaling_memo`]); itself when it does
/// not autoscale.
fn with_latest_scaling<'a>(ctx: &Context, service: &'a Service) -> std::borrow::Cow<'a, Service> {
    if service.spec.autoscaling.is_empty() {
        return std::borrow::Cow::Borrowed(service);
    }
    let mut latest = service.clone();
    latest
        .status
        .get_or_insert_with(Default::default)
        .autoscaling = ctx.scaling_written.latest(service);
    std::borrow::Cow::Owned(latest)
}

/// What the namespace may use, from the caches: the Clouds that do not admit it, and whether its
/// credits ran out.
fn tenancy(
    ctx: &Context,
    ns: &str,
    service: &Service,
    nodes: &[Arc<DeserializeGuard<ServiceNode>>],
) -> observe::Tenancy {
    let labels = ctx.caches.namespace_labels(ns);
    let refused_clouds = ctx
        .caches
        .clouds
        .state()
        .iter()
        .filter_map(readable)
        .filter_map(|c| Some((c.name_any(), c.admits(ns, &labels).err()?)))
        .collect();
    let account = ctx.caches.credit_account(ns);
    let priced = match account {
        None => Default::default(),
        Some(_) => ctx
            .caches
            .clouds
            .state()
            .iter()
            .filter_map(readable)
            // A Cloud that prices only volumes prices no instance type: any type may run.
            .filter(|c| c.priced_types().next().is_some())
            .map(|c| {
                let priced = observe::PricedTypes {
                    types: c.priced_types().cloned().collect(),
                    default_type: c.default_instance_type(),
                };
                (c.name_any(), priced)
            })
            .collect(),
    };
    let mut tenancy = observe::Tenancy {
        refused_clouds,
        priced,
        credits_exhausted: account.as_ref().and_then(observe::exhausted),
        credit_hour: ctx.settings.credit_hour,
        ..Default::default()
    };
    // The rest is what the autoscaler spends and when paid hours end: only it reads them.
    if service.spec.autoscaling.is_empty() {
        return tenancy;
    }
    let hour = ctx.settings.credit_hour;
    let name = service.name_any();
    let ledger = account.and_then(|a| a.status);
    // When each node's paid hours end: from its charge, or (unmetered) from its age.
    tenancy.paid_until = nodes
        .iter()
        .filter_map(readable)
        .filter_map(|n| {
            let until = match &ledger {
                Some(l) => {
                    let c = l.charge(n.uid().as_deref()?)?;
                    c.start
                        .0
                        .checked_add(hour.checked_mul(c.hours as u32)?)
                        .ok()?
                }
                None => {
                    let created = n.metadata.creation_timestamp.as_ref()?.0;
                    let hours = credits::ledger::hours_begun(created, Timestamp::now(), hour);
                    created.checked_add(hour.checked_mul(hours as u32)?).ok()?
                }
            };
            Some((n.name_any(), until))
        })
        .collect();
    tenancy.price = ledger
        .as_ref()
        .and_then(|l| {
            l.ledger
                .iter()
                .filter(|c| c.service == name && c.end.is_none())
                .map(|c| c.price)
                .max()
        })
        .unwrap_or(1);
    // What the nodes running now need for their next hour is not the autoscaler's to spend.
    tenancy.balance = ledger.as_ref().map(|l| l.balance - l.burn_rate);
    tenancy
}

/// Sets `spec.code.active` back as the decision says, noting the failed version so the Service
/// is never rolled back to it; refused if the Service changed since it was read (a version
/// activated meanwhile wins).
async fn roll_back(
    api: &Api<Service>,
    service: &Service,
    rollback: &outcome::Rollback,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": service.resource_version(),
            "annotations": {ANNOTATION_ROLLED_BACK_FROM: rollback.failed},
        },
        "spec": {"code": {"active": rollback.to}},
    });
    api.patch(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .ctx("roll back the code version", finalizers::full_name(service))?;
    tracing::warn!(note = %rollback.note(), "rolled back");
    Ok(())
}

async fn delete_nodes_then_release(
    ctx: &Context,
    api: &Api<Service>,
    service: &Service,
    ns: &str,
) -> Result<Requeue, Error> {
    let cached = ctx.caches.nodes_of(ns, &service.name_any());
    let nodes: Vec<&ServiceNode> = cached.iter().filter_map(readable).collect();
    if nodes.is_empty() {
        finalizers::remove(api, service, FINALIZER_NODES).await?;
        return Ok(Requeue::await_change());
    }
    let node_api: Api<ServiceNode> = Api::namespaced(ctx.client.clone(), ns);
    let orphan = service.spec.deletion_policy == DeletionPolicy::Orphan;
    for node in nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
    {
        if orphan && !node.annotations().contains_key(ANNOTATION_ORPHAN_VM) {
            // Marked before the delete: the node's finalizer then releases its VM instead.
            let mark = json!({"metadata": {"annotations": {ANNOTATION_ORPHAN_VM: "true"}}});
            node_api
                .patch(
                    &node.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&mark),
                )
                .await
                .ctx(
                    "mark node to orphan its VM",
                    format!("{ns}/{}", node.name_any()),
                )?;
        }
        match node_api
            .delete(&node.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(e).ctx("delete service node", format!("{ns}/{}", node.name_any()));
            }
        }
    }
    Ok(Requeue::requeue(CONVERGING))
}
