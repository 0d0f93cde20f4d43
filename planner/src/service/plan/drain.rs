//! Leaving is a phase: a node that serves starts a drain when its type drains, is released once
//! every ready router stopped routing to it, and is deleted when its agent reports the drain
//! done (or at once when it stopped serving anyway).

use conpaas_crds::v1alpha1::{DrainReason, NodeDrain, ServiceNodeSpec};

use super::data_safety::data_at_risk;
use crate::service::model::{Action, Desired, ObservedNode};

/// How `node` leaves for `reason`: a node that serves, or may hold data, starts its drain when
/// its type drains; any other is deleted at once.
pub(super) fn leave(desired: &Desired, node: &ObservedNode, reason: DrainReason) -> Action {
    let serving = node.agent_ready && !node.suspect && node.unhealthy.is_none();
    // A data node that is not Ready (a kvstore master while the cluster is not ok, or whose
    // agent missed a heartbeat) may still hold the only copy of its slots: it drains, and the
    // drain's steps decide when it may go.
    if !((serving || holds_data(desired, node)) && desired.drain.drains()) {
        return Action::DeleteNode {
            name: node.name.clone(),
            reason: reason.as_str(),
        };
    }
    Action::PatchNodeSpec {
        name: node.name.clone(),
        spec: ServiceNodeSpec {
            drain: Some(NodeDrain {
                reason,
                released: false,
                seconds: desired.drain.seconds,
            }),
            ..node.spec.clone()
        },
    }
}

/// The next step of each leaving node: released once every ready router stopped routing to it,
/// deleted once its agent reports the drain done, or at once when it stopped serving anyway
/// (it failed, or its agent went silent).
pub(super) fn drain_steps(
    desired: &Desired,
    leaving: &[&ObservedNode],
    staying: &[&ObservedNode],
) -> Vec<Action> {
    let routers: Vec<&ObservedNode> = staying
        .iter()
        .copied()
        .filter(|n| desired.drain.routers.contains(&n.spec.role.as_str()))
        .filter(|n| n.agent_ready && !n.suspect)
        .collect();
    let mut actions = Vec::new();
    for node in leaving {
        let drain = node.spec.drain.as_ref().expect("leaving nodes drain");
        let reason = drain.reason.as_str();
        // Confirmed unhealthy, not a blip: until released, routers may still send it requests.
        // A node still serving its previous code version is drained like a healthy one.
        let gone = node.unhealthy.is_some()
            || (node.agent_failure.is_some() && !serves_previous_version(node));
        let everyone: Vec<&ObservedNode> = leaving.iter().chain(staying).copied().collect();
        if !node.drained
            && gone
            && holds_data(desired, node)
            && data_at_risk(desired, node, &everyone)
        {
            // Its data (slots not yet moved, say) has no other copy: kept until its drain
            // moves it (an unhealthy one: DataAtRisk).
            continue;
        }
        if node.drained || gone {
            actions.push(Action::DeleteNode {
                name: node.name.clone(),
                reason,
            });
            continue;
        }
        // A leaving router (a storage node holding bricks) is released by its peers' word
        // alone: with no peer ready to say its data moved, it stays.
        let leaving_router = desired.drain.routers.contains(&node.spec.role.as_str());
        let unrouted = !(leaving_router && routers.is_empty())
            && routers.iter().all(|r| {
                r.routes_to
                    .as_ref()
                    .is_some_and(|to| !to.contains(&node.name))
            });
        if !drain.released && unrouted {
            let mut spec = node.spec.clone();
            spec.drain = Some(NodeDrain {
                released: true,
                ..drain.clone()
            });
            actions.push(Action::PatchNodeSpec {
                name: node.name.clone(),
                spec,
            });
        }
    }
    actions
}

/// Whether `node` may hold data of its Service: a node of the role saved on Stop that was Ready
/// once (one that never was holds none: a failed startup script, a join that never finished).
fn holds_data(desired: &Desired, node: &ObservedNode) -> bool {
    desired.saved_on_stop == Some(node.spec.role.as_str()) && node.was_ready
}

