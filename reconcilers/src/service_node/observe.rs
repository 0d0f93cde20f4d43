//! Reads what the ServiceNode loop decides on: the node's Cloud and driver, and its VMs.
//! Network: the cloud only (cached listings; fresh lookups by ID and by tag only while deleting
//! or after a journaled create). The Cloud object comes from the watch cache.

use std::sync::Arc;

use conpaas_cloud::{ComputeDriver, Tags, Vm, VmState};
use conpaas_crds::labels::{
    ANNOTATION_ORPHAN_VM, FINALIZER_VM, MANAGED_BY_VALUE, TAG_MANAGED_BY, TAG_NAMESPACE, TAG_NODE,
};
use conpaas_crds::v1alpha1::{CreditAccount, ServiceNode};
use kube::{Resource, ResourceExt};

use super::plan::{Facts, vm_id};
use super::vm_view::{VmView, current_view, view};
use crate::conditions::Desired;
use crate::error::Error;
use crate::{Context, events};

/// What was observed about one node.
pub struct Observed {
    /// The plan's inputs.
    pub facts: Facts,
    /// The node's driver, when there is one.
    pub driver: Option<Arc<dyn ComputeDriver>>,
    /// The recorded VM as the cloud describes it now (for the status).
    pub vm: VmView,
}

/// Why no VM may be made for `node` yet: no Service of its namespace owns it (a ServiceNode
/// written by hand), its Cloud does not admit its namespace, or its namespace's credits have not
/// paid its first hour.
fn admission(
    ctx: &Context,
    node: &ServiceNode,
    account: Option<&CreditAccount>,
) -> Option<Desired> {
    let ns = node.namespace().unwrap_or_default();
    if !ctx.caches.owned_by_a_service(node) {
        return Some(Desired::new(
            "Ready",
            false,
            "NoOwningService",
            format!(
                "no Service of namespace {ns} owns this node: VMs are made only for the nodes a Service creates"
            ),
        ));
    }
    if let Some(cloud) = ctx.caches.cloud(&node.spec.cloud)
        && let Err(why) = cloud.admits(&ns, &ctx.caches.namespace_labels(&ns))
    {
        return Some(Desired::new("Ready", false, "CloudNotAllowed", why));
    }
    let account = account?;
    if charge_open(account, node) {
        return None;
    }
    let status = account.status.clone().unwrap_or_default();
    Some(match &status.exhausted {
        Some(_) => Desired::new(
            "Ready",
            false,
            "CreditsExhausted",
            format!(
                "the credits of namespace {ns} are exhausted ({} of {} left): no VM is made until CreditAccount {} spec.grant is raised",
                status.balance,
                account.spec.grant,
                conpaas_crds::v1alpha1::CREDIT_ACCOUNT_NAME
            ),
        ),
        None => Desired::new(
            "Ready",
            false,
            "AwaitingCredits",
            "waiting for its first hour to be charged to the namespace's credits",
        ),
    })
}

/// Whether the node's charge in its namespace's credit ledger is open: its VM may be made, and
/// once the node is deleted its finalizer stays until the credits loop closed it, so no
/// deletion goes uncharged.
fn charge_open(account: &CreditAccount, node: &ServiceNode) -> bool {
    let uid = node.uid().unwrap_or_default();
    account
        .status
        .as_ref()
        .and_then(|s| s.charge(&uid))
        .is_some_and(|c| c.end.is_none())
}

