//! Nodes' names (`<service>-<role>-<ordinal>`, the same again after a stale read) and the spec a
//! new node is made with.

use conpaas_crds::v1alpha1::{Member, ServiceNodeSpec};

use crate::service::model::{Desired, DesiredRole, ObservedNode};

/// `<service>-<role>-<ordinal>`.
pub fn node_name(service: &str, role: &str, ordinal: u32) -> String {
    format!("{service}-{role}-{ordinal}")
}

pub(crate) fn ordinal(service: &str, node: &ObservedNode) -> Option<u32> {
    node.name
        .strip_prefix(&format!("{service}-{}-", node.spec.role))?
        .parse()
        .ok()
}

pub(super) fn node_spec(
    desired: &Desired,
    role: &DesiredRole,
    token: String,
    members: &[Member],
) -> ServiceNodeSpec {
    ServiceNodeSpec {
        application: desired.application.clone(),
        service: desired.service.clone(),
        service_type: desired.service_type,
        role: role.name.clone(),
        cloud: role.cloud.clone(),
        instance_type: role.instance_type.clone(),
        volume: role.volume.clone(),
        token,
        code: desired.config.code.clone(),
        settings: desired.config.settings.clone(),
        startup_script: desired.config.startup_script.clone(),
        heartbeat_timeout_seconds: desired.config.heartbeat_timeout_seconds,
        paused: false,
        members: members.to_vec(),
        generic: desired.config.generic.clone(),
        filesystem: desired.config.filesystem.clone(),
        links: desired.config.links.clone(),
        drain: None,
        restore: desired
            .restore
            .clone()
            .filter(|_| desired.saved_on_stop == Some(role.name.as_str())),
    }
}
