//! Builders the unit tests of several loops share.

use conpaas_crds::v1alpha1::{ServiceNodeSpec, ServiceType};

use crate::service::plan::ObservedNode;

/// A helloworld `node` on the `local` cloud of Service `s` with this token.
pub fn node_spec(token: &str) -> ServiceNodeSpec {
    ServiceNodeSpec {
        application: "a".into(),
        service: "s".into(),
        service_type: ServiceType::Helloworld,
        role: "node".into(),
        cloud: "local".into(),
        instance_type: None,
        volume: None,
        token: token.into(),
        code: None,
        settings: Default::default(),
        startup_script: None,
        heartbeat_timeout_seconds: 60,
        paused: false,
        members: vec![],
        generic: None,
        filesystem: None,
        links: vec![],
        drain: None,
        restore: None,
    }
}

/// A node as the Service loop observes it: converged, ready and serving, with this spec.
pub fn serving_node(name: &str, spec: ServiceNodeSpec) -> ObservedNode {
    ObservedNode {
        metrics: Default::default(),
        name: name.into(),
        spec,
        deleting: false,
        accept_data_loss: false,
        unhealthy: None,
        suspect: false,
        ready: true,
        was_ready: true,
        settled: true,
        address: None,
        running_code: None,
        failed_code: None,
        agent_ready: true,
        agent_failure: None,
        failure: None,
        routes_to: None,
        recovered_position: None,
        drained: false,
        credentials_version: None,
        saved: None,
        save_failure: None,
    }
}
