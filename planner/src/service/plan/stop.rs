//! A stopping Service: the type's saving role saves the data first (its first serving node,
//! drained with the reason `ServiceStopped`), then every node goes; while the data cannot be
//! saved, none does.

use conpaas_crds::v1alpha1::{DrainReason, NodeDrain, ServiceNodeSpec};

use crate::service::model::{Action, Desired, ObservedNode};

use super::naming::ordinal;

/// Where a stop stands.
enum Stage<'a> {
    /// Nothing to save, or saved and recorded: every node goes.
    DeleteAll,
    /// `node` is to save.
    Ask(&'a ObservedNode),
    /// A save runs or is to be recorded: wait.
    Saving,
    /// The data cannot be saved now (why): every node is kept until it can.
    Blocked(String),
}

/// A stop: every node is deleted, once the saver (the first serving node of the type's
/// `saved_on_stop` role) saved the data and the Service's status records it. A saver that
/// fails hands over to the next serving node; one whose save fails tries again. While no save
/// can be stored, every node is kept: a stop never deletes the only copy of the data, unless
/// the Service's users accepted losing each node that holds it.
pub(super) fn plan_stop(desired: &Desired, live: &[&ObservedNode]) -> Vec<Action> {
    match stage(desired, live) {
        Stage::DeleteAll => live
            .iter()
            .map(|n| Action::DeleteNode {
                name: n.name.clone(),
                reason: DrainReason::ServiceStopped.as_str(),
            })
            .collect(),
        Stage::Ask(saver) => vec![Action::PatchNodeSpec {
            name: saver.name.clone(),
            spec: ServiceNodeSpec {
                drain: Some(NodeDrain {
                    reason: DrainReason::ServiceStopped,
                    released: true,
                    seconds: desired.drain.seconds,
                }),
                ..saver.spec.clone()
            },
        }],
        Stage::Saving | Stage::Blocked(_) => Vec::new(),
    }
}

/// Why a stopping Service keeps its nodes although it cannot save their data now, for its
/// `Degraded` condition (reason [`SAVE_FAILED`]).
pub fn save_blocked(desired: &Desired, nodes: &[ObservedNode]) -> Option<String> {
    if desired.running {
        // Started again while a stop's save failed: the role waits for that save.
        return nodes
            .iter()
            .filter(|n| !n.deleting && stop_saving(n) && n.saved.is_none())
            .find_map(|n| {
                let failure = n.save_failure.as_ref()?;
                Some(format!(
                    "node {} was saving the data for a stop when the Service started again, and could not: {failure}; no new node of role {} is made until its save is stored (it tries again)",
                    n.name, n.spec.role
                ))
            });
    }
    let live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();
    match stage(desired, &live) {
        Stage::Blocked(why) => Some(why),
        _ => None,
    }
}

/// Whether `node` is asked to save the data for a stop.
pub(super) fn stop_saving(node: &ObservedNode) -> bool {
    node.spec
        .drain
        .as_ref()
        .is_some_and(|d| d.reason == DrainReason::ServiceStopped)
}

/// Whether `node` still puts back the data saved at the last stop: given it, and never Ready
/// since (each type is Ready only once its restore is in), and not asked to save.
pub fn restoring(node: &ObservedNode) -> bool {
    node.spec.restore.is_some() && !node.was_ready && !stop_saving(node)
}

/// The Service's Degraded reason while a stop cannot save its data.
pub const SAVE_FAILED: &str = "SaveFailed";

