//! helloworld: ConPaaS' reference service; every node serves a greeting over HTTP.

use super::{RoleDescriptor, SettingCheck, SettingDescriptor, TypeDescriptor};

/// The helloworld type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "helloworld",
    summary: "ConPaaS' reference service: every node serves a greeting over HTTP on port 8080.",
    roles: &[RoleDescriptor {
        name: "node",
        summary: "serves the greeting on port 8080 of its address",
        default_count: 1,
        min: 0,
        max: None,
    }],
    default_role: "node",
    settings: &[SettingDescriptor {
        key: "greeting",
        description: "the text every node serves on port 8080",
        default: Some("Hello World!"),
        check: SettingCheck::Text { max_len: 256 },
    }],
    members: false,
    link_exports: &[],
    credentials: None,
    check_count: None,
    runs_user_code: false,
    conpaas_alias: None,
    routers: &[],
    drain_seconds: 0,
    access: None,
    endpoint: None,
    saved_on_stop: None,
    data_copies: None,
    restart_on_link_change: &[],
};
