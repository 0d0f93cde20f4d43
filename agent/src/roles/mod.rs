//! The software a node runs, one module per service type. A role converges to the node's spec
//! in `apply`, is polled for state changes, and stops cleanly in `shutdown`.

mod generic;
mod helloworld;

use std::path::PathBuf;

use conpaas_crds::v1alpha1::{AgentState, ScriptStatus, ServiceNodeSpec, ServiceType};
use kube::Client;

/// What a role reports into `status.agent`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoleReport {
    pub state: Option<AgentState>,
    pub message: Option<String>,
    pub code_version: Option<String>,
    pub greeting: Option<String>,
    pub scripts: Vec<ScriptStatus>,
}

/// What roles need from their surroundings.
#[derive(Clone)]
pub struct RoleEnv {
    pub client: Client,
    pub namespace: String,
    pub work_dir: PathBuf,
    pub address: String,
}

/// The role of one node.
pub enum Role {
    Helloworld(helloworld::Helloworld),
    Generic(Box<generic::Generic>),
}

impl Role {
    /// The role for a service type.
    pub fn new(service_type: ServiceType, env: RoleEnv) -> Self {
        match service_type {
            ServiceType::Helloworld => Role::Helloworld(helloworld::Helloworld::new(env)),
            ServiceType::Generic => Role::Generic(Box::new(generic::Generic::new(env))),
        }
    }

    /// Converges to `spec`.
    pub async fn apply(&mut self, spec: &ServiceNodeSpec) {
        match self {
            Role::Helloworld(r) => r.apply(spec).await,
            Role::Generic(r) => r.apply(spec).await,
        }
    }

    /// Notices what changed on its own (a script ended).
    pub async fn poll(&mut self) {
        if let Role::Generic(r) = self {
            r.poll().await;
        }
    }

    /// The current report.
    pub fn report(&self) -> RoleReport {
        match self {
            Role::Helloworld(r) => r.report(),
            Role::Generic(r) => r.report(),
        }
    }

    /// Stops the role's software.
    pub async fn shutdown(&mut self) {
        match self {
            Role::Helloworld(r) => r.shutdown(),
            Role::Generic(r) => r.shutdown().await,
        }
    }
}
