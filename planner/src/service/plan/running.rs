//! A running Service's nodes: unhealthy ones replaced (bounded by the share of unhealthy nodes),
//! moved ones and surplus ones sent to leave, missing ones created, and every kept one
//! re-specced to the configuration, members, code and links it should have.

use std::collections::BTreeSet;

use conpaas_crds::types::DataCopies;
use conpaas_crds::v1alpha1::{DrainReason, Member};

use crate::service::model::{Action, Desired, ObservedNode};

use super::data_safety::data_at_risk;
use super::drain::{drain_steps, leave, serves_previous_version};
use super::moving::one_at_a_time;
use super::naming::{node_name, node_spec, ordinal};
use super::rollout::{code_switches, link_switches, rollout_failure};
use super::stop::{plan_stop, stop_saving};

/// The node actions of a Service that is not paused.
pub(super) fn plan_running(desired: &Desired, nodes: &[ObservedNode]) -> Vec<Action> {
    let service = desired.service.as_str();
    let mut actions = Vec::new();
    let all_live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();

    if !desired.running {
        return plan_stop(desired, &all_live);
    }

    let unhealthy = all_live
        .iter()
        .filter(|n| n.suspect || n.unhealthy.is_some())
        .count();
    let remediate = remediation_allowed(all_live.len(), unhealthy, desired.max_unhealthy_percent);
    let (leaving, live): (Vec<&ObservedNode>, Vec<&ObservedNode>) =
        all_live.iter().partition(|n| n.spec.drain.is_some());
    actions.extend(drain_steps(desired, &leaving, &live));
    let mut keep: Vec<&ObservedNode> = Vec::new();
    // Nodes of a data role in an old placement: they move one at a time ([`one_at_a_time`]).
    let mut moved: Vec<&ObservedNode> = Vec::new();
    for node in &live {
        let Some(role) = desired.roles.iter().find(|r| r.name == node.spec.role) else {
            actions.push(leave(desired, node, DrainReason::RoleRemoved));
            continue;
        };
        if node.unhealthy.is_some() && data_at_risk(desired, node, &all_live) {
            // Kept, counted and re-specced as any other: the Service says why it waits.
            keep.push(node);
        } else if let (Some(reason), true) = (node.unhealthy, remediate) {
            actions.push(Action::DeleteNode {
                name: node.name.clone(),
                reason,
            });
        } else if node.spec.cloud != role.cloud
            || node.spec.instance_type != role.instance_type
            || node.spec.volume != role.volume
        {
            if desired.saved_on_stop == Some(node.spec.role.as_str()) {
                moved.push(node);
            } else {
                actions.push(leave(desired, node, DrainReason::PlacementChanged));
            }
        } else {
            keep.push(node);
        }
    }

    let mut shrunk: BTreeSet<&str> = BTreeSet::new();
    for role in &desired.roles {
        // A node kept for its data is not scaled away: that would delete the only copy.
        let mut healthy: Vec<&ObservedNode> = keep
            .iter()
            .copied()
            .filter(|n| n.spec.role == role.name)
            .filter(|n| !(n.unhealthy.is_some() && data_at_risk(desired, n, &all_live)))
            .collect();
        let want = role.count.max(0) as usize;
        if healthy.len() > want {
            // Not-ready nodes go first, then the autoscaler's choice, then the newest.
            healthy.sort_by_key(|n| {
                (
                    n.ready,
                    !desired.leaving_first.contains(&n.name),
                    std::cmp::Reverse(ordinal(service, n)),
                )
            });
            for node in healthy.drain(..healthy.len() - want) {
                actions.push(leave(desired, node, DrainReason::ScaledDown));
                keep.retain(|k| k.name != node.name);
            }
            shrunk.insert(role.name.as_str());
        }
    }

    let mut surge: std::collections::BTreeMap<&str, usize> = Default::default();
    for role in &desired.roles {
        let of_role = |n: &&&ObservedNode| n.spec.role == role.name;
        let old: Vec<&ObservedNode> = moved.iter().filter(of_role).copied().collect();
        if old.is_empty() {
            continue;
        }
        let placed: Vec<&ObservedNode> = keep.iter().filter(of_role).copied().collect();
        let busy =
            shrunk.contains(role.name.as_str()) || leaving.iter().any(|n| n.spec.role == role.name);
        let step = one_at_a_time(role.count.max(0) as usize, old, &placed, busy);
        if let Some(node) = step.leave {
            actions.push(leave(desired, node, DrainReason::PlacementChanged));
        }
        keep.extend(step.stay);
        surge.insert(role.name.as_str(), step.surge);
    }

    // Roles whose cluster runs: what their members' data held when all were down is history
    // (and a stale report must not reach a later outage's decision). A node whose VM went off
    // keeps its agent's last "Ready" report, so its Ready condition and health count too.
    let running: BTreeSet<&str> = keep
        .iter()
        .filter(|n| n.agent_ready && n.ready && !n.suspect)
        .map(|n| n.spec.role.as_str())
        .collect();
    let members: Vec<Member> = if desired.config.with_members {
        let mut m: Vec<Member> = keep
            .iter()
            .filter_map(|n| {
                n.address.as_ref().map(|a| Member {
                    name: n.name.clone(),
                    role: n.spec.role.clone(),
                    address: a.clone(),
                    ready: n.agent_ready || serves_previous_version(n),
                    position: n
                        .recovered_position
                        .clone()
                        .filter(|_| !running.contains(n.spec.role.as_str())),
                    // Where every node holds all the data, a node without it must know who
                    // has it, even while that one is down and silent.
                    held_data: desired.data_copies == DataCopies::EveryNode
                        && desired.saved_on_stop == Some(n.spec.role.as_str())
                        && n.was_ready,
                })
            })
            .collect();
        m.sort();
        m
    } else {
        Vec::new()
    };

    // Only routers learn which members are ready: a readiness change (a backend switching code)
    // re-specs the routers alone, not every node of the Service.
    let unrouted: Vec<Member> = members
        .iter()
        .map(|m| Member {
            ready: false,
            ..m.clone()
        })
        .collect();
    let members_of = |role: &str| {
        if desired.drain.routers.contains(&role) {
            members.clone()
        } else {
            unrouted.clone()
        }
    };

    // After a version failed on a node, new nodes start with the version the others still run
    // (the last good one), not the failed one.
    let failed = rollout_failure(desired, &keep).is_some();
    let last_good = keep
        .iter()
        .find(|n| n.spec.code != desired.config.code && n.agent_failure.is_none())
        .map(|n| n.spec.code.clone());
    for role in &desired.roles {
        let have = keep.iter().filter(|n| n.spec.role == role.name).count();
        let want = role.count.max(0) as usize + surge.get(role.name.as_str()).unwrap_or(&0);
        // The data saved at the last stop goes only into a role that has no data yet: a node
        // joining nodes that run (a scale-out, a move) gets it from them.
        let restoring = !all_live.iter().any(|n| n.spec.role == role.name);
        // Started again while a stop's save still runs on a node of this role: its data goes
        // into the next node only once stored (until then a new node would start empty).
        if desired.saved_on_stop == Some(role.name.as_str())
            && leaving
                .iter()
                .any(|n| n.spec.role == role.name && stop_saving(n))
        {
            continue;
        }
        let used: BTreeSet<u32> = nodes
            .iter()
            .filter(|n| n.spec.role == role.name)
            .filter_map(|n| ordinal(service, n))
            .collect();
        let mut free = (0u32..).filter(|i| !used.contains(i));
        for _ in have..want {
            let i = free.next().expect("ordinals are unbounded");
            let mut spec = node_spec(desired, role, String::new(), &members_of(&role.name));
            if let (true, Some(code)) = (failed, &last_good) {
                spec.code = code.clone();
            }
            if !restoring {
                spec.restore = None;
            }
            actions.push(Action::CreateNode {
                name: node_name(service, &role.name, i),
                spec,
            });
        }
    }

    let switching = code_switches(desired, &keep);
    let relinking = link_switches(desired, &keep, &switching);
    for node in &keep {
        let role = desired
            .roles
            .iter()
            .find(|r| r.name == node.spec.role)
            .expect("kept nodes have a role");
        let mut spec = node_spec(
            desired,
            role,
            node.spec.token.clone(),
            &members_of(&role.name),
        );
        if !switching.contains(&node.name.as_str()) {
            // Its turn has not come: everything else changes now, the code later.
            spec.code = node.spec.code.clone();
        }
        if !relinking.contains(&node.name.as_str()) {
            spec.links = node.spec.links.clone();
        }
        // A node's placement and the data it started from are its own: a node in an old
        // placement moves by being replaced ([`one_at_a_time`]), never by a re-spec.
        spec.cloud = node.spec.cloud.clone();
        spec.instance_type = node.spec.instance_type.clone();
        spec.volume = node.spec.volume.clone();
        spec.restore = node.spec.restore.clone();
        if spec != node.spec {
            actions.push(Action::PatchNodeSpec {
                name: node.name.clone(),
                spec,
            });
        }
    }
    actions
}

