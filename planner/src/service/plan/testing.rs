//! What the plan's tests build on: a desired state of a type, nodes as the planner made them,
//! and readers of a plan's actions.

use conpaas_crds::v1alpha1::{NodeDrain, ServiceType};

use super::naming::{node_name, node_spec};
use super::plan;
use conpaas_crds::types::DataCopies;

use crate::service::model::{Action, Desired, DesiredRole, DrainPolicy, NodeConfig, ObservedNode};

pub fn desired(ty: ServiceType, running: bool, roles: &[(&str, i32)]) -> Desired {
    Desired {
        service: "svc".into(),
        application: "app".into(),
        service_type: ty,
        running,
        held: None,
        leaving_first: vec![],
        roles: roles
            .iter()
            .map(|(name, count)| DesiredRole {
                name: name.to_string(),
                count: *count,
                cloud: "local".into(),
                instance_type: None,
                volume: None,
            })
            .collect(),
        config: NodeConfig {
            with_members: ty.descriptor().members,
            ..Default::default()
        },
        max_unhealthy_percent: 40,
        paused: false,
        drain: DrainPolicy {
            seconds: ty.descriptor().drain_seconds,
            routers: ty.descriptor().routers,
        },
        saved_on_stop: ty.descriptor().saved_on_stop,
        data_copies: ty
            .descriptor()
            .data_copies
            .map_or(DataCopies::None, |copies| {
                let spec = serde_json::json!({"application": "app", "type": ty});
                copies(&serde_json::from_value(spec).expect("a spec"))
            }),
        restore: None,
    }
}

/// A node as the planner would have created it, already converged.
pub fn node(d: &Desired, role: &str, ordinal: u32) -> ObservedNode {
    let r = d
        .roles
        .iter()
        .find(|r| r.name == role)
        .cloned()
        .unwrap_or(DesiredRole {
            name: role.into(),
            count: 0,
            cloud: "local".into(),
            instance_type: None,
            volume: None,
        });
    crate::fixtures::serving_node(
        &node_name("svc", role, ordinal),
        node_spec(d, &r, format!("token-{role}-{ordinal}"), &[]),
    )
}

pub fn created(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateNode { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

pub fn deleted(actions: &[Action]) -> Vec<(String, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteNode { name, reason } => Some((name.clone(), *reason)),
            _ => None,
        })
        .collect()
}

/// What `plan` does to each node: `drain`, `release`, `delete:<reason>`, `spec` (re-specced).
pub fn steps(d: &Desired, nodes: &[ObservedNode]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = plan(d, nodes)
        .into_iter()
        .map(|a| match a {
            Action::DeleteNode { name, reason } => (name, format!("delete:{reason}")),
            Action::CreateNode { name, .. } => (name, "create".into()),
            Action::PatchNodeSpec { name, spec } => {
                let what = match spec.drain {
                    Some(NodeDrain { released: true, .. }) => "release",
                    Some(_) => "drain",
                    None => "spec",
                };
                (name, what.into())
            }
        })
        .collect();
    out.sort();
    out
}
