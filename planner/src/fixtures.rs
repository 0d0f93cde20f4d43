//! Builders the unit tests of several loops share.

use conpaas_crds::v1alpha1::{ServiceNodeSpec, ServiceType};

/// A helloworld `node` on the `local` cloud of Service `s` with this token.
pub fn node_spec(token: &str) -> ServiceNodeSpec {
    ServiceNodeSpec {
        application: "a".into(),
        service: "s".into(),
        service_type: ServiceType::Helloworld,
        role: "node".into(),
        cloud: "local".into(),
        instance_type: None,
        token: token.into(),
        code: None,
        settings: Default::default(),
        startup_script: None,
        heartbeat_timeout_seconds: 60,
        paused: false,
        members: vec![],
        generic: None,
        links: vec![],
        drain: None,
        restore: None,
    }
}