/// Observes `node`.
pub async fn observe(ctx: &Context, node: &ServiceNode) -> Result<Observed, Error> {
    let status = node.status.clone().unwrap_or_default();
    // Read once: whether the namespace is metered, and the node's charge.
    let account = ctx
        .caches
        .credit_account(&node.namespace().unwrap_or_default());
    let mut facts = Facts {
        deleting: node.meta().deletion_timestamp.is_some(),
        paused: node.spec.paused,
        has_finalizer: node.finalizers().iter().any(|f| f == FINALIZER_VM),
        // A metered namespace's VMs never outlive their nodes: an orphaned VM would run
        // uncharged.
        orphan_vm: node
            .annotations()
            .get(ANNOTATION_ORPHAN_VM)
            .is_some_and(|v| v == "true")
            && account.is_none(),
        generation_changed: status.observed_generation != node.metadata.generation,
        provider_id: status.provider_id.clone(),
        journaled: status.create_requested_at.is_some(),
        token: node.spec.token.clone(),
        blocked: None,
        charge_open: false,
        gone_recorded: status.terminated_at.is_some(),
        abandoned: false,
        vms: vec![],
    };
    if facts.deleting {
        facts.charge_open = account.as_ref().is_some_and(|a| charge_open(a, node));
    }
    // Only a node that has (or is getting) a VM: one still waiting for admission is refused
    // there instead.
    facts.abandoned = !facts.deleting
        && (facts.provider_id.is_some() || facts.journaled)
        && account.is_some()
        && !ctx.caches.owned_by_a_service(node);
    let mut vm = current_view(node);
    let driver = match driver_for(ctx, node).await {
        Ok(driver) => driver,
        Err(problem) => {
            facts.blocked = Some(problem);
            return Ok(Observed {
                facts,
                driver: None,
                vm,
            });
        }
    };
    if !facts.deleting && facts.provider_id.is_none() && !facts.journaled {
        // Before a VM is made: the node must belong to a Service, on a Cloud its namespace may
        // use, with its first hour paid.
        if let Some(refusal) = admission(ctx, node, account.as_ref()) {
            facts.blocked = Some(refusal);
            return Ok(Observed {
                facts,
                driver: Some(driver),
                vm,
            });
        }
    }
    let idle = (facts.paused && (facts.deleting || facts.provider_id.is_none()))
        || (facts.deleting && !facts.has_finalizer);
    if idle {
        // Nothing will be done with the VMs: do not ask the cloud about them.
    } else if facts.deleting {
        // Only a VM whose tags name this node is terminated or orphaned: a recorded id that
        // names another node's VM is forgotten here, and that VM left alone.
        let mut live = Vec::new();
        if let Some(p) = &facts.provider_id {
            let found = driver
                .get(vm_id(p))
                .await
                .map_err(|source| cloud_error("describe VM", node, source))?;
            match found {
                Some(vm) if !owns(node, &vm) => {
                    tracing::warn!(vm = %vm.id, "the deleted node's status names a VM it does not own: left alone");
                    facts.provider_id = None;
                }
                found => live.extend(found),
            }
        }
        live.extend(tagged(node, driver.as_ref()).await?);
        facts.vms = live;
    } else if let Some(provider_id) = &facts.provider_id {
        let found = ctx
            .vms
            .get(&node.spec.cloud, driver.as_ref(), vm_id(provider_id))
            .await
            .map_err(|source| cloud_error("describe VM", node, source))?;
        vm = match found {
            Some(found) if !owns(node, &found) => {
                // Never adopted: the status is taken as unwritten, and the node's own VM
                // (found by its tags and token, as after a crash) is recorded again, or made.
                tracing::warn!(vm = %found.id, "the node's status names a VM it does not own");
                let refusal = not_owned(&found);
                events::publish(ctx, node, true, &refusal.reason, "AdoptVm", refusal.message).await;
                facts.provider_id = None;
                facts.journaled = true;
                facts.vms = tagged(node, driver.as_ref()).await?;
                return Ok(Observed {
                    facts,
                    driver: Some(driver),
                    vm,
                });
            }
            Some(found) => view(node, &found),
            // Gone behind our back: report it; the Service loop replaces the node.
            None => VmView {
                state: Some(VmState::Terminated),
                ..vm
            },
        };
    } else if facts.journaled {
        facts.vms = tagged(node, driver.as_ref()).await?;
    }
    Ok(Observed {
        facts,
        driver: Some(driver),
        vm,
    })
}

