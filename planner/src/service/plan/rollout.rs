//! How a new code version (or a new link environment) reaches the nodes: a few at a time per
//! role, a version that failed on a node going no further, and the version to roll back to.

use crate::service::model::{Desired, ObservedNode};

use super::naming::ordinal;

/// The kept nodes that get the active code version now. Per role, at most
/// `rollout.maxUnavailable` nodes are switching or not Ready at once: a node counts as switching
/// until its agent reports the version running and the node is Ready. Nodes that run no code
/// yet, and nodes that are not Ready anyway, switch at once; the others go highest ordinal first
/// (the lowest, which serves the Service's address, last). A version that failed on a node
/// ([`rollout_failure`]) goes to no further node.
pub fn code_switches<'a>(desired: &Desired, keep: &[&'a ObservedNode]) -> Vec<&'a str> {
    let target = &desired.config.code;
    let stale = |n: &&&ObservedNode| n.spec.code != *target;
    let Some(version) = target.as_ref().map(|c| c.version.as_str()) else {
        // No active version: every node drops its code at once.
        return keep.iter().filter(stale).map(|n| n.name.as_str()).collect();
    };
    if rollout_failure(desired, keep).is_some() {
        return Vec::new();
    }
    let mut switching = Vec::new();
    for role in &desired.roles {
        let of_role: Vec<&ObservedNode> = keep
            .iter()
            .copied()
            .filter(|n| n.spec.role == role.name)
            .collect();
        let unavailable = of_role
            .iter()
            .filter(|n| {
                !n.ready
                    || (!stale(n) && (n.running_code.as_deref() != Some(version) || !n.agent_ready))
            })
            .count();
        let mut budget = desired
            .config
            .rollout
            .max_unavailable
            .saturating_sub(unavailable);
        let mut waiting: Vec<&ObservedNode> =
            of_role.iter().copied().filter(|n| stale(&n)).collect();
        waiting.sort_by_key(|n| {
            (
                n.spec.code.is_some() && n.ready,
                std::cmp::Reverse(ordinal(&desired.service, n)),
            )
        });
        for node in waiting {
            let free = node.spec.code.is_none() || !node.ready;
            if free || budget > 0 {
                budget -= usize::from(!free);
                switching.push(node.name.as_str());
            }
        }
    }
    switching
}

/// The kept nodes that take the Service's new links (a linked endpoint or password) now: all at
/// once, but in roles whose daemons restart for it (java backends) one serving node at a time
/// (`rollout.maxUnavailable`), the next once the others serve again, so the routers always have
/// the rest. A node that serves nothing yet loses nothing by restarting.
pub fn link_switches<'a>(
    desired: &Desired,
    keep: &[&'a ObservedNode],
    code_switching: &[&str],
) -> Vec<&'a str> {
    let restarting = desired.service_type.descriptor().restart_on_link_change;
    let stale = |n: &ObservedNode| n.spec.links != desired.config.links;
    let mut switching = Vec::new();
    for role in &desired.roles {
        let of_role: Vec<&ObservedNode> = keep
            .iter()
            .copied()
            .filter(|n| n.spec.role == role.name)
            .collect();
        let mut waiting: Vec<&ObservedNode> =
            of_role.iter().copied().filter(|n| stale(n)).collect();
        if !restarting.contains(&role.name.as_str()) {
            switching.extend(waiting.iter().map(|n| n.name.as_str()));
            continue;
        }
        // A node switching code now is as unavailable: the two rollouts share one budget.
        let unavailable = of_role
            .iter()
            .filter(|n| !n.settled || !n.agent_ready || code_switching.contains(&n.name.as_str()))
            .count();
        let mut budget = desired
            .config
            .rollout
            .max_unavailable
            .saturating_sub(unavailable);
        waiting.sort_by_key(|n| std::cmp::Reverse(ordinal(&desired.service, n)));
        for node in waiting {
            if !node.agent_ready {
                switching.push(node.name.as_str());
            } else if budget > 0 {
                budget -= 1;
                switching.push(node.name.as_str());
            }
        }
    }
    switching
}

/// The version to activate by itself because the active one failed on a node and the Service
/// asks to roll back (`rollout.onFailure: Rollback`): the version active before, while it is
/// still one of the Service's versions.
pub fn rollback_to<'a>(
    desired: &Desired,
    nodes: &[ObservedNode],
    previous: Option<&'a str>,
    versions: &[&str],
) -> Option<&'a str> {
    let live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();
    let active = desired.config.code.as_ref()?;
    let previous = previous.filter(|p| *p != active.version && versions.contains(p))?;
    (desired.config.rollout.rollback && rollout_failure(desired, &live).is_some())
        .then_some(previous)
}

