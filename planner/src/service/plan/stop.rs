//! A stopping Service: the type's saving role saves the data first (its first serving node,
//! drained with the reason `ServiceStopped`), then every node goes.

use conpaas_crds::v1alpha1::{DrainReason, NodeDrain, ServiceNodeSpec};

use crate::service::model::{Action, Desired, ObservedNode};

use super::naming::ordinal;

/// A stop: every node is deleted, once the saver (the first serving node of the type's
/// `saved_on_stop` role) saved the data and the Service's status records it. A saver that fails
/// or goes silent hands over to the next serving node; with none left, nothing is saved.
pub(super) fn plan_stop(desired: &Desired, live: &[&ObservedNode]) -> Vec<Action> {
    let delete_all = || {
        live.iter()
            .map(|n| Action::DeleteNode {
                name: n.name.clone(),
                reason: DrainReason::ServiceStopped.as_str(),
            })
            .collect()
    };
    let Some(role) = desired.saved_on_stop else {
        return delete_all();
    };
    let usable = |n: &&&ObservedNode| {
        n.spec.role == role && !n.suspect && n.unhealthy.is_none() && n.agent_failure.is_none()
    };
    let saving = |n: &ObservedNode| {
        n.spec
            .drain
            .as_ref()
            .is_some_and(|d| d.reason == DrainReason::ServiceStopped)
    };
    let mut candidates: Vec<&&ObservedNode> = live.iter().filter(usable).collect();
    candidates.sort_by_key(|n| (!saving(n), !n.agent_ready, ordinal(&desired.service, n)));
    let Some(saver) = candidates.first().filter(|n| saving(n) || n.agent_ready) else {
        return delete_all();
    };
    if saver.saved.is_some() && saver.saved == desired.restore.as_ref().map(|r| r.sha256.clone()) {
        return delete_all();
    }
    if saving(saver) {
        // Saving, or saved and waiting for the status to record it.
        return Vec::new();
    }
    vec![Action::PatchNodeSpec {
        name: saver.name.clone(),
        spec: ServiceNodeSpec {
            drain: Some(NodeDrain {
                reason: DrainReason::ServiceStopped,
                released: true,
                seconds: desired.drain.seconds,
            }),
            ..saver.spec.clone()
        },
    }]
}

#[cfg(test)]
mod tests {
    use conpaas_crds::v1alpha1::{DrainReason, NodeCode, NodeDrain, ServiceType};

    use super::super::testing::*;

    #[test]
    fn a_stopping_mysql_service_saves_its_data_before_any_node_goes() {
        let mut d = desired(ServiceType::Mysql, false, &[("mysql", 2), ("glb", 1)]);
        let mut nodes = vec![
            node(&d, "mysql", 0),
            node(&d, "mysql", 1),
            node(&d, "glb", 0),
        ];
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
        nodes[0].saved = Some("abc".into());
        assert_eq!(steps(&d, &nodes), vec![], "saved, not yet in the status");
        d.restore = Some(NodeCode {
            version: "saved-data".into(),
            config_map: None,
            url: None,
            artifact: true,
            sha256: "abc".into(),
        });
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
        // With no node left to save, the stop goes on without it.
        nodes[1].agent_ready = false;
        nodes[1].suspect = true;
        assert_eq!(steps(&d, &nodes).len(), 3);
    }
}
