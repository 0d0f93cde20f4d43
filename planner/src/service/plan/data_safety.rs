//! A node that keeps data (of the type's `saved_on_stop` role) is replaced when unhealthy only
//! while a copy of its data lives on Ready nodes, or once someone who may accepted the loss: an
//! agent that froze or crashed while its database runs, a VM powered off, or a clock that
//! drifted must not turn the only copy into an empty node. Until then the node is kept and the
//! Service is Degraded with reason [`DATA_AT_RISK`].

use conpaas_crds::types::DataCopies;

#[cfg(test)]
use crate::service::model::Action;
use crate::service::model::{Desired, ObservedNode};

/// The Service's Degraded reason while an unhealthy node holds the only copy of its data.
pub const DATA_AT_RISK: &str = "DataAtRisk";

/// Whether unhealthy `node` must be kept: its data has no copy on another Ready node of its
/// role among `live`, and nobody accepted losing it.
pub fn data_at_risk(desired: &Desired, node: &ObservedNode, live: &[&ObservedNode]) -> bool {
    if desired.saved_on_stop != Some(node.spec.role.as_str()) || node.accept_data_loss {
        return false;
    }
    // A node whose VM never got an address, or whose agent never reported, never held data.
    if node.address.is_none() || node.unhealthy == Some("AgentNeverReported") {
        return false;
    }
    let serving = |n: &&&ObservedNode| {
        n.agent_ready && !n.suspect && n.unhealthy.is_none() && n.spec.drain.is_none()
    };
    let others: Vec<&&ObservedNode> = live
        .iter()
        .filter(|n| n.name != node.name && n.spec.role == node.spec.role && !n.deleting)
        .collect();
    match desired.data_copies {
        DataCopies::None => true,
        DataCopies::EveryNode => !others.iter().any(serving),
        DataCopies::Replicated => others.is_empty() || !others.iter().all(serving),
    }
}

/// The unhealthy nodes kept because their data has no other copy, with why they are unhealthy.
pub fn kept_for_their_data<'a>(
    desired: &Desired,
    nodes: &'a [ObservedNode],
) -> Vec<(&'a ObservedNode, &'static str)> {
    let live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();
    live.iter()
        .filter_map(|n| Some((*n, n.unhealthy?)))
        .filter(|(n, _)| data_at_risk(desired, n, &live))
        .collect()
}

