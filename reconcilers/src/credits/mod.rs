//! The credits loop: one pass per CreditAccount charges the started VM-hours of its namespace's
//! nodes ([`ledger`], pure) and writes the account's status under its resourceVersion, so two
//! writers (a controller killed mid-pass, a leader failing over) can never both charge: the
//! second write is refused and recomputed from what the first one wrote.
//!
//! The other loops read the result from the account's cache: a node's VM is created only once
//! its first hour is charged, its finalizer goes only once its charge is closed, and every
//! Service of an exhausted namespace stops.
//!
//! Network: the API server only.

pub mod ledger;

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::v1alpha1::{CreditAccount, ServiceNode};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use crate::caches::readable;
use crate::error::{Error, KubeResultExt};
use crate::{Context, events};
use ledger::{Clock, MeteredNode};

/// How often an account is looked at when no hour is due sooner (the grant may have changed
/// without a watch event reaching this loop, after a restart).
const IDLE: Duration = Duration::from_secs(300);

/// Reconciles one CreditAccount.
#[tracing::instrument(skip_all, fields(kind = "CreditAccount", namespace = account.namespace().unwrap_or_default(), name = account.name_any()))]
pub async fn reconcile(account: Arc<CreditAccount>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ns = account
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    if account.name_any() != conpaas_crds::v1alpha1::CREDIT_ACCOUNT_NAME {
        // The CRD refuses other names; an object made before that rule is left alone.
        return Ok(Requeue::await_change());
    }
    let nodes: Vec<MeteredNode> = ctx
        .caches
        .nodes_in(&ns)
        .iter()
        .filter_map(readable)
        .filter_map(|n| metered(&ctx, n))
        .collect();
    let clock = Clock {
        now: Timestamp::now(),
        hour: ctx.settings.credit_hour,
    };
    let created = account
        .meta()
        .creation_timestamp
        .as_ref()
        .map_or(clock.now, |t| t.0);
    let previous = account.status.clone().unwrap_or_default();
    let settlement = ledger::settle(
        &account.spec,
        account.meta().generation,
        created,
        &previous,
        &nodes,
        clock,
    );
    if settlement.status != previous {
        let written = write_status(&ctx, &ns, &account, settlement.status.clone()).await;
        match written {
            Ok(()) => {}
            // Someone wrote first: the watch brings what they wrote, and the ledger is
            // recomputed from it.
            Err(e) if e.is_conflict() => return Ok(Requeue::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e),
        }
        publish(&ctx, &account, &previous, &settlement).await;
    }
    let next = settlement.next_due.unwrap_or(IDLE).min(IDLE);
    Ok(Requeue::requeue(next.max(Duration::from_millis(100))))
}

/// A node of the namespace as the ledger charges it: admitted only when a Service of the
/// namespace owns it; renewed and closed whoever owns it now.
fn metered(ctx: &Context, node: &ServiceNode) -> Option<MeteredNode> {
    let meta = node.meta();
    let deleted = meta.deletion_timestamp.as_ref().map(|t| t.0);
    let status = node.status.as_ref();
    let price = ctx
        .caches
        .cloud(&node.spec.cloud)
        .map_or(1, |c| c.node_price(node));
    Some(MeteredNode {
        uid: meta.uid.clone()?,
        name: node.name_any(),
        service: node
            .labels()
            .get(LABEL_SERVICE)
            .cloned()
            .unwrap_or_default(),
        price,
        created: meta.creation_timestamp.as_ref()?.0,
        deleted,
        owned: ctx.caches.owned_by_a_service(node),
        has_vm: status.is_some_and(|s| s.provider_id.is_some() || s.create_requested_at.is_some()),
        vm_gone: status.and_then(|s| s.terminated_at.as_ref()).map(|t| t.0),
    })
}

/// Replaces the status, refused (409) if the account changed since the cache saw it.
async fn write_status(
    ctx: &Context,
    ns: &str,
    account: &CreditAccount,
    status: conpaas_crds::v1alpha1::CreditAccountStatus,
) -> Result<(), Error> {
    let api: Api<CreditAccount> = Api::namespaced(ctx.client.clone(), ns);
    let mut object = CreditAccount::new(&account.name_any(), account.spec.clone());
    object.metadata.namespace = Some(ns.to_string());
    object.metadata.resource_version = account.resource_version();
    object.status = Some(status);
    api.replace_status(&account.name_any(), &PostParams::default(), &object)
        .await
        .ctx(
            "write the status of CreditAccount",
            format!("{ns}/{}", account.name_any()),
        )?;
    Ok(())
}

/// Events for what changed: credits ran out, came back, or fell to 10%.
async fn publish(
    ctx: &Context,
    account: &CreditAccount,
    previous: &conpaas_crds::v1alpha1::CreditAccountStatus,
    settlement: &ledger::Settlement,
) {
    let status = &settlement.status;
    if settlement.newly_exhausted {
        let why = status
            .conditions
            .iter()
            .find(|c| c.type_ == ledger::EXHAUSTED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let note = format!(
            "{why}: every Service of the namespace stops until spec.grant is raised above {}",
            account.spec.grant
        );
        events::publish(ctx, account, true, "CreditsExhausted", "Charge", note).await;
    } else if previous.exhausted.is_some() && status.exhausted.is_none() {
        let note = format!(
            "the grant is now {}: the namespace's Services start again",
            account.spec.grant
        );
        events::publish(ctx, account, false, "CreditsAvailable", "Charge", note).await;
    }
    if settlement.low {
        let note = format!(
            "{} of {} credits left (10% or less), burning {} per hour",
            status.balance, account.spec.grant, status.burn_rate
        );
        events::publish(ctx, account, true, "CreditsLow", "Charge", note).await;
    }
}
