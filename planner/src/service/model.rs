//! The Service loop's model: what a Service asks for once validated ([`Desired`]), the nodes as
//! the planner sees them ([`ObservedNode`]), the actions a plan is made of ([`Action`]) and why a
//! Service cannot be satisfied ([`Problem`]). Every step of the loop (observe, validate, plan,
//! autoscale, status) reads these; this file reads none of them.

use std::collections::BTreeMap;

use conpaas_crds::types::DataCopies;
use conpaas_crds::v1alpha1::{
    FilesystemNodeSpec, GenericSpec, NodeCode, NodeLink, NodeVolume, ServiceNodeSpec, ServiceType,
};

/// Why a Service cannot be satisfied now; shown as the Ready condition and an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason.
    pub reason: &'static str,
    /// What is wrong and what to do, naming the field.
    pub message: String,
}

impl Problem {
    /// A problem with this reason and message.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What the Service asks for, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Service name.
    pub service: String,
    /// Application name.
    pub application: String,
    /// Service type.
    pub service_type: ServiceType,
    /// False when the Service is Stopped, or held stopped.
    pub running: bool,
    /// Why a Service asked to run is stopped anyway (its tenant's credits ran out).
    pub held: Option<Problem>,
    /// Nodes to remove before any other when a role shrinks (the autoscaler's choice).
    pub leaving_first: Vec<String>,
    /// Every role of the type with its count and placement.
    pub roles: Vec<DesiredRole>,
    /// Configuration every node gets.
    pub config: NodeConfig,
    /// Above this share of unhealthy nodes, none is replaced.
    pub max_unhealthy_percent: i32,
    /// The Service is paused: nodes are only told so.
    pub paused: bool,
    /// How leaving nodes are drained.
    pub drain: DrainPolicy,
    /// The role whose first serving node saves the data when the Service stops.
    pub saved_on_stop: Option<&'static str>,
    /// Where the data of a `saved_on_stop` node has copies besides the node.
    pub data_copies: DataCopies,
    /// The data saved at the last stop, as that role's nodes restore it (the Service's status
    /// records it; a stop deletes the nodes once it names what the saver reports).
    pub restore: Option<NodeCode>,
}

/// How a leaving node is drained.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DrainPolicy {
    /// How long it may finish its work in flight once released.
    pub seconds: i32,
    /// Roles that route to the others and must stop routing to it first.
    pub routers: &'static [&'static str],
}

impl DrainPolicy {
    /// Whether leaving nodes are drained at all.
    pub fn drains(&self) -> bool {
        self.seconds > 0 || !self.routers.is_empty()
    }
}

/// One role's count and placement.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRole {
    /// Role name.
    pub name: String,
    /// Node count.
    pub count: i32,
    /// Cloud name.
    pub cloud: String,
    /// Instance type, if set.
    pub instance_type: Option<String>,
    /// Each node's own data volume, if any.
    pub volume: Option<NodeVolume>,
}

/// The part of a node's spec every node of the Service shares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeConfig {
    /// Active code version, resolved with its digest.
    pub code: Option<NodeCode>,
    /// Settings.
    pub settings: BTreeMap<String, String>,
    /// Startup script.
    pub startup_script: Option<String>,
    /// Whether nodes get the member list (types whose nodes know each other).
    pub with_members: bool,
    /// Heartbeat timeout of the nodes' agents.
    pub heartbeat_timeout_seconds: i32,
    /// The Service's `spec.generic` section.
    pub generic: Option<GenericSpec>,
    /// A filesystem's volumes and clients.
    pub filesystem: Option<FilesystemNodeSpec>,
    /// How a new code version reaches the nodes.
    pub rollout: RolloutPolicy,
    /// The linked services, as nodes reach them.
    pub links: Vec<NodeLink>,
}

/// How a new code version reaches the nodes of each role.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    /// Nodes of a role that may be switching versions (or not Ready) at once.
    pub max_unavailable: usize,
    /// A version that fails on a node makes the Service activate the previous one.
    pub rollback: bool,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            rollback: false,
        }
    }
}

/// A ServiceNode as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNode {
    /// What its agent measures for the autoscaler (`status.agent.metrics`).
    pub metrics: std::collections::BTreeMap<String, i64>,
    /// Object name.
    pub name: String,
    /// Its spec.
    pub spec: ServiceNodeSpec,
    /// Being deleted already.
    pub deleting: bool,
    /// Why it is unhealthy (VM failed or gone, heartbeat stale) for long enough: replace it.
    pub unhealthy: Option<&'static str>,
    /// Its Service's users let it be replaced although its data has no other copy
    /// (`cpsctl node replace NODE --accept-data-loss`).
    pub accept_data_loss: bool,
    /// Unhealthy right now, confirmed or not: counts against the share of unhealthy nodes.
    pub suspect: bool,
    /// Ready condition is True (it serves, maybe still on its previous spec).
    pub ready: bool,
    /// It was Ready once (`status.readyAt`): it may hold data, and a restore it was given is in.
    pub was_ready: bool,
    /// Its Ready condition describes its current spec (not one from before the last change).
    pub settled: bool,
    /// VM address, once known.
    pub address: Option<String>,
    /// The code version its agent reports running.
    pub running_code: Option<String>,
    /// The code version its agent reports it failed to switch to.
    pub failed_code: Option<String>,
    /// Its agent's last report says the role is Ready. Written with `running_code` in one
    /// report, so unlike the node's Ready condition (which the node loop derives later) it is
    /// never older than the version it goes with.
    pub agent_ready: bool,
    /// Its agent reports the role failed, with this message, in a report about the node's
    /// current spec (so not a failure left over from the version it had before).
    pub agent_failure: Option<String>,
    /// Why the node failed (its cloud refused, its agent failed), as its Ready condition says.
    pub failure: Option<NodeFailure>,
    /// A router's report of the members its running configuration routes to.
    pub routes_to: Option<Vec<String>>,
    /// mysql: the last transaction its data holds, reported while no member runs the cluster.
    pub recovered_position: Option<String>,
    /// Its agent reports the drain it was released for is done.
    pub drained: bool,
    /// mysql: the version of the credentials Secret its agent accepts.
    pub credentials_version: Option<String>,
    /// Why its agent's last try to save for a stop failed (it tries again).
    pub save_failure: Option<String>,
    /// The SHA-256 of the data its agent saved, draining for a stop.
    pub saved: Option<String>,
}

/// A node's failure as its Ready condition reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFailure {
    /// The Ready reason, e.g. `ProviderQuotaExceeded` or `AgentFailed`.
    pub reason: String,
    /// Its message: the provider's or the agent's own words.
    pub message: String,
    /// Nothing changes until someone changes the spec or the Cloud.
    pub stalled: bool,
}

/// A step the executor performs on ServiceNode objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a ServiceNode (the executor adds the token).
    CreateNode {
        /// Object name.
        name: String,
        /// Spec without a token.
        spec: ServiceNodeSpec,
    },
    /// Delete a ServiceNode (its finalizer terminates the VM).
    DeleteNode {
        /// Object name.
        name: String,
        /// Why, PascalCase.
        reason: &'static str,
    },
    /// Replace a node's spec with this one (same token, role and placement).
    PatchNodeSpec {
        /// Object name.
        name: String,
        /// The full new spec.
        spec: ServiceNodeSpec,
    },
}
