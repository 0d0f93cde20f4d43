//! The orphan sweep's judgement: VMs that carry our `managed-by` tag but that no ServiceNode
//! claims (same namespace, node name and token) are orphans once older than a grace period. VMs
//! without our tag are never listed, so never touched. Pure; the Cloud loop lists and terminates.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use conpaas_cloud::{Vm, VmState};
use conpaas_crds::labels::{TAG_NAMESPACE, TAG_NODE, TAG_ORPHANED};
use conpaas_crds::v1alpha1::ServiceNode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

/// A ServiceNode's claim on VMs: its namespace and name, and its token when the node could be
/// read (an unreadable node claims every VM tagged with its name, so none of them is swept).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    namespace: String,
    name: String,
    token: Option<String>,
}

/// The claims of every node, readable or not.
pub fn claims(nodes: &[ServiceNode], unreadable: &[ObjectMeta]) -> Vec<Claim> {
    let readable = nodes.iter().map(|n| Claim {
        namespace: n.namespace().unwrap_or_default(),
        name: n.name_any(),
        token: Some(n.spec.token.clone()),
    });
    let unknown = unreadable.iter().map(|m| Claim {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        token: None,
    });
    readable.chain(unknown).collect()
}

/// The VMs of `vms` no claim covers and older than `grace`. Pure.
pub fn orphans<'a>(
    vms: &'a [Vm],
    claims: &[Claim],
    now: SystemTime,
    grace: Duration,
) -> Vec<&'a Vm> {
    let claimed: HashSet<&Claim> = claims.iter().collect();
    vms.iter()
        .filter(|vm| vm.state != VmState::Terminated)
        // Left running on purpose by `deletionPolicy: Orphan`.
        .filter(|vm| !vm.tags.contains_key(TAG_ORPHANED))
        .filter(|vm| {
            let tag = |k: &str| vm.tags.get(k).cloned().unwrap_or_default();
            let (namespace, name) = (tag(TAG_NAMESPACE), tag(TAG_NODE));
            let exact = Claim {
                namespace: namespace.clone(),
                name: name.clone(),
                token: Some(vm.token.clone()),
            };
            let any = Claim {
                namespace,
                name,
                token: None,
            };
            !claimed.contains(&exact) && !claimed.contains(&any)
        })
        .filter(|vm| now.duration_since(vm.created_at).unwrap_or_default() >= grace)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use conpaas_cloud::Tags;
    use conpaas_crds::labels::{MANAGED_BY_VALUE, TAG_MANAGED_BY};

    /// A running VM of ours tagged for `namespace/node`, `age` seconds old at t = 1000 s.
    pub(crate) fn vm(namespace: &str, node: &str, token: &str, age: u64) -> Vm {
        Vm {
            id: token.into(),
            provider_id: format!("memory:///{token}"),
            token: token.into(),
            state: VmState::Running,
            address: None,
            tags: Tags::from([
                (TAG_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
                (TAG_NAMESPACE.to_string(), namespace.to_string()),
                (TAG_NODE.to_string(), node.to_string()),
            ]),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age),
        }
    }

    fn orphaned(mut vm: Vm) -> Vm {
        vm.tags.insert(TAG_ORPHANED.to_string(), "true".to_string());
        vm
    }

    fn node(namespace: &str, name: &str, token: &str) -> ServiceNode {
        let mut n = ServiceNode::new(name, conpaas_planner::fixtures::node_spec(token));
        n.metadata.namespace = Some(namespace.into());
        n
    }

    #[test]
    fn only_unclaimed_vms_past_the_grace_period_are_orphans() {
        let vms = vec![
            vm("ns", "s-node-0", "t0", 600),           // claimed
            vm("ns", "s-node-1", "t1", 600),           // node gone: orphan
            vm("ns", "s-node-2", "old", 600),          // node re-created with a new token: orphan
            vm("other", "s-node-0", "t0", 600),        // same name, other namespace: orphan
            vm("ns", "s-node-3", "t3", 10),            // unclaimed but young: spared
            vm("ns", "s-node-4", "t4", 600),           // its node cannot be read: spared
            orphaned(vm("ns", "s-node-5", "t5", 600)), // left running by deletionPolicy: Orphan
        ];
        let nodes = vec![node("ns", "s-node-0", "t0"), node("ns", "s-node-2", "new")];
        let unreadable = vec![ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("s-node-4".into()),
            ..Default::default()
        }];
        let claims = claims(&nodes, &unreadable);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let found: Vec<(&str, &str)> = orphans(&vms, &claims, now, Duration::from_secs(120))
            .iter()
            .map(|v| (v.tags[TAG_NAMESPACE].as_str(), v.token.as_str()))
            .collect();
        assert_eq!(found, vec![("ns", "t1"), ("ns", "old"), ("other", "t0")]);
    }
}