/// The first node on which the active version failed: it was given the version and its agent
/// reports the role failed (the archive could not be installed, or the role's health check,
/// generic's `init.sh`, failed). Its name and the agent's message.
pub fn rollout_failure<'a>(
    desired: &Desired,
    nodes: &[&'a ObservedNode],
) -> Option<(&'a str, &'a str)> {
    let target = desired.config.code.as_ref()?;
    nodes.iter().find_map(|n| {
        let failure = n.agent_failure.as_deref()?;
        (n.spec.code.as_ref() == Some(target)).then_some((n.name.as_str(), failure))
    })
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::{NodeCode, NodeLink, ServiceType};

    use super::super::plan;
    use super::super::testing::*;
    use crate::service::model::{Action, ObservedNode};

    use super::{rollback_to, rollout_failure};
    use crate::service::model::Desired;

    /// `n` ready nodes of role `node` running version `old`, and a Service that activated `new`.
    fn rolling(n: u32, max_unavailable: usize) -> (Desired, Vec<ObservedNode>) {
        let code = |version: &str| NodeCode {
            version: version.into(),
            ..Default::default()
        };
        let mut d = desired(ServiceType::Helloworld, true, &[("node", n as i32)]);
        d.config.code = Some(code("old"));
        let nodes: Vec<ObservedNode> = (0..n)
            .map(|i| ObservedNode {
                running_code: Some("old".into()),
                ..node(&d, "node", i)
            })
            .collect();
        d.config.code = Some(code("new"));
        d.config.rollout.max_unavailable = max_unavailable;
        (d, nodes)
    }

    /// The nodes given the active version, by name.
    fn switched(d: &Desired, nodes: &[ObservedNode]) -> Vec<String> {
        let mut names: Vec<String> = plan(d, nodes)
            .into_iter()
            .filter_map(|a| match a {
                Action::PatchNodeSpec { name, spec } if spec.code == d.config.code => Some(name),
                _ => None,
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_version_rolls_out_max_unavailable_nodes_at_a_time_highest_ordinal_first() {
        let (d, mut nodes) = rolling(4, 1);
        assert_eq!(switched(&d, &nodes), vec!["svc-node-3"]);
        // Given the version but not running it yet: nobody else switches.
        nodes[3].spec.code = d.config.code.clone();
        assert_eq!(switched(&d, &nodes), Vec::<String>::new());
        // Running it while its Ready condition is from before the switch: still switching.
        nodes[3].running_code = Some("new".into());
        nodes[3].agent_ready = false;
        assert_eq!(switched(&d, &nodes), Vec::<String>::new());
        // Running it and Ready: the next one.
        nodes[3].agent_ready = true;
        assert_eq!(switched(&d, &nodes), vec!["svc-node-2"]);
        // A node not Ready for another reason uses up the budget...
        nodes[0].ready = false;
        // ...but switches itself, as it serves nothing anyway.
        assert_eq!(switched(&d, &nodes), vec!["svc-node-0"]);
        let (d, nodes) = rolling(4, 2);
        assert_eq!(switched(&d, &nodes), vec!["svc-node-2", "svc-node-3"]);
    }

    #[test]
    fn nodes_without_code_get_the_first_version_at_once() {
        let (mut d, mut nodes) = rolling(3, 1);
        for n in &mut nodes {
            n.spec.code = None;
            n.running_code = None;
        }
        assert_eq!(switched(&d, &nodes).len(), 3);
        // Deactivating drops the code everywhere at once too.
        let (_, nodes) = rolling(3, 1);
        d.config.code = None;
        assert_eq!(switched(&d, &nodes).len(), 3);
    }

    #[test]
    fn a_version_that_fails_on_a_node_goes_no_further_and_rolls_back_when_asked() {
        let (mut d, mut nodes) = rolling(3, 1);
        nodes[2].spec.code = d.config.code.clone();
        nodes[2].ready = false;
        nodes[2].agent_failure = Some("init.sh exited with 3".into());
        assert_eq!(switched(&d, &nodes), Vec::<String>::new());
        let live: Vec<&ObservedNode> = nodes.iter().collect();
        assert_eq!(
            rollout_failure(&d, &live),
            Some(("svc-node-2", "init.sh exited with 3"))
        );
        // A node added meanwhile starts with the version the others still run.
        let mut more = d.clone();
        more.roles[0].count = 4;
        let created: Vec<Option<NodeCode>> = plan(&more, &nodes)
            .into_iter()
            .filter_map(|a| match a {
                Action::CreateNode { spec, .. } => Some(spec.code),
                _ => None,
            })
            .collect();
        assert_eq!(created, vec![nodes[0].spec.code.clone()]);
        let versions = ["old", "new"];
        assert_eq!(
            rollback_to(&d, &nodes, Some("old"), &versions),
            None,
            "Stop"
        );
        d.config.rollout.rollback = true;
        assert_eq!(rollback_to(&d, &nodes, Some("old"), &versions), Some("old"));
        assert_eq!(rollback_to(&d, &nodes, Some("gone"), &versions), None);
        assert_eq!(rollback_to(&d, &nodes, None, &versions), None);
    }

    #[test]
    fn a_link_change_restarts_java_backends_one_at_a_time_and_php_backends_at_once() {
        let link = |version: &str| NodeLink {
            prefix: "DB".into(),
            service: "db".into(),
            secret_version: Some(version.into()),
            ..Default::default()
        };
        let relinked = |ty: ServiceType, settle: &dyn Fn(&mut ObservedNode)| {
            let mut d = desired(ty, true, &[("proxy", 1), ("backend", 3)]);
            d.config.links = vec![link("1")];
            let mut nodes: Vec<ObservedNode> = (0..3).map(|i| node(&d, "backend", i)).collect();
            nodes.push(node(&d, "proxy", 0));
            d.config.links = vec![link("2")];
            nodes.iter_mut().for_each(settle);
            let mut names: Vec<String> = plan(&d, &nodes)
                .into_iter()
                .filter_map(|a| match a {
                    Action::PatchNodeSpec { name, spec } if spec.links == d.config.links => {
                        Some(name)
                    }
                    _ => None,
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            relinked(ServiceType::Java, &|_| {}),
            ["svc-backend-2", "svc-proxy-0"],
            "one java backend (the highest ordinal), and the proxy at once"
        );
        assert_eq!(
            relinked(ServiceType::Java, &|n| n.settled =
                n.name != "svc-backend-1"),
            ["svc-proxy-0"],
            "none while a backend restarts"
        );
        assert_eq!(
            relinked(ServiceType::Php, &|_| {}),
            [
                "svc-backend-0",
                "svc-backend-1",
                "svc-backend-2",
                "svc-proxy-0"
            ]
        );
    }
}
