//! Types shared by several kinds: phases, VM states, condition lists.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The life-cycle phase of a Service, as ConPaaS named them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Phase {
    // Created, never started.
    #[default]
    Init,
    // Starting: nodes are being created and have not all reported ready yet.
    Prologue,
    // Every desired node is ready.
    Running,
    // Running, with nodes being added, removed or reconfigured.
    Adapting,
    // Stopping: nodes are being removed.
    Epilogue,
    // Stopped: no nodes; the Service and its settings remain.
    Stopped,
    // The Service cannot be satisfied; see its conditions.
    Error,
}

impl Phase {
    /// The name as written in status and shown by kubectl.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Init => "INIT",
            Phase::Prologue => "PROLOGUE",
            Phase::Running => "RUNNING",
            Phase::Adapting => "ADAPTING",
            Phase::Epilogue => "EPILOGUE",
            Phase::Stopped => "STOPPED",
            Phase::Error => "ERROR",
        }
    }
}

/// A VM's state as its cloud reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VmState {
    // Requested, not yet running.
    Pending,
    // Running.
    Running,
    // Being shut down.
    Stopping,
    // Gone or shut down for good.
    Terminated,
    // The cloud reports a failure.
    Failed,
    // Powered off, stopped, suspended or undeployed by someone: it does not serve, but its
    // disks are kept and it may be started again.
    Halted,
    // The cloud lost touch with the VM's host: it may still run.
    Unknown,
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the list holds a condition of this type with status "True".
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}
