//! A role that keeps data changes placement (cloud, instance type, volume size) one node at a
//! time, as a StatefulSet rolls: a node in the new placement is added over the count, and once
//! every node in the new placement serves (a Galera node Synced, a Redis master or a brick
//! running), one node in the old placement leaves the way a scale-in does (its data moved off
//! first where the type drains). Moving them all at once would start an empty cluster.

use crate::service::model::ObservedNode;

/// What one data role does this pass about its nodes in an old placement.
pub(super) struct Move<'a> {
    /// The old node that leaves now, if one may.
    pub leave: Option<&'a ObservedNode>,
    /// The old nodes that stay for now (kept, counted, told the members).
    pub stay: Vec<&'a ObservedNode>,
    /// Nodes to create over the role's count: one while the move goes on and its turn came.
    pub surge: usize,
}

/// The next step of a data role of `want` nodes whose nodes `moved` are in an old placement
/// and `placed` in the new one; `leaving` when one of its nodes leaves already.
pub(super) fn one_at_a_time<'a>(
    want: usize,
    mut moved: Vec<&'a ObservedNode>,
    placed: &[&ObservedNode],
    leaving: bool,
) -> Move<'a> {
    let serving = |n: &&ObservedNode| n.agent_ready && !n.suspect && n.unhealthy.is_none();
    let settled = !leaving && placed.iter().all(serving) && moved.iter().all(serving);
    let total = placed.len() + moved.len();
    if moved.is_empty() || !settled {
        return Move {
            leave: None,
            stay: moved,
            surge: 0,
        };
    }
    if total > want && (total > 1 || want == 0) {
        // The newest old node goes first (by ordinal: a longer name is a larger one).
        moved.sort_by_key(|n| (n.name.len(), n.name.clone()));
        let leave = moved.pop();
        return Move {
            leave,
            stay: moved,
            surge: 0,
        };
    }
    Move {
        leave: None,
        stay: moved,
        surge: usize::from(total == want),
    }
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::{NodeVolume, ServiceType};

    use super::super::plan;
    use super::super::testing::*;
    use crate::service::model::Action;
    use crate::service::validate::saved_data;

    #[test]
    fn a_lone_database_grows_its_volume_through_a_second_node() {
        let mut d = desired(ServiceType::Mysql, true, &[("mysql", 1)]);
        d.restore = Some(saved_data("old".into()));
        let mut nodes = vec![node(&d, "mysql", 0)];
        d.roles[0].volume = Some(NodeVolume { size_gib: 2 });

        // A second node in the new placement joins first, without the old save; the old one
        // keeps its spec (no re-spec to the new volume).
        let actions = plan(&d, &nodes);
        let [Action::CreateNode { name, spec }] = actions.as_slice() else {
            panic!("one node over the count: {actions:?}");
        };
        assert_eq!(name, "svc-mysql-1");
        assert_eq!(spec.volume, Some(NodeVolume { size_gib: 2 }));
        assert_eq!(spec.restore, None, "never a save into a running cluster");

        // While it is not Ready (Galera not Synced), nothing else happens.
        let mut joining = node(&d, "mysql", 1);
        joining.agent_ready = false;
        nodes.push(joining);
        assert_eq!(steps(&d, &nodes), vec![], "waits for the new node");

        // Synced: the old node leaves, drained as in a scale-in.
        nodes[1].agent_ready = true;
        assert_eq!(
            steps(&d, &nodes),
            vec![("svc-mysql-0".into(), "drain".into())]
        );
    }

    #[test]
    fn three_nodes_move_one_after_another() {
        let mut d = desired(ServiceType::Kvstore, true, &[("node", 3)]);
        let mut nodes: Vec<_> = (0..3).map(|i| node(&d, "node", i)).collect();
        d.roles[0].instance_type = Some("large".into());
        assert_eq!(
            steps(&d, &nodes),
            vec![("svc-node-3".into(), "create".into())]
        );
        nodes.push(node(&d, "node", 3));
        // The newest old node leaves (drained where the type drains); no second one meanwhile.
        let step = steps(&d, &nodes);
        assert_eq!(step.len(), 1, "{step:?}");
        assert_eq!(step[0].0, "svc-node-2");
        nodes[2].spec.drain = Some(conpaas_crds::v1alpha1::NodeDrain {
            reason: conpaas_crds::v1alpha1::DrainReason::PlacementChanged,
            released: false,
            seconds: 0,
        });
        let step = steps(&d, &nodes);
        assert!(
            step.iter().all(|(n, _)| n == "svc-node-2"),
            "only the leaving node moves on: {step:?}"
        );
        // Once it is gone, the next one.
        nodes.remove(2);
        assert_eq!(
            steps(&d, &nodes),
            vec![("svc-node-2".into(), "create".into())]
        );
    }

    #[test]
    fn a_role_scaled_to_zero_while_it_moves_still_empties() {
        let mut d = desired(ServiceType::Mysql, true, &[("mysql", 1)]);
        let nodes = vec![node(&d, "mysql", 0)];
        d.roles[0].count = 0;
        d.roles[0].volume = Some(NodeVolume { size_gib: 2 });
        assert_eq!(
            steps(&d, &nodes),
            vec![("svc-mysql-0".into(), "drain".into())]
        );
    }
}