fn stage<'a>(desired: &Desired, live: &[&'a ObservedNode]) -> Stage<'a> {
    let Some(role) = desired.saved_on_stop else {
        return Stage::DeleteAll;
    };
    let usable = |n: &&&ObservedNode| {
        n.spec.role == role && !n.suspect && n.unhealthy.is_none() && n.agent_failure.is_none()
    };
    let saving = stop_saving;
    // Saved and recorded: whatever the saver reports since (it may have failed after).
    let recorded = desired.restore.as_ref().map(|r| r.sha256.as_str());
    if recorded.is_some() && live.iter().any(|n| n.saved.as_deref() == recorded) {
        return Stage::DeleteAll;
    }
    // Nodes that hold data: a VM, and no user accepted losing it. With none, nothing to save.
    let holders: Vec<&&ObservedNode> = live
        .iter()
        .filter(|n| n.spec.role == role && n.address.is_some() && !n.accept_data_loss)
        .collect();
    if holders.is_empty() {
        return Stage::DeleteAll;
    }
    // A restore of the last stop's save still running: a save now would hold part of it, and
    // replace the whole one. It is waited for; one that failed keeps the nodes.
    let restoring = holders.iter().copied().copied().find(|n| restoring(n));
    if let Some(node) = restoring {
        return match &node.agent_failure {
            Some(failure) => Stage::Blocked(format!(
                "node {} failed putting back the data saved at the last stop ({failure}); a save now would hold less than that one, so every node is kept, and charged; `cpsctl node replace NODE --accept-data-loss` on each node of the role lets the stop go on, keeping the earlier save",
                node.name
            )),
            None => Stage::Saving,
        };
    }
    let mut candidates: Vec<&&ObservedNode> = live.iter().filter(usable).collect();
    candidates.sort_by_key(|n| (!saving(n), !n.agent_ready, ordinal(&desired.service, n)));
    let accept = "`cpsctl node replace NODE --accept-data-loss` on each node of the role lets the stop go on without their data";
    let Some(saver) = candidates.first().filter(|n| saving(n) || n.agent_ready) else {
        // Nobody can save now: the nodes that hold data are kept until one can.
        let states: Vec<String> = holders
            .iter()
            .map(|n| match (&n.agent_failure, n.unhealthy) {
                (_, Some(reason)) => format!("{} unhealthy ({reason})", n.name),
                (Some(failure), None) => format!("{} failed: {failure}", n.name),
                (None, None) => format!("{} not ready", n.name),
            })
            .collect();
        return Stage::Blocked(format!(
            "no node of role {role} can save the data for the stop ({}): every node is kept, and charged, until one can; {accept}",
            states.join("; "),
        ));
    };
    if !saving(saver) {
        return Stage::Ask(saver);
    }
    match &saver.save_failure {
        Some(failure) if saver.saved.is_none() => Stage::Blocked(format!(
            "node {} could not save the data for the stop: {failure}; it tries again, and every node is kept, and charged, until a save is stored; {accept}",
            saver.name,
        )),
        // Saving, or saved and waiting for the status to record it.
        _ => Stage::Saving,
    }
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::{DrainReason, NodeDrain, ServiceType};

    use super::super::testing::*;
    use super::save_blocked;
    use crate::service::validate::saved_data;

    #[test]
    fn a_stopping_mysql_service_saves_its_data_before_any_node_goes() {
        let mut d = desired(ServiceType::Mysql, false, &[("mysql", 2), ("glb", 1)]);
        let mut nodes = vec![
            node(&d, "mysql", 0),
            node(&d, "mysql", 1),
            node(&d, "glb", 0),
        ];
        for (i, n) in nodes.iter_mut().enumerate() {
            n.address = Some(format!("127.0.0.{}", i + 1));
        }
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        // The first mysql node is told to save (a released drain for the stop); no node goes.
        assert_eq!(steps(&d, &nodes), vec![pair("svc-mysql-0", "release")]);
        let stopping = Some(NodeDrain {
            reason: DrainReason::ServiceStopped,
            released: true,
            seconds: 1,
        });
        nodes[0].spec.drain = stopping.clone();
        nodes[0].agent_ready = false;
        assert_eq!(steps(&d, &nodes), vec![], "saving");
        // A save that fails is tried again by the node; the stop waits and says why.
        nodes[0].save_failure = Some("upload: 413 archive larger than 1024 bytes".into());
        assert_eq!(steps(&d, &nodes), vec![], "kept while the save fails");
        let why = save_blocked(&d, &nodes).expect("blocked");
        assert!(
            why.starts_with("node svc-mysql-0 could not save the data for the stop: upload: 413"),
            "{why}"
        );
        nodes[0].save_failure = None;
        nodes[0].saved = Some("abc".into());
        assert_eq!(steps(&d, &nodes), vec![], "saved, not yet in the status");
        d.restore = Some(saved_data("abc".into()));
        assert_eq!(
            steps(&d, &nodes),
            ["svc-glb-0", "svc-mysql-0", "svc-mysql-1"]
                .map(|n| pair(n, "delete:ServiceStopped"))
                .to_vec(),
            "recorded: every node goes"
        );
        // A saver that failed hands over to the next serving node.
        nodes[0].saved = None;
        nodes[0].agent_failure = Some("dump the database: refused".into());
        assert_eq!(steps(&d, &nodes), vec![pair("svc-mysql-1", "release")]);
        // With no node left to save, every node is kept and the Service says why.
        nodes[1].agent_ready = false;
        nodes[1].suspect = true;
        nodes[1].unhealthy = Some("HeartbeatStale");
        assert_eq!(steps(&d, &nodes), vec![], "kept");
        let why = save_blocked(&d, &nodes).expect("blocked");
        assert!(
            why.contains("svc-mysql-0 failed: dump the database: refused")
                && why.contains("svc-mysql-1 unhealthy (HeartbeatStale)"),
            "{why}"
        );
        // Once its users accept losing both, the stop goes on without the data.
        nodes[0].accept_data_loss = true;
        nodes[1].accept_data_loss = true;
        assert_eq!(steps(&d, &nodes).len(), 3);
        assert_eq!(save_blocked(&d, &nodes), None);
    }

    #[test]
    fn a_stop_waits_for_a_restore_under_way_and_keeps_the_nodes_when_it_failed() {
        let mut d = desired(ServiceType::Kvstore, false, &[("node", 3)]);
        d.restore = Some(saved_data("old".into()));
        let mut nodes: Vec<_> = (0..3).map(|i| node(&d, "node", i)).collect();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.address = Some(format!("127.0.0.{}", i + 1));
            n.spec.restore = d.restore.clone();
        }
        // The manager still loads the saved keys; the others serve what is loaded so far.
        nodes[0].agent_ready = false;
        nodes[0].was_ready = false;
        assert_eq!(steps(&d, &nodes), vec![], "no partial save is asked for");
        assert_eq!(save_blocked(&d, &nodes), None, "a wait, not a failure");
        nodes[0].agent_failure = Some("loading the saved keys: refused".into());
        assert_eq!(steps(&d, &nodes), vec![], "kept");
        let why = save_blocked(&d, &nodes).expect("said");
        assert!(
            why.contains("node svc-node-0 failed putting back the data saved at the last stop"),
            "{why}"
        );
        // Restored: the stop saves as usual, also when the node is not Ready at the moment.
        nodes[0].agent_failure = None;
        nodes[0].was_ready = true;
        assert_eq!(save_blocked(&d, &nodes), None);
        assert_eq!(
            steps(&d, &nodes),
            vec![("svc-node-1".to_string(), "release".to_string())],
            "a Ready node saves while the restored one is not Ready for a moment"
        );
        nodes[0].agent_ready = true;
        assert_eq!(
            steps(&d, &nodes),
            vec![("svc-node-0".to_string(), "release".to_string())]
        );
    }

    #[test]
    fn a_recorded_save_ends_the_stop_and_a_restart_waits_for_a_save_under_way() {
        let mut d = desired(ServiceType::Mysql, false, &[("mysql", 1)]);
        let mut nodes = vec![node(&d, "mysql", 0)];
        nodes[0].address = Some("127.0.0.1".into());
        nodes[0].spec.drain = Some(NodeDrain {
            reason: DrainReason::ServiceStopped,
            released: true,
            seconds: 1,
        });
        nodes[0].agent_ready = false;
        // Stored and recorded, then the agent failed: the stop still ends.
        nodes[0].saved = Some("abc".into());
        nodes[0].agent_failure = Some("mariadbd exited".into());
        d.restore = Some(saved_data("abc".into()));
        assert_eq!(
            steps(&d, &nodes),
            vec![(
                "svc-mysql-0".to_string(),
                "delete:ServiceStopped".to_string()
            )]
        );

        // Started again while the save still fails: no empty node is made beside it.
        nodes[0].saved = None;
        nodes[0].agent_failure = None;
        nodes[0].save_failure = Some("upload: 413".into());
        d.running = true;
        d.restore = None;
        let step = steps(&d, &nodes);
        assert!(step.iter().all(|(_, what)| what != "create"), "{step:?}");
        let why = save_blocked(&d, &nodes).expect("said");
        assert!(
            why.contains("no new node of role mysql is made until its save is stored"),
            "{why}"
        );
    }
}
