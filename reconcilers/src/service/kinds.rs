//! What differs between service types, one module per type behind [`ServiceKind`]. Roles and
//! their default counts live on [`ServiceType`] because the CRD's CEL rules are built from them.

use conpaas_crds::v1alpha1::ServiceType;

/// Type-specific behaviour the Service loop needs.
pub trait ServiceKind: Sync {
    /// Setting keys this type understands, each with a one-line description.
    fn settings(&self) -> &'static [(&'static str, &'static str)];
    /// Whether every node is told the service's members and their addresses.
    fn with_members(&self) -> bool;
}

/// The behaviour of a service type.
pub fn kind(service_type: ServiceType) -> &'static dyn ServiceKind {
    match service_type {
        ServiceType::Helloworld => &Helloworld,
        ServiceType::Generic => &Generic,
    }
}

/// ConPaaS' reference service: every node serves a greeting on port 8080.
struct Helloworld;

impl ServiceKind for Helloworld {
    fn settings(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "greeting",
            "the text every node serves (default \"Hello World!\")",
        )]
    }
    fn with_members(&self) -> bool {
        false
    }
}

/// ConPaaS 2.0's generic service: the user's lifecycle scripts on a master and nodes, which
/// learn each other's addresses.
struct Generic;

impl ServiceKind for Generic {
    fn settings(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn with_members(&self) -> bool {
        true
    }
}
