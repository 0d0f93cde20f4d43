//! The controller's half of a ServiceNode's status: the VM as the cloud reports it and the
//! node's Ready condition, which combines the VM with the agent's report. Pure.

use std::time::Duration;

use conpaas_cloud::CloudError;
use conpaas_crds::labels::conditions::{HEALTHY, READY};
use conpaas_crds::v1alpha1::{AgentState, ServiceNode, ServiceNodeStatus, VmState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::vm_view::VmView;
use crate::conditions::{Desired, merge};
use crate::error::Error;
pub use conpaas_planner::node_reasons::{
    PERMANENT_PROVIDER_REASONS, UNHEALTHY_REASONS, is_failure, is_stalled,
};

/// How long a new VM's agent may take to renew its heartbeat Lease the first time.
pub fn startup_grace(node: &ServiceNode) -> Duration {
    Duration::from_secs((3 * node.spec.heartbeat_timeout_seconds.max(1) as u64).max(120))
}

/// Ready's message from a VM's start until its agent's first report. The first heartbeat comes
/// between the two and is not a step of its own: a message of its own would cost every new node
/// one more status write.
const AGENT_STARTING: &str = "waiting for the agent's first heartbeat and report";

/// The node's Ready condition from its VM, its agent's heartbeat (the Lease's renew time) and
/// its agent's report.
pub fn ready(
    node: &ServiceNode,
    vm: &VmView,
    heartbeat: Option<&Timestamp>,
    now: &Time,
) -> Desired {
    let agent = node.status.as_ref().and_then(|s| s.agent.as_ref());
    let no = |reason: &str, message: String| Desired::new(READY, false, reason, message);
    match vm.state {
        None => return no("VmPending", "the VM is being created".into()),
        Some(VmState::Pending) => return no("VmPending", "the VM is starting".into()),
        Some(VmState::Failed) => return no("VmFailed", "the cloud reports the VM failed".into()),
        Some(VmState::Halted) => {
            return no(
                "VmHalted",
                "the cloud reports the VM powered off, stopped or suspended (its disks are kept)"
                    .into(),
            );
        }
        // Out of the cloud's sight, it may still run: its own heartbeat tells.
        Some(VmState::Unknown) if !beating(node, heartbeat, now) => {
            return no(
                "VmUnknown",
                "the cloud lost touch with the VM's host, and its agent is silent".into(),
            );
        }
        Some(VmState::Unknown) => {}
        Some(VmState::Terminated | VmState::Stopping) => {
            return no("VmGone", "the VM is gone".into());
        }
        Some(VmState::Running) => {}
    }
    let age = |t: &Timestamp| now.0.duration_since(*t).as_secs_f64();
    match heartbeat {
        None => {
            let booted = vm.created_at.as_ref().map_or(0.0, |t| age(&t.0));
            if booted > startup_grace(node).as_secs_f64() {
                return no(
                    "AgentNeverReported",
                    format!("no heartbeat from the agent {booted:.0}s after the VM started"),
                );
            }
            return no("AgentNotReported", AGENT_STARTING.into());
        }
        Some(beat) if age(beat) > node.spec.heartbeat_timeout_seconds as f64 => {
            return no(
                "HeartbeatStale",
                format!("no heartbeat from the agent for {:.0}s", age(beat)),
            );
        }
        Some(_) => {}
    }
    let Some(agent) = agent else {
        return no("AgentNotReported", AGENT_STARTING.into());
    };
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

/// Whether the node's agent renewed its heartbeat within its timeout.
fn beating(node: &ServiceNode, heartbeat: Option<&Timestamp>, now: &Time) -> bool {
    heartbeat.is_some_and(|beat| {
        now.0.duration_since(*beat).as_secs_f64() <= node.spec.heartbeat_timeout_seconds as f64
    })
}

/// The node's Ready reason when its cloud refused a call: `Provider<category>`, e.g.
/// `ProviderQuotaExceeded`; the message is the provider's own.
pub fn provider_failure_reason(error: &CloudError) -> String {
    format!("Provider{}", error.category())
}

/// Ends the message of a refusal that is not retried by itself.
pub const PARKED: &str = " (tried again when the node or its Cloud changes, else every 10 minutes)";

/// The node's status after a failed cloud call, and its Ready reason: `Ready=False` with
/// `Provider<category>` and the whole error chain (the provider's own message last). `None` for
/// failures that are not the node's to show: a failed look at a VM that runs is the Cloud's to
/// report (its Ready condition), not a reason to call a serving node unready.
pub fn failure_status(
    node: &ServiceNode,
    error: &Error,
    now: &Time,
) -> Option<(String, ServiceNodeStatus)> {
    let Error::Cloud { source, .. } = error else {
        return None;
    };
    let has_vm = node
        .status
        .as_ref()
        .is_some_and(|s| s.provider_id.is_some());
    if has_vm && node.metadata.deletion_timestamp.is_none() {
        return None;
    }
    let reason = provider_failure_reason(source);
    let built = build(node, &super::vm_view::current_view(node), None, now);
    let mut message = error.chain();
    if error.is_permanent() {
        // Whoever reads it knows that waiting will not help: changing something will.
        message.push_str(PARKED);
    }
    let ready = Desired::new(READY, false, reason.clone(), message);
    Some((reason, with_ready(node, built, ready, now)))
}

/// `status` with its Ready condition replaced by `ready` (the other conditions kept).
pub fn with_ready(
    node: &ServiceNode,
    mut status: ServiceNodeStatus,
    ready: Desired,
    now: &Time,
) -> ServiceNodeStatus {
    let previous = node.status.clone().unwrap_or_default();
    let merged = merge(
        &previous.conditions,
        vec![ready],
        node.metadata.generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.splice(0..0, merged);
    status
}

/// The node's `Healthy` condition. Its `lastTransitionTime` tells the Service loop how long the
/// node has been unhealthy, so a node is replaced only after the problem persisted (as Cluster
/// API's MachineHealthCheck does) and an outage is seen as a whole, not node by node.
pub fn healthy(ready: &Desired) -> Desired {
    if !ready.status && UNHEALTHY_REASONS.contains(&ready.reason.as_str()) {
        Desired::new(HEALTHY, false, ready.reason.clone(), ready.message.clone())
    } else {
        Desired::new(HEALTHY, true, "Healthy", "")
    }
}

/// The full controller-owned status (server-side apply drops owned fields that are left out).
pub fn build(
    node: &ServiceNode,
    vm: &VmView,
    heartbeat: Option<&Timestamp>,
    now: &Time,
) -> ServiceNodeStatus {
    let previous = node.status.clone().unwrap_or_default();
    let ready = ready(node, vm, heartbeat, now);
    let healthy = healthy(&ready);
    ServiceNodeStatus {
        provider_id: vm.provider_id.clone(),
        address: vm.address.clone(),
        vm_state: vm.state,
        created_at: vm.created_at.clone(),
        create_requested_at: vm.create_requested_at.clone(),
        terminated_at: previous.terminated_at.clone(),
        observed_generation: node.metadata.generation,
        ready_at: previous
            .ready_at
            .clone()
            .or_else(|| ready.status.then(|| now.clone())),
        conditions: merge(
            &previous.conditions,
            vec![ready, healthy],
            node.metadata.generation,
            now,
        ),
        agent: None,
    }
}

/// A deleted node's status once its VMs are confirmed gone: what it recorded, with the VM
/// terminated (`vmState: Terminated`, Ready False `VmGone`) at `terminatedAt` (now): the
/// credit ledger's charge of the node ends then.
pub fn gone(node: &ServiceNode, now: &Time) -> ServiceNodeStatus {
    let previous = node.status.clone().unwrap_or_default();
    let vm = VmView {
        provider_id: previous.provider_id,
        address: previous.address,
        state: Some(VmState::Terminated),
        created_at: previous.created_at,
        create_requested_at: previous.create_requested_at,
    };
    ServiceNodeStatus {
        terminated_at: Some(now.clone()),
        ..build(node, &vm, None, now)
    }
}

/// True when `status` differs from what the node shows in the controller's fields.
pub fn changed(node: &ServiceNode, status: &ServiceNodeStatus) -> bool {
    let current = node.status.clone().unwrap_or_default();
    let differs = [
        ("providerId", current.provider_id != status.provider_id),
        ("address", current.address != status.address),
        ("vmState", current.vm_state != status.vm_state),
        ("createdAt", current.created_at != status.created_at),
        (
            "terminatedAt",
            current.terminated_at != status.terminated_at,
        ),
        (
            "createRequestedAt",
            current.create_requested_at != status.create_requested_at,
        ),
        (
            "observedGeneration",
            current.observed_generation != status.observed_generation,
        ),
        ("readyAt", current.ready_at != status.ready_at),
        ("conditions", current.conditions != status.conditions),
    ];
    let fields: Vec<&str> = differs
        .iter()
        .filter(|(_, d)| *d)
        .map(|(f, _)| *f)
        .collect();
    if !fields.is_empty() {
        tracing::debug!(?fields, "status changed");
    }
    !fields.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::{AgentStatus, ServiceNodeSpec, ServiceNodeStatus};
    use kube::api::ObjectMeta;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn node(agent: Option<AgentState>) -> ServiceNode {
        let mut node = ServiceNode::new(
            "s-node-0",
            ServiceNodeSpec {
                heartbeat_timeout_seconds: 10,
                ..conpaas_planner::fixtures::node_spec("t")
            },
        );
        node.metadata = ObjectMeta {
            generation: Some(1),
            ..node.metadata
        };
        node.status = Some(ServiceNodeStatus {
            agent: agent.map(|state| AgentStatus {
                state: Some(state),
                observed_generation: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        });
        node
    }

    fn running_since(secs: i64) -> VmView {
        VmView {
            provider_id: Some("local:///x".into()),
            address: None,
            state: Some(VmState::Running),
            created_at: Some(Time(at(secs))),
            create_requested_at: None,
        }
    }

    #[test]
    fn permanent_provider_reasons_are_the_errors_not_worth_retrying() {
        let every = [
            CloudError::NotFound("x".into()),
            CloudError::AlreadyExists("x".into()),
            CloudError::Unauthorized("x".into()),
            CloudError::QuotaExceeded("x".into()),
            CloudError::Throttled("x".into()),
            CloudError::Transient("x".into()),
            CloudError::Unsupported("x".into()),
            CloudError::Other("x".into()),
        ];
        for error in every {
            let reason = provider_failure_reason(&error);
            assert!(is_failure(&reason), "{reason}");
            assert_eq!(is_stalled(&reason), !error.is_retryable(), "{reason}");
        }
    }

    /// Every refusal the memory cloud can be made to give: the node shows it with the
    /// provider's words, and the loop retries it or waits for a change by its meaning.
    #[tokio::test]
    async fn each_refusal_of_the_cloud_reaches_the_node_and_is_retried_by_its_meaning() {
        use conpaas_cloud::ComputeDriver;
        use conpaas_cloud::faulty::{Faulty, Operation};
        use conpaas_cloud::memory::MemoryCloud;
        let now = Time(at(1000));
        let cases = [
            (
                CloudError::Unauthorized("AuthFailure: bad key".into()),
                true,
            ),
            (
                CloudError::QuotaExceeded("InstanceLimitExceeded: 20".into()),
                false,
            ),
            (
                CloudError::Throttled("RequestLimitExceeded: slow down".into()),
                false,
            ),
            (
                CloudError::Transient("InternalError: try again".into()),
                false,
            ),
            (
                CloudError::Other("InvalidAMIID.NotFound: ami-0".into()),
                true,
            ),
            (CloudError::Unsupported("no spot instances".into()), true),
            (
                CloudError::NotFound("InvalidSubnetID.NotFound: subnet-0".into()),
                true,
            ),
            (
                CloudError::AlreadyExists("IdempotentParameterMismatch: token".into()),
                true,
            ),
        ];
        let new_node = node(None);
        for (injected, permanent) in cases {
            let cloud = Faulty::new(MemoryCloud::new()).fail(Operation::Create, injected.clone());
            let refused = cloud
                .create(&conpaas_cloud::conformance::request("t-1"))
                .await
                .unwrap_err();
            let error = Error::Cloud {
                operation: "create VM",
                cloud: "local".into(),
                source: refused,
            };
            let (reason, status) = failure_status(&new_node, &error, &now).expect("shown");
            let ready = &status.conditions[0];
            assert_eq!(reason, format!("Provider{}", injected.category()));
            assert_eq!(
                (ready.type_.as_str(), ready.status.as_str()),
                (READY, "False")
            );
            assert_eq!(ready.reason, reason);
            let parked = if permanent { PARKED } else { "" };
            assert_eq!(
                ready.message,
                format!("create VM on cloud local: {injected}{parked}")
            );
            assert_eq!(error.is_permanent(), permanent, "{reason}");
            assert_eq!(is_stalled(&reason), permanent, "{reason}");
        }
        // A failed look at a VM that runs is not the node's failure to show.
        let mut running = node(Some(AgentState::Ready));
        running.status.as_mut().unwrap().provider_id = Some("memory:///vm-1".into());
        let error = Error::Cloud {
            operation: "describe VM",
            cloud: "local".into(),
            source: CloudError::Transient("timeout".into()),
        };
        assert!(failure_status(&running, &error, &now).is_none());
    }

    #[test]
    fn with_ready_replaces_only_ready() {
        let n = node(None);
        let built = build(&n, &running_since(990), None, &Time(at(1000)));
        let failed = with_ready(
            &n,
            built,
            Desired::new(READY, false, "ProviderUnauthorized", "denied"),
            &Time(at(1000)),
        );
        let types: Vec<&str> = failed.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec![READY, HEALTHY]);
        assert_eq!(failed.conditions[0].reason, "ProviderUnauthorized");
    }

    #[test]
    fn ready_and_healthy_from_vm_heartbeat_and_report() {
        let now = Time(at(1000));
        let cases: Vec<(ServiceNode, VmView, Option<Timestamp>, &str, bool)> = vec![
            (
                node(Some(AgentState::Ready)),
                running_since(990),
                Some(at(995)),
                "AgentReady",
                true,
            ),
            (
                node(Some(AgentState::Ready)),
                running_since(900),
                Some(at(985)),
                "HeartbeatStale",
                false,
            ),
            (
                node(None),
                running_since(990),
                None,
                "AgentNotReported",
                true,
            ),
            (
                node(None),
                running_since(800),
                None,
                "AgentNeverReported",
                false,
            ),
            (
                node(Some(AgentState::Failed)),
                running_since(990),
                Some(at(999)),
                "AgentFailed",
                true,
            ),
            (
                node(Some(AgentState::Ready)),
                VmView {
                    state: Some(VmState::Failed),
                    ..running_since(990)
                },
                Some(at(999)),
                "VmFailed",
                false,
            ),
            // Powered off by someone, or out of its cloud's reach: not failed, still unhealthy.
            (
                node(Some(AgentState::Ready)),
                VmView {
                    state: Some(VmState::Halted),
                    ..running_since(990)
                },
                Some(at(999)),
                "VmHalted",
                false,
            ),
            (
                node(Some(AgentState::Ready)),
                VmView {
                    state: Some(VmState::Unknown),
                    ..running_since(990)
                },
                Some(at(999)),
                "AgentReady",
                true,
            ),
            (
                node(Some(AgentState::Ready)),
                VmView {
                    state: Some(VmState::Unknown),
                    ..running_since(900)
                },
                Some(at(900)),
                "VmUnknown",
                false,
            ),
        ];
        // The first heartbeat alone changes nothing a user sees, so it costs no status write.
        assert_eq!(
            ready(&node(None), &running_since(990), None, &now),
            ready(&node(None), &running_since(990), Some(&at(999)), &now),
        );
        for (node, vm, beat, reason, healthy_expected) in cases {
            let r = ready(&node, &vm, beat.as_ref(), &now);
            assert_eq!(r.reason, reason);
            assert_eq!(r.status, reason == "AgentReady");
            assert_eq!(healthy(&r).status, healthy_expected, "{reason}: Healthy");
        }
    }
}