/// Whether unhealthy nodes may be replaced: when at most `percent` of the live nodes are
/// unhealthy, and always when only one is (so a one-node service heals).
pub fn remediation_allowed(live: usize, unhealthy: usize, percent: i32) -> bool {
    unhealthy <= 1 || unhealthy * 100 <= live * percent.max(0) as usize
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::ServiceType;

    use super::super::plan;
    use super::super::testing::*;
    use crate::service::model::{Action, ObservedNode};

    use super::remediation_allowed;
    use crate::service::model::Desired;

    #[test]
    fn table() {
        use ServiceType::{Generic, Helloworld};
        struct Case {
            name: &'static str,
            desired: Desired,
            nodes: Vec<ObservedNode>,
            create: Vec<&'static str>,
            delete: Vec<(&'static str, &'static str)>,
        }
        let hw3 = desired(Helloworld, true, &[("node", 3)]);
        let hw5 = desired(Helloworld, true, &[("node", 5)]);
        let hw2 = desired(Helloworld, true, &[("node", 2)]);
        let hw_stopped = desired(Helloworld, false, &[("node", 3)]);
        let generic = desired(Generic, true, &[("master", 1), ("node", 2)]);
        let generic0 = desired(Generic, true, &[("master", 1), ("node", 0)]);

        let cases = vec![
            Case {
                name: "scale up from nothing",
                desired: hw3.clone(),
                nodes: vec![],
                create: vec!["svc-node-0", "svc-node-1", "svc-node-2"],
                delete: vec![],
            },
            Case {
                name: "converged does nothing",
                desired: hw3.clone(),
                nodes: (0..3).map(|i| node(&hw3, "node", i)).collect(),
                create: vec![],
                delete: vec![],
            },
            Case {
                name: "scale up fills the lowest free ordinals",
                desired: hw5.clone(),
                nodes: vec![
                    node(&hw5, "node", 0),
                    node(&hw5, "node", 2),
                    node(&hw5, "node", 3),
                ],
                create: vec!["svc-node-1", "svc-node-4"],
                delete: vec![],
            },
            Case {
                name: "scale down removes the newest",
                desired: hw2.clone(),
                nodes: (0..5).map(|i| node(&hw2, "node", i)).collect(),
                create: vec![],
                delete: vec![
                    ("svc-node-4", "ScaledDown"),
                    ("svc-node-3", "ScaledDown"),
                    ("svc-node-2", "ScaledDown"),
                ],
            },
            Case {
                name: "scale down removes not-ready nodes first",
                desired: hw2.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw2, "node", i)).collect();
                    n[0].ready = false;
                    n
                },
                create: vec![],
                delete: vec![("svc-node-0", "ScaledDown")],
            },
            Case {
                name: "stop deletes every node",
                desired: hw_stopped.clone(),
                nodes: (0..3).map(|i| node(&hw_stopped, "node", i)).collect(),
                create: vec![],
                delete: vec![
                    ("svc-node-0", "ServiceStopped"),
                    ("svc-node-1", "ServiceStopped"),
                    ("svc-node-2", "ServiceStopped"),
                ],
            },
            Case {
                name: "start while the stop's nodes are still going: new names, no collision",
                desired: hw3.clone(),
                nodes: (0..3)
                    .map(|i| ObservedNode {
                        deleting: true,
                        ..node(&hw3, "node", i)
                    })
                    .collect(),
                create: vec!["svc-node-3", "svc-node-4", "svc-node-5"],
                delete: vec![],
            },
            Case {
                name: "a failed VM is replaced under a new ordinal",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[1].unhealthy = Some("VmFailed");
                    n
                },
                create: vec!["svc-node-3"],
                delete: vec![("svc-node-1", "VmFailed")],
            },
            Case {
                name: "a node being deleted keeps its ordinal reserved",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[0].deleting = true;
                    n
                },
                create: vec!["svc-node-3"],
                delete: vec![],
            },
            Case {
                name: "a failed master is replaced in place",
                desired: generic.clone(),
                nodes: {
                    let mut n = vec![
                        node(&generic, "master", 0),
                        node(&generic, "node", 0),
                        node(&generic, "node", 1),
                    ];
                    n[0].unhealthy = Some("VmFailed");
                    n
                },
                create: vec!["svc-master-1"],
                delete: vec![("svc-master-0", "VmFailed")],
            },
            Case {
                name: "scaling nodes to zero never removes the master",
                desired: generic0.clone(),
                nodes: vec![
                    node(&generic0, "master", 0),
                    node(&generic0, "node", 0),
                    node(&generic0, "node", 1),
                ],
                create: vec![],
                delete: vec![("svc-node-1", "ScaledDown"), ("svc-node-0", "ScaledDown")],
            },
            Case {
                name: "a stale heartbeat replaces the node",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[2].unhealthy = Some("HeartbeatStale");
                    n
                },
                create: vec!["svc-node-3"],
                delete: vec![("svc-node-2", "HeartbeatStale")],
            },
            Case {
                name: "an outage (most nodes unhealthy) replaces nothing",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[0].unhealthy = Some("HeartbeatStale");
                    n[1].unhealthy = Some("HeartbeatStale");
                    n
                },
                create: vec![],
                delete: vec![],
            },
            Case {
                name: "a one-node service still heals",
                desired: desired(Helloworld, true, &[("node", 1)]),
                nodes: {
                    let mut n = vec![node(&hw3, "node", 0)];
                    n[0].unhealthy = Some("VmFailed");
                    n
                },
                create: vec!["svc-node-1"],
                delete: vec![("svc-node-0", "VmFailed")],
            },
            Case {
                name: "a changed placement replaces the node",
                desired: {
                    let mut d = hw3.clone();
                    d.roles[0].cloud = "other".into();
                    d
                },
                nodes: vec![node(&hw3, "node", 0)],
                create: vec!["svc-node-1", "svc-node-2", "svc-node-3"],
                delete: vec![("svc-node-0", "PlacementChanged")],
            },
        ];
        for case in cases {
            let actions = plan(&case.desired, &case.nodes);
            assert_eq!(created(&actions), case.create, "{}: creates", case.name);
            let want: Vec<(String, &str)> = case
                .delete
                .iter()
                .map(|(n, r)| (n.to_string(), *r))
                .collect();
            assert_eq!(deleted(&actions), want, "{}: deletes", case.name);
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::PatchNodeSpec { .. })),
                "{}: no spec patches",
                case.name
            );
        }
    }

    #[test]
    fn changed_settings_repatch_every_node_with_its_own_token() {
        let mut d = desired(ServiceType::Helloworld, true, &[("node", 2)]);
        let nodes: Vec<_> = (0..2).map(|i| node(&d, "node", i)).collect();
        d.config.settings.insert("greeting".into(), "Hi".into());
        let actions = plan(&d, &nodes);
        assert_eq!(actions.len(), 2);
        for (action, node) in actions.iter().zip(&nodes) {
            let Action::PatchNodeSpec { name, spec } = action else {
                panic!("expected a patch, got {action:?}")
            };
            assert_eq!(name, &node.name);
            assert_eq!(spec.token, node.spec.token, "the token never changes");
            assert_eq!(
                spec.settings.get("greeting").map(String::as_str),
                Some("Hi")
            );
        }
    }

    #[test]
    fn generic_nodes_learn_the_members_with_addresses() {
        let d = desired(ServiceType::Generic, true, &[("master", 1), ("node", 1)]);
        let mut nodes = vec![node(&d, "master", 0), node(&d, "node", 0)];
        nodes[0].address = Some("127.0.1.1".into());
        nodes[1].address = Some("127.0.1.2".into());
        let actions = plan(&d, &nodes);
        assert_eq!(
            actions.len(),
            2,
            "both nodes get the new member list: {actions:?}"
        );
        let Action::PatchNodeSpec { spec, .. } = &actions[0] else {
            panic!()
        };
        let roles: Vec<(&str, &str)> = spec
            .members
            .iter()
            .map(|m| (m.role.as_str(), m.address.as_str()))
            .collect();
        assert_eq!(roles, vec![("master", "127.0.1.1"), ("node", "127.0.1.2")]);
    }

    #[test]
    fn mysql_members_say_which_held_the_data_and_kvstore_members_do_not() {
        let held = |ty: ServiceType, role: &str| {
            let d = desired(ty, true, &[(role, 2)]);
            let mut nodes = vec![node(&d, role, 0), node(&d, role, 1)];
            nodes[0].address = Some("127.0.1.1".into());
            nodes[1].address = Some("127.0.1.2".into());
            // Node 1 never was Ready: it holds nothing.
            nodes[1].was_ready = false;
            let actions = plan(&d, &nodes);
            let Some(Action::PatchNodeSpec { spec, .. }) = actions.first() else {
                panic!("{actions:?}")
            };
            spec.members.iter().map(|m| m.held_data).collect::<Vec<_>>()
        };
        assert_eq!(held(ServiceType::Mysql, "mysql"), vec![true, false]);
        assert_eq!(held(ServiceType::Kvstore, "node"), vec![false, false]);
    }

    #[test]
    fn remediation_is_bounded_by_the_share_of_unhealthy_nodes() {
        assert!(remediation_allowed(1, 1, 40), "one node always heals");
        assert!(remediation_allowed(10, 4, 40));
        assert!(!remediation_allowed(10, 5, 40));
        assert!(!remediation_allowed(3, 2, 40));
        assert!(remediation_allowed(3, 0, 0));
        assert!(remediation_allowed(3, 3, 100), "100% replaces every node");
    }

    #[test]
    fn a_stale_read_plans_the_same_names_again() {
        // A reconcile that acted, then one that read the nodes before the first one's creates
        // showed up: it plans names the first one already created (which the API refuses as
        // existing), never new ones that would be a second VM for the same slot.
        let d = desired(ServiceType::Helloworld, true, &[("node", 3)]);
        let first = created(&plan(&d, &[node(&d, "node", 0)]));
        assert_eq!(first, vec!["svc-node-1", "svc-node-2"]);
        let stale = created(&plan(&d, &[node(&d, "node", 0), node(&d, "node", 2)]));
        assert_eq!(stale, vec!["svc-node-1"]);
        assert!(stale.iter().all(|n| first.contains(n)));
    }
}