/// The Degraded message for nodes kept for their data.
pub fn data_at_risk_message(kept: &[(&ObservedNode, &'static str)]) -> String {
    let (first, reason) = kept[0];
    let more = match kept.len() {
        1 => String::new(),
        n => format!(" ({} more nodes likewise)", n - 1),
    };
    format!(
        "node {} is unhealthy ({reason}) and holds data no Ready node has a copy of: it is kept, not replaced, until its agent reports again, or `cpsctl node replace {} --accept-data-loss` (valid for an hour) replaces it with a node that has none of that data{more}",
        first.name, first.name
    )
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::{DrainReason, NodeDrain, ServiceType};

    use super::super::plan;
    use super::super::testing::*;
    use super::*;

    /// A node whose VM has an address: it may hold data.
    fn held(d: &Desired, role: &str, i: u32) -> ObservedNode {
        let mut n = node(d, role, i);
        n.address = Some(format!("127.0.0.{}", i + 1));
        n
    }

    fn stale(n: &mut ObservedNode) {
        n.unhealthy = Some("HeartbeatStale");
        n.suspect = true;
        n.agent_ready = false;
    }

    #[test]
    fn an_unhealthy_node_goes_only_while_its_data_has_a_copy() {
        // mysql: every Ready mysql node holds the whole database.
        let one = desired(ServiceType::Mysql, true, &[("mysql", 1)]);
        let mut lone = vec![held(&one, "mysql", 0)];
        stale(&mut lone[0]);
        let actions = plan(&one, &lone);
        assert!(
            deleted(&actions).is_empty() && created(&actions).is_empty(),
            "a lone database node is kept: {actions:?}"
        );
        assert_eq!(kept_for_their_data(&one, &lone).len(), 1);
        lone[0].accept_data_loss = true;
        assert_eq!(
            deleted(&plan(&one, &lone)),
            vec![("svc-mysql-0".to_string(), "HeartbeatStale")],
            "replaced once the loss is accepted"
        );

        // A node that never had an address, or whose agent never reported, held nothing.
        let mut fresh = vec![node(&one, "mysql", 0)];
        stale(&mut fresh[0]);
        assert_eq!(deleted(&plan(&one, &fresh)).len(), 1, "no address");
        let mut silent = vec![held(&one, "mysql", 0)];
        stale(&mut silent[0]);
        silent[0].unhealthy = Some("AgentNeverReported");
        assert_eq!(deleted(&plan(&one, &silent)).len(), 1, "never reported");

        let three = desired(ServiceType::Mysql, true, &[("mysql", 3)]);
        let mut galera: Vec<_> = (0..3).map(|i| held(&three, "mysql", i)).collect();
        galera[0].unhealthy = Some("VmFailed");
        galera[0].suspect = true;
        assert_eq!(
            deleted(&plan(&three, &galera)),
            vec![("svc-mysql-0".to_string(), "VmFailed")],
            "two synced nodes hold the database"
        );
        galera[1].agent_ready = false;
        galera[2].agent_ready = false;
        assert!(
            deleted(&plan(&three, &galera)).is_empty(),
            "no other node is synced"
        );

        // kvstore without replicas: each master holds its slots alone.
        let kv = desired(ServiceType::Kvstore, true, &[("node", 3)]);
        let mut masters: Vec<_> = (0..3).map(|i| held(&kv, "node", i)).collect();
        stale(&mut masters[2]);
        assert!(deleted(&plan(&kv, &masters)).is_empty());

        // With replicas, a copy is sure while every other node is Ready.
        let mut kv1 = desired(ServiceType::Kvstore, true, &[("node", 6)]);
        kv1.data_copies = DataCopies::Replicated;
        let mut groups: Vec<_> = (0..6).map(|i| held(&kv1, "node", i)).collect();
        stale(&mut groups[1]);
        assert_eq!(deleted(&plan(&kv1, &groups)).len(), 1);
        groups[4].agent_ready = false;
        assert!(deleted(&plan(&kv1, &groups)).is_empty());

        // Stateless roles are replaced as before.
        let glb = desired(ServiceType::Mysql, true, &[("mysql", 1), ("glb", 1)]);
        let mut nodes = vec![held(&glb, "mysql", 0), held(&glb, "glb", 0)];
        stale(&mut nodes[1]);
        assert_eq!(deleted(&plan(&glb, &nodes)).len(), 1);
    }

    #[test]
    fn a_node_kept_for_its_data_is_neither_scaled_away_nor_deleted_while_leaving() {
        // Four masters without replicas, one frozen, scaled to three: the frozen one is not
        // the one that goes (it waits, counted over the three, until it is back).
        let kv = desired(ServiceType::Kvstore, true, &[("node", 3)]);
        let mut masters: Vec<_> = (0..4).map(|i| held(&kv, "node", i)).collect();
        stale(&mut masters[1]);
        let actions = plan(&kv, &masters);
        assert!(deleted(&actions).is_empty(), "{actions:?}");
        assert!(
            !actions.iter().any(|a| matches!(a, Action::PatchNodeSpec { name, spec } if name == "svc-node-1" && spec.drain.is_some())),
            "{actions:?}"
        );

        // A master that froze while draining (its slots not yet moved) is kept.
        let mut leaving: Vec<_> = (0..3).map(|i| held(&kv, "node", i)).collect();
        leaving.push(held(&kv, "node", 3));
        leaving[3].spec.drain = Some(NodeDrain {
            reason: DrainReason::ScaledDown,
            released: true,
            seconds: 0,
        });
        stale(&mut leaving[3]);
        assert!(deleted(&plan(&kv, &leaving)).is_empty());
        assert_eq!(kept_for_their_data(&kv, &leaving).len(), 1);
    }
}
