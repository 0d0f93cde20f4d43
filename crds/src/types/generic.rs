//! generic (ConPaaS 2.0): the user's lifecycle scripts on a master and nodes that know each other.

use super::{RoleDescriptor, TypeDescriptor};

/// The generic type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "generic",
    summary: "ConPaaS 2.0's generic service: the code archive's lifecycle scripts (init.sh, run.sh, notify.sh, interrupt.sh, cleanup.sh) run on one master and any number of nodes, which learn each other's addresses. Structured options: `spec.generic`.",
    roles: &[
        RoleDescriptor {
            name: "master",
            summary: "runs the scripts with MY_ROLE=master; exactly one, replaced in place",
            default_count: 1,
            min: 1,
            max: Some(1),
        },
        RoleDescriptor {
            name: "node",
            summary: "runs the scripts with MY_ROLE=node and MASTER_IP set",
            default_count: 0,
            min: 0,
            max: None,
        },
    ],
    default_role: "node",
    settings: &[],
    members: true,
    link_exports: &[],
    credentials: None,
    check_count: None,
    runs_user_code: true,
    conpaas_alias: None,
    routers: &[],
    drain_seconds: 0,
    access: None,
    endpoint: None,
    saved_on_stop: None,
    data_copies: None,
    restart_on_link_change: &[],
};