/// The live VMs carrying the node's tags.
async fn tagged(node: &ServiceNode, driver: &dyn ComputeDriver) -> Result<Vec<Vm>, Error> {
    driver
        .list(&node_filter(node))
        .await
        .map_err(|source| cloud_error("list VMs", node, source))
}

/// The node's Cloud (from the watch cache) and its driver, or why there is none.
async fn driver_for(ctx: &Context, node: &ServiceNode) -> Result<Arc<dyn ComputeDriver>, Desired> {
    let Some(cloud) = ctx.caches.cloud(&node.spec.cloud) else {
        return Err(Desired::new(
            "Ready",
            false,
            "CloudNotFound",
            format!(
                "spec.cloud: Cloud {:?} does not exist; its VM cannot be managed",
                node.spec.cloud
            ),
        ));
    };
    ctx.drivers
        .driver(&cloud)
        .await
        .map_err(|why| Desired::new("Ready", false, "CloudUnavailable", why))
}

/// The tags that find this node's VMs and nobody else's.
pub fn node_filter(node: &ServiceNode) -> Tags {
    Tags::from([
        (TAG_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (
            TAG_NAMESPACE.to_string(),
            node.namespace().unwrap_or_default(),
        ),
        (TAG_NODE.to_string(), node.name_any()),
    ])
}

/// Whether `vm` carries the tags that name `node` (the provider's record of who owns it).
pub fn owns(node: &ServiceNode, vm: &Vm) -> bool {
    node_filter(node)
        .iter()
        .all(|(key, value)| vm.tags.get(key) == Some(value))
}

/// The node's recorded VM is another's: it is neither adopted nor ever terminated for this node.
/// Said as a Warning Event; the node's own VM is recorded again.
/// Whose VM it is stays unsaid: the Event is read in the node's namespace, and the other
/// tenant's name is not for it.
fn not_owned(vm: &Vm) -> Desired {
    Desired::new(
        "Ready",
        false,
        "VmNotOwned",
        format!(
            "status.providerId named VM {}, whose tags do not name this node: it is neither \
             adopted nor terminated for this node (the status was written by someone other \
             than the controller); the node's own VM is recorded again",
            vm.id
        ),
    )
}

/// A cloud error, named after the call and the node's Cloud.
pub fn cloud_error(
    operation: &'static str,
    node: &ServiceNode,
    source: conpaas_cloud::CloudError,
) -> Error {
    Error::Cloud {
        operation,
        cloud: node.spec.cloud.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(namespace: &str, name: &str) -> ServiceNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"application": "demo", "service": "hello", "serviceType": "helloworld",
                "role": "node", "cloud": "local", "token": "t"},
        }))
        .unwrap()
    }

    fn vm(tags: Tags) -> Vm {
        Vm {
            id: "vm-1".into(),
            provider_id: "local:///vm-1".into(),
            token: "t".into(),
            state: VmState::Running,
            address: Some("127.0.0.9".into()),
            tags,
            created_at: std::time::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_vm_is_owned_only_when_its_tags_name_the_node() {
        let a = node("a", "hello-node-0");
        let mut tags = node_filter(&a);
        tags.insert("extra".into(), "kept".into());
        assert!(owns(&a, &vm(tags)), "its own VM, whatever else it carries");
        // The same node name in another tenant's namespace, and a VM without tags.
        assert!(!owns(&a, &vm(node_filter(&node("b", "hello-node-0")))));
        assert!(!owns(&a, &vm(Tags::new())));
        let refusal = not_owned(&vm(node_filter(&node("b", "hello-node-0"))));
        assert_eq!(refusal.reason, "VmNotOwned");
        assert!(!refusal.message.contains("\"b\""), "{}", refusal.message);
    }
}