/// A node whose switch to a new code version failed while it reports an older one running (php
/// and java keep serving it): routers keep sending it requests, rather than losing a tier to a
/// version that would not install.
pub(super) fn serves_previous_version(node: &ObservedNode) -> bool {
    // A daemon that died is another failure, and that node serves nothing.
    node.agent_failure.is_some()
        && node.failed_code.is_some()
        && node.running_code.is_some()
        && node.running_code.as_deref() != node.spec.code.as_ref().map(|c| c.version.as_str())
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::{DrainReason, NodeCode, NodeDrain, ServiceType};

    use super::super::plan;
    use super::super::testing::*;
    use crate::service::model::{Action, ObservedNode};

    #[test]
    fn a_backend_that_failed_to_switch_code_stays_routed_on_the_version_it_runs() {
        let d = desired(ServiceType::Php, true, &[("proxy", 1), ("backend", 1)]);
        let mut nodes: Vec<ObservedNode> = [node(&d, "proxy", 0), node(&d, "backend", 0)]
            .into_iter()
            .enumerate()
            .map(|(i, mut n)| {
                n.address = Some(format!("10.0.0.{i}"));
                n.spec.code = Some(NodeCode {
                    version: "v2".into(),
                    ..Default::default()
                });
                n
            })
            .collect();
        let backend_ready = |nodes: &[ObservedNode]| {
            plan(&d, nodes).into_iter().find_map(|a| match a {
                Action::PatchNodeSpec { name, spec } if name == "svc-proxy-0" => spec
                    .members
                    .iter()
                    .find(|m| m.role == "backend")
                    .map(|m| m.ready),
                _ => None,
            })
        };
        nodes[1].agent_ready = false;
        nodes[1].agent_failure = Some("code version v2: sha256 differs".into());
        nodes[1].failed_code = Some("v2".into());
        nodes[1].running_code = Some("v1".into());
        assert_eq!(backend_ready(&nodes), Some(true), "v1 still serves");
        nodes[1].agent_failure = Some("php-fpm is not running".into());
        nodes[1].failed_code = None;
        assert_eq!(
            backend_ready(&nodes),
            Some(false),
            "a dead daemon serves nothing"
        );
        nodes[1].agent_failure = Some("code version v2: sha256 differs".into());
        nodes[1].failed_code = Some("v2".into());
        nodes[1].running_code = Some("v2".into());
        assert_eq!(backend_ready(&nodes), Some(false), "failed on what it runs");
    }

    #[test]
    fn a_data_node_leaves_through_its_drain_ready_or_not() {
        let d = desired(ServiceType::Kvstore, true, &[("node", 3)]);
        let mut nodes: Vec<ObservedNode> = (0..4)
            .map(|i| {
                let mut n = node(&d, "node", i);
                n.address = Some(format!("10.0.0.{i}"));
                n
            })
            .collect();
        // The staying nodes' member lists change too; what matters is the leaver.
        let of_leaver = |nodes: &[ObservedNode]| -> Vec<(String, String)> {
            steps(&d, nodes)
                .into_iter()
                .filter(|(n, _)| n == "svc-node-3")
                .collect()
        };
        // A master not Ready (the cluster is not ok) still holds slots: it drains.
        nodes[3].agent_ready = false;
        nodes[3].ready = false;
        assert_eq!(
            of_leaver(&nodes),
            vec![("svc-node-3".into(), "drain".into())]
        );
        // Failed while leaving, its slots not moved yet: kept until they are.
        nodes[3].spec.drain = Some(NodeDrain {
            reason: DrainReason::ScaledDown,
            released: false,
            seconds: 1,
        });
        nodes[3].agent_failure = Some("redis-server is not running".into());
        assert_eq!(of_leaver(&nodes), vec![]);
        nodes[3].drained = true;
        assert_eq!(
            of_leaver(&nodes),
            vec![("svc-node-3".into(), "delete:ScaledDown".into())]
        );
        // A suspect one (a missed heartbeat) drains too: not deleted with its slots.
        let mut blip = nodes[..3].to_vec();
        blip.push(node(&d, "node", 3));
        blip[3].suspect = true;
        blip[3].agent_ready = false;
        blip[3].ready = false;
        assert_eq!(
            of_leaver(&blip),
            vec![("svc-node-3".into(), "drain".into())]
        );
        // A node that was never Ready held nothing: it goes at once.
        let mut fresh = nodes[..3].to_vec();
        fresh.push(node(&d, "node", 3));
        fresh[3].agent_ready = false;
        fresh[3].ready = false;
        fresh[3].was_ready = false;
        assert_eq!(
            of_leaver(&fresh),
            vec![("svc-node-3".into(), "delete:ScaledDown".into())]
        );
    }

    #[test]
    fn a_leaving_storage_node_is_released_only_on_a_ready_peers_word() {
        let d = desired(ServiceType::Filesystem, true, &[("storage", 1)]);
        let mut nodes = vec![node(&d, "storage", 0), node(&d, "storage", 1)];
        nodes[1].spec.drain = Some(NodeDrain {
            reason: DrainReason::ScaledDown,
            released: false,
            seconds: 1,
        });
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        // The peer still holds its bricks, or cannot tell: it stays.
        nodes[0].routes_to = Some(vec!["svc-storage-0".into(), "svc-storage-1".into()]);
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[0].routes_to = None;
        assert_eq!(steps(&d, &nodes), vec![]);
        // No peer ready to say its data moved: it stays (no router is no word).
        nodes[0].agent_ready = false;
        nodes[0].routes_to = Some(vec!["svc-storage-0".into()]);
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[0].agent_ready = true;
        assert_eq!(steps(&d, &nodes), vec![pair("svc-storage-1", "release")]);
    }

    #[test]
    fn a_leaving_node_is_drained_released_by_every_router_then_deleted() {
        let d = desired(ServiceType::Php, true, &[("proxy", 1), ("backend", 1)]);
        let with_address = |mut n: ObservedNode, a: &str| {
            n.address = Some(a.into());
            n
        };
        let mut nodes = vec![
            with_address(node(&d, "proxy", 0), "10.0.0.1"),
            with_address(node(&d, "backend", 0), "10.0.0.2"),
            with_address(node(&d, "backend", 1), "10.0.0.3"),
        ];
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        // Scaled down: the surplus backend drains and leaves every member list.
        let got = steps(&d, &nodes);
        assert!(got.contains(&pair("svc-backend-1", "drain")), "{got:?}");
        let members: Vec<String> = plan(&d, &nodes)
            .into_iter()
            .find_map(|a| match a {
                Action::PatchNodeSpec { name, spec } if name == "svc-proxy-0" => {
                    Some(spec.members.into_iter().map(|m| m.name).collect())
                }
                _ => None,
            })
            .expect("the proxy learns the members");
        assert_eq!(members, vec!["svc-backend-0", "svc-proxy-0"]);
        let drain = |released: bool| NodeDrain {
            reason: DrainReason::ScaledDown,
            released,
            seconds: 10,
        };
        nodes[2].spec.drain = Some(drain(false));
        // The others take the member lists they are given.
        for action in plan(&d, &nodes) {
            if let Action::PatchNodeSpec { name, spec } = action
                && spec.drain.is_none()
                && let Some(n) = nodes.iter_mut().find(|n| n.name == name)
            {
                n.spec = spec;
            }
        }
        // Only the router learns which members are ready.
        assert!(nodes[0].spec.members.iter().all(|m| m.ready));
        assert!(nodes[1].spec.members.iter().all(|m| !m.ready));
        // The proxy still routes to it, or has not said: it waits.
        nodes[0].routes_to = None;
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[0].routes_to = Some(vec!["svc-backend-0".into(), "svc-backend-1".into()]);
        assert_eq!(steps(&d, &nodes), vec![]);
        // The proxy routes to it no more: released.
        nodes[0].routes_to = Some(vec!["svc-backend-0".into()]);
        assert_eq!(steps(&d, &nodes), vec![pair("svc-backend-1", "release")]);
        // A router that is itself unhealthy is not waited for.
        let mut silent = nodes.clone();
        silent[0].routes_to = None;
        silent[0].suspect = true;
        assert_eq!(steps(&d, &silent), vec![pair("svc-backend-1", "release")]);
        // Its agent says the drain is done: deleted, with the reason it left for.
        nodes[2].spec.drain = Some(drain(true));
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[2].drained = true;
        assert_eq!(
            steps(&d, &nodes),
            vec![pair("svc-backend-1", "delete:ScaledDown")]
        );
        // A leaving node that stops serving on its own is deleted at once; a blip is waited out.
        nodes[2].drained = false;
        nodes[2].suspect = true;
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[2].unhealthy = Some("HeartbeatStale");
        assert_eq!(
            steps(&d, &nodes),
            vec![pair("svc-backend-1", "delete:ScaledDown")]
        );
        // A surplus node that serves nothing is not drained; nor one of a type that does not drain.
        let mut idle = nodes[..2].to_vec();
        idle.push(with_address(node(&d, "backend", 1), "10.0.0.3"));
        idle[2].agent_ready = false;
        assert!(steps(&d, &idle).contains(&pair("svc-backend-1", "delete:ScaledDown")));
        let hw = desired(ServiceType::Helloworld, true, &[("node", 1)]);
        let two: Vec<ObservedNode> = (0..2).map(|i| node(&hw, "node", i)).collect();
        assert_eq!(
            steps(&hw, &two),
            vec![pair("svc-node-1", "delete:ScaledDown")]
        );
    }
}
