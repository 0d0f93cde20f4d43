//! The controller's half of a ServiceNode's status: the VM as the cloud reports it and the
//! node's Ready condition, which combines the VM with the agent's report. Pure.

use std::time::Duration;

use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::{AgentState, ServiceNode, ServiceNodeStatus, VmState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{Desired, merge};

/// What the controller knows about the node's VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmView {
    /// Provider ID, once created.
    pub provider_id: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// State; `None` before the VM exists.
    pub state: Option<VmState>,
    /// Creation time.
    pub created_at: Option<Time>,
}

/// The node's Ready condition from its VM and its agent's report.
pub fn ready(node: &ServiceNode, vm: &VmView, heartbeat_timeout: Duration, now: &Time) -> Desired {
    let agent = node.status.as_ref().and_then(|s| s.agent.as_ref());
    let no = |reason: &str, message: String| Desired::new(READY, false, reason, message);
    match vm.state {
        None => return no("VmPending", "the VM is being created".into()),
        Some(VmState::Pending) => return no("VmPending", "the VM is starting".into()),
        Some(VmState::Failed) => return no("VmFailed", "the cloud reports the VM failed".into()),
        Some(VmState::Terminated | VmState::Stopping) => {
            return no("VmGone", "the VM is gone".into());
        }
        Some(VmState::Running) => {}
    }
    let Some(agent) = agent else {
        return no(
            "AgentNotReported",
            "waiting for the agent's first report".into(),
        );
    };
    if let Some(beat) = &agent.heartbeat_time {
        let age = now.0.duration_since(beat.0).as_secs_f64();
        if age > heartbeat_timeout.as_secs_f64() {
            return no(
                "HeartbeatStale",
                format!("no heartbeat from the agent for {age:.0}s"),
            );
        }
    }
    if agent.observed_generation != node.metadata.generation {
        return no(
            "AgentApplying",
            "the agent is applying the latest spec".into(),
        );
    }
    let message = agent.message.clone().unwrap_or_default();
    match agent.state {
        Some(AgentState::Ready) => Desired::new(READY, true, "AgentReady", message),
        Some(AgentState::Failed) => no("AgentFailed", message),
        _ => no("AgentStarting", message),
    }
}

/// The full controller-owned status (server-side apply drops owned fields that are left out).
pub fn build(
    node: &ServiceNode,
    vm: &VmView,
    heartbeat_timeout: Duration,
    now: &Time,
) -> ServiceNodeStatus {
    let previous = node.status.clone().unwrap_or_default();
    ServiceNodeStatus {
        provider_id: vm.provider_id.clone(),
        address: vm.address.clone(),
        vm_state: vm.state,
        created_at: vm.created_at.clone(),
        observed_generation: node.metadata.generation,
        conditions: merge(
            &previous.conditions,
            vec![ready(node, vm, heartbeat_timeout, now)],
            node.metadata.generation,
            now,
        ),
        agent: None,
    }
}

/// True when `status` differs from what the node shows in the controller's fields.
pub fn changed(node: &ServiceNode, status: &ServiceNodeStatus) -> bool {
    let current = node.status.clone().unwrap_or_default();
    current.provider_id != status.provider_id
        || current.address != status.address
        || current.vm_state != status.vm_state
        || current.created_at != status.created_at
        || current.observed_generation != status.observed_generation
        || current.conditions != status.conditions
}
