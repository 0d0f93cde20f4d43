//! The Service loop: observe -> validate -> plan (pure) -> act -> status.
//!
//! Network: `observe` and `act` talk to the API server; `validate`, `plan` and the status
//! builder are pure. No step ever calls a cloud: VMs belong to the ServiceNode loop.

pub mod act;
pub mod scaling_memo;
pub mod secrets;

pub use conpaas_planner::service::{Preview, decide, observe, plan, status, validate};

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::labels::{ANNOTATION_ORPHAN_VM, ANNOTATION_ROLLED_BACK_FROM, FINALIZER_NODES};
use conpaas_crds::v1alpha1::{DeletionPolicy, Phase};
use conpaas_crds::v1alpha1::{Service, ServiceNode};
use conpaas_planner::service::plan::Action;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::caches::readable;
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::{Context, credits, events, finalizers, status_apply};

/// How soon to look again while nodes come and go. A node's change may wake this loop before
/// the node cache shows it (they are separate watches), and its removal wakes nothing that the
/// cache has seen: reading the cache again is cheap, and the last change is never missed.
const CONVERGING: Duration = Duration::from_secs(2);

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

    let Preview {
        mut observed,
        desired,
        actions,
        scaling,
    } = decide(
        &with_latest_scaling(ctx, service),
        observe_cached(ctx, service, &ns).await?,
    );
    // A node re-specced now is not ready for its new spec until its agent applied it (its Ready
    // condition turns False only when the node loop sees the change): the status must not call
    // the Service Ready on the old one (a proxy not yet routing to a new backend).
    for action in &actions {
        if let Action::PatchNodeSpec { name, .. } = action
            && let Some(node) = observed.nodes.iter_mut().find(|n| &n.name == name)
        {
            node.settled = false;
        }
    }
    if !actions.is_empty() {
        tracing::debug!(?actions, "plan");
        act::act(ctx, service, actions).await?;
    }

    if let Ok(desired) = &desired
        && !desired.paused
    {
        roll_back_if_failed(ctx, &api, service, desired, &observed.nodes).await?;
    }

    let previous = service.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let mut status = status::build(
        &previous,
        service.meta().generation,
        &desired,
        &observed.nodes,
        &now,
    );
    status::set_scale(&mut status, &service.name_any(), service.spec.r#type);
    status.autoscaling = scaling.roles.clone();
    for change in &scaling.changes {
        events::publish(ctx, service, false, "Autoscaled", "Scale", change.clone()).await;
    }
    if status != previous {
        if status.phase != previous.phase {
            let warning = desired.is_err();
            let note = format!(
                "{}: {}",
                status.phase.as_str(),
                status.conditions[0].message
            );
            events::publish(
                ctx,
                service,
                warning,
                &status.conditions[0].reason,
                "Reconcile",
                note,
            )
            .await;
        }
        if let Some(failed) = newly_failed_rollout(&previous, &status) {
            events::publish(ctx, service, true, "RolloutFailed", "Rollout", failed).await;
        }
        status_apply::apply(&api, service, &status).await?;
        ctx.scaling_written.remember(service, &status.autoscaling);
    }
    // Missing Applications and Clouds are not watched, and a node's health only ages: look again.
    let converging = matches!(
        status.phase,
        Phase::Prologue | Phase::Adapting | Phase::Epilogue
    );
    let next = match desired {
        Err(_) => Duration::from_secs(5),
        Ok(_) if converging => CONVERGING,
        Ok(_) => observed
            .next_health_check
            .unwrap_or(Duration::from_secs(300)),
    };
    // An autoscaling window, cool-down or paid hour ending is looked at when it ends.
    let next = scaling
        .next_look
        .map_or(next, |at| next.min(at.max(Duration::from_millis(200))));
    Ok(Requeue::requeue(next))
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
    let mut tenancy = observe::Tenancy {
        refused_clouds,
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

/// With `rollout.onFailure: Rollback`, a version that failed on a node makes the Service
/// activate the version active before it, by itself: `spec.code.active` is set back (so what
/// the Service says it runs stays true) and an Event says why.
async fn roll_back_if_failed(
    ctx: &Context,
    api: &Api<Service>,
    service: &Service,
    desired: &plan::Desired,
    nodes: &[plan::ObservedNode],
) -> Result<(), Error> {
    let previous = service
        .status
        .as_ref()
        .and_then(|s| s.previous_code_version.as_deref());
    let versions: Vec<&str> = service
        .spec
        .code
        .iter()
        .flat_map(|c| c.versions.iter().map(|v| v.name.as_str()))
        .collect();
    let Some(to) = plan::rollback_to(desired, nodes, previous, &versions) else {
        return Ok(());
    };
    // Never back to a version this Service was rolled back from: when both fail, the rollout
    // stops instead of switching between them for ever.
    if service
        .annotations()
        .get(ANNOTATION_ROLLED_BACK_FROM)
        .map(String::as_str)
        == Some(to)
    {
        return Ok(());
    }
    let failed = desired
        .config
        .code
        .as_ref()
        .map(|c| c.version.as_str())
        .unwrap_or_default();
    // Refused if the Service changed since it was read: a version activated meanwhile wins.
    let patch = json!({
        "metadata": {
            "resourceVersion": service.resource_version(),
            "annotations": {ANNOTATION_ROLLED_BACK_FROM: failed},
        },
        "spec": {"code": {"active": to}},
    });
    api.patch(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .ctx("roll back the code version", finalizers::full_name(service))?;
    let note =
        format!("code version {failed} failed; activated {to}, the version active before it");
    tracing::warn!(%note, "rolled back");
    events::publish(ctx, service, true, "RolledBack", "Rollout", note).await;
    Ok(())
}

/// The message of a Progressing condition that turned `RolloutFailed` with this status.
fn newly_failed_rollout(
    previous: &conpaas_crds::v1alpha1::ServiceStatus,
    status: &conpaas_crds::v1alpha1::ServiceStatus,
) -> Option<String> {
    let failed = |s: &conpaas_crds::v1alpha1::ServiceStatus| {
        conpaas_crds::v1alpha1::find_condition(
            &s.conditions,
            conpaas_crds::labels::conditions::PROGRESSING,
        )
        .filter(|c| c.reason == "RolloutFailed")
        .map(|c| c.message.clone())
    };
    failed(status).filter(|now| failed(previous).as_ref() != Some(now))
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
