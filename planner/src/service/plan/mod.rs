//! The pure middle of the Service loop: from what the Service asks for and the ServiceNodes that
//! exist, the list of node actions that moves one towards the other. No I/O; table-tested.
//!
//! Rules, per role:
//! - unhealthy nodes (VM failed or gone, heartbeat stale) are deleted and replaced under the
//!   same role (a generic master is replaced, never dropped) — unless more than the Service's
//!   `maxUnhealthyPercent` of its nodes are unhealthy at once, when nothing is replaced, or the
//!   node keeps data no Ready node has a copy of, when it is kept ([`data_safety`]);
//! - nodes whose placement (cloud, instance type, volume) no longer matches are replaced: all
//!   at once for stateless roles, one at a time over the count for a data role ([`moving`]);
//! - surplus nodes go not-ready first, then newest (highest ordinal) first;
//! - a ready node that leaves (surplus, moved, role removed) is drained when its type drains:
//!   dropped from every member list, released once each ready router (php `proxy`) reports it
//!   routes to it no more, and deleted when its agent reports `Drained`;
//! - missing nodes are created with the lowest ordinals no existing node uses, so a retry after
//!   a stale read creates the same names again and the API server refuses the duplicates;
//! - nodes whose configuration (code, settings, script, members) differs are re-specced;
//! - a stopped Service deletes every node.

mod data_safety;
mod drain;
mod moving;
mod naming;
mod rollout;
mod running;
mod stop;
#[cfg(test)]
mod testing;

pub use super::model::{
    Action, Desired, DesiredRole, DrainPolicy, NodeConfig, NodeFailure, ObservedNode, RolloutPolicy,
};
pub use data_safety::{DATA_AT_RISK, data_at_risk_message, kept_for_their_data};
pub use naming::node_name;
pub(crate) use naming::ordinal;
pub use rollout::{code_switches, link_switches, rollback_to, rollout_failure};
pub use running::remediation_allowed;
pub use stop::{SAVE_FAILED, restoring, save_blocked};

use conpaas_crds::v1alpha1::ServiceNodeSpec;

use running::plan_running;

/// Plans the node actions that move `nodes` towards `desired`.
pub fn plan(desired: &Desired, nodes: &[ObservedNode]) -> Vec<Action> {
    if desired.paused {
        // Nothing is created, deleted or re-specced, and each node learns it is paused.
        return nodes
            .iter()
            .filter(|n| !n.deleting && !n.spec.paused)
            .map(|n| Action::PatchNodeSpec {
                name: n.name.clone(),
                spec: ServiceNodeSpec {
                    paused: true,
                    ..n.spec.clone()
                },
            })
            .collect();
    }
    // A paused node's VM is never terminated: a node deleted after the resume, or deleted while
    // paused, first learns that the Service runs again, or it would keep its VM forever.
    let mut actions = Vec::new();
    for action in plan_running(desired, nodes) {
        if let Action::DeleteNode { name, .. } = &action {
            actions.extend(
                nodes
                    .iter()
                    .find(|n| &n.name == name && n.spec.paused)
                    .map(unpaused),
            );
        }
        actions.push(action);
    }
    actions.extend(
        nodes
            .iter()
            .filter(|n| n.deleting && n.spec.paused)
            .map(unpaused),
    );
    actions
}

/// The nodes of a Service that cannot be satisfied while its tenant's credits ran out: every
/// one goes (a paused one first learns that it may), so no VM runs unpaid whatever the spec
/// says.
pub fn stop_unpaid(nodes: &[ObservedNode]) -> Vec<Action> {
    let mut actions: Vec<Action> = nodes
        .iter()
        .filter(|n| n.spec.paused)
        .map(unpaused)
        .collect();
    actions.extend(
        nodes
            .iter()
            .filter(|n| !n.deleting)
            .map(|n| Action::DeleteNode {
                name: n.name.clone(),
                reason: "CreditsExhausted",
            }),
    );
    actions
}

/// Tells a paused node that its Service runs again.
fn unpaused(node: &ObservedNode) -> Action {
    Action::PatchNodeSpec {
        name: node.name.clone(),
        spec: ServiceNodeSpec {
            paused: false,
            ..node.spec.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::ServiceType;

    use super::*;
    use testing::*;

    #[test]
    fn a_service_without_credits_loses_every_node_even_paused_or_unsatisfiable() {
        let d = desired(ServiceType::Helloworld, true, &[("node", 2)]);
        let mut nodes: Vec<ObservedNode> = (0..3).map(|i| node(&d, "node", i)).collect();
        nodes[0].spec.paused = true;
        nodes[2].deleting = true;
        let actions = stop_unpaid(&nodes);
        let deleted: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteNode { name, reason } => {
                    assert_eq!(*reason, "CreditsExhausted");
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["svc-node-0", "svc-node-1"]);
        assert!(
            matches!(&actions[0], Action::PatchNodeSpec { name, spec } if name == "svc-node-0" && !spec.paused),
            "a paused node learns first that it may go: {actions:?}"
        );
    }

    #[test]
    fn a_paused_service_only_tells_its_nodes_it_is_paused() {
        let mut d = desired(ServiceType::Helloworld, true, &[("node", 5)]);
        d.paused = true;
        let mut nodes: Vec<_> = (0..3).map(|i| node(&d, "node", i)).collect();
        nodes[0].unhealthy = Some("VmFailed");
        let actions = plan(&d, &nodes);
        assert_eq!(actions.len(), 3, "no create, no replacement: {actions:?}");
        for action in &actions {
            let Action::PatchNodeSpec { spec, .. } = action else {
                panic!("{action:?}")
            };
            assert!(spec.paused);
        }
        let paused: Vec<_> = nodes
            .into_iter()
            .map(|mut n| {
                n.spec.paused = true;
                n
            })
            .collect();
        assert!(plan(&d, &paused).is_empty(), "paused nodes are left alone");
    }

    #[test]
    fn a_resumed_service_unpauses_a_node_before_deleting_it() {
        let d = desired(ServiceType::Helloworld, true, &[("node", 1)]);
        let mut dead = node(&d, "node", 1);
        dead.spec.paused = true;
        dead.unhealthy = Some("HeartbeatStale");
        let mut going = node(&d, "node", 2);
        going.spec.paused = true;
        going.deleting = true;
        let actions = plan(&d, &[node(&d, "node", 0), dead, going]);
        let steps: Vec<(&str, &str, bool)> = actions
            .iter()
            .map(|a| match a {
                Action::PatchNodeSpec { name, spec } => ("patch", name.as_str(), spec.paused),
                Action::DeleteNode { name, .. } => ("delete", name.as_str(), false),
                Action::CreateNode { name, .. } => ("create", name.as_str(), false),
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                ("patch", "svc-node-1", false),
                ("delete", "svc-node-1", false),
                ("patch", "svc-node-2", false),
            ]
        );
    }
}
