//! `ServiceNode`: one VM of a Service, like Cluster API's Machine. The controller writes its
//! spec and the VM half of its status; the agent inside the VM writes `status.agent`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ServiceType, VmState};

/// One VM of a ConPaaS service and the role it plays. Created and deleted by the controller.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "conpaas.io",
    version = "v1alpha1",
    kind = "ServiceNode",
    namespaced,
    status = "ServiceNodeStatus",
    shortname = "cpnode",
    category = "conpaas",
    doc = "One VM of a ConPaaS service. Written by the controller; the agent in the VM reports into status.agent.",
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Cloud", type_ = "string", json_path = ".spec.cloud"),
    printcolumn(
        name = "Provider-ID",
        type_ = "string",
        json_path = ".status.providerId"
    ),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "VM", type_ = "string", json_path = ".status.vmState"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".status.agent.state"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.token == oldSelf.token").message("spec.token is immutable").field_path(".token"))]
#[serde(rename_all = "camelCase")]
pub struct ServiceNodeSpec {
    /// Application the node's service belongs to.
    pub application: String,
    /// The Service this node belongs to.
    pub service: String,
    /// The Service's type, which tells the agent what software to run.
    pub service_type: ServiceType,
    /// The role this node plays.
    pub role: String,
    /// Cloud the VM runs on.
    pub cloud: String,
    /// Instance type of the VM; unset uses the Cloud's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The VM's own data volume, made and destroyed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<super::NodeVolume>,
    /// Idempotency token of the VM, fixed when the node is created: creating twice with the same
    /// token yields the same VM.
    #[schemars(length(min = 1, max = 64))]
    pub token: String,
    /// The code version the node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<NodeCode>,
    /// The Service's settings as the agent applies them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// The Service's startup script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_script: Option<String>,
    /// The Service is paused: the controller creates, replaces and terminates nothing for this
    /// node until it is resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// How often the agent must renew its heartbeat Lease (named as the node), at the latest.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_seconds: i32,
    /// The service's nodes with their addresses, for types whose nodes know each other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub members: Vec<Member>,
    /// The Service's `spec.generic` options, for generic nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<super::GenericSpec>,
    /// The Service's volumes, for filesystem nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemNodeSpec>,
    /// The services this one links to, as its nodes reach them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub links: Vec<NodeLink>,
    /// The node is leaving: its peers no longer list it, and once every node that routes to it
    /// confirmed so, it is released to finish its work in flight and report `Drained`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<NodeDrain>,
    /// Data the Service saved when it last stopped, restored once into the new cluster before
    /// it serves (mysql: a dump the first node loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<NodeCode>,
}

/// A link as a node uses it: where the linked service is and the Secret with its credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeLink {
    /// Prefix of the environment variables (`DB` gives `DB_HOST`, `DB_PORT`, ...).
    pub prefix: String,
    /// The linked Service.
    pub service: String,
    /// Its type, which decides what the link exports.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<super::ServiceType>,
    /// Its `host:port` (a kvstore's: seed nodes separated by commas), once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret with the credentials (mysql: `username` and `password`, kvstore: `password`);
    /// the node's token may read it and no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The version (resourceVersion) of the Secret that every node of the linked Service
    /// accepts: when it changes, the node reads the Secret again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<String>,
    /// A filesystem volume to mount, and where (relative to the code folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Where the volume appears in the code folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
}

/// What the storage nodes of a filesystem Service serve.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemNodeSpec {
    /// The Service's `spec.filesystem.volumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub volumes: Vec<super::VolumeSpec>,
}

/// A leaving node's drain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeDrain {
    /// Why the node leaves.
    pub reason: DrainReason,
    /// Every node that routes to it stopped doing so: finish the requests in flight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
    /// How long the work in flight may take once released.
    #[serde(default)]
    pub seconds: i32,
}

/// Why a node leaves through a drain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DrainReason {
    /// Its role runs fewer nodes.
    #[default]
    ScaledDown,
    /// Its role moved to another cloud, instance type or volume size.
    PlacementChanged,
    /// Its role is no longer in the spec.
    RoleRemoved,
    /// The Service stopped; the type's `saved_on_stop` role saves its data first.
    ServiceStopped,
}

impl DrainReason {
    /// The reason as Events and deletions name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaledDown => "ScaledDown",
            Self::PlacementChanged => "PlacementChanged",
            Self::RoleRemoved => "RoleRemoved",
            Self::ServiceStopped => "ServiceStopped",
        }
    }
}

fn default_heartbeat_timeout() -> i32 {
    super::HealthSpec::default().heartbeat_timeout_seconds
}

/// How often an agent renews its heartbeat Lease for a node whose timeout is `timeout_seconds`:
/// a third of it (two renewals may be lost before the node counts as silent), at most 40 s, at
/// least a second.
pub fn heartbeat_interval(timeout_seconds: i32) -> std::time::Duration {
    use std::time::Duration;
    (Duration::from_secs(timeout_seconds.max(3) as u64) / 3)
        .clamp(Duration::from_secs(1), Duration::from_secs(40))
}

/// A code version as one node fetches it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCode {
    /// Version name.
    pub version: String,
    /// ConfigMap holding the archive; the node's credentials may read only this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<super::ConfigMapKey>,
    /// URL of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The archive is in the artifact store: the agent fetches it through the code API with its
    /// own token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub artifact: bool,
    /// SHA-256 of the archive, lowercase hex; the agent refuses anything else.
    pub sha256: String,
}

/// A member of a service, as its peers see it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// ServiceNode name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its IP address.
    pub address: String,
    /// Its agent reports its role ready to serve: routers route to it only then. Only routing
    /// roles (php `proxy`) are told; for the others it is always false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    /// mysql: the last transaction its data holds (`uuid:seqno`), as its agent reported it while
    /// no member ran the cluster (see `status.agent.recoveredPosition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// mysql: it held the cluster's data (it was Ready once). While every member is down, a
    /// member without data starts no cluster before such a member is back to report its data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_data: bool,
}

/// A ServiceNode's status: the controller's view of the VM, and the agent's report.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNodeStatus {
    /// The cloud's ID of the VM, e.g. `local:///<id>`; recorded right after the VM is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The VM's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The VM's state as the cloud reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_state: Option<VmState>,
    /// When the VM was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// Journal of the create: when the controller asked the cloud for this node's VM. Written
    /// before the call, so a restarted controller that finds it looks the VM up by token and
    /// tags before it creates anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_requested_at: Option<Time>,
    /// When the controller confirmed the VMs of the deleted node gone (by ID and by tag): its
    /// charge in the namespace's credits ends then, not when its deletion was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated_at: Option<Time>,
    /// Generation of the spec the controller last acted on (credentials, VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the node first became Ready; kept through later outages, so `readyAt - createdAt`
    /// is the node's time to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
    /// `Ready` is True when the VM runs and the agent reports its role ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// What the agent in the VM reports; written only by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentStatus>,
}

/// The agent's report on its node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Overall state of the node's role: `Starting`, `Ready`, `Failed` or `Drained`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,
    /// The ServiceNode generation the agent has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The role the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Human-readable detail of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The code version the node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_version: Option<String>,
    /// The code version the role failed to switch to (the message says why): it keeps serving
    /// `codeVersion`, so a leaving node still drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_code_version: Option<String>,
    /// helloworld: the greeting the node serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// generic: the state of each lifecycle script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub scripts: Vec<ScriptStatus>,
    /// Routing roles (php `proxy`): the members its running configuration sends traffic to. A
    /// leaving node is released only when no router lists it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub routes_to: Option<Vec<String>>,
    /// mysql: the version (resourceVersion) of the Service's credentials Secret whose user and
    /// password this node accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
    /// mysql, while its MariaDB does not run and no member answers: the last transaction its
    /// data holds, `uuid:seqno` as Galera's recovery reads it (`-1` for a node that never held
    /// the cluster's data). Every member is told the others' positions, and the one with the
    /// newest data starts the cluster again after a crash of them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_position: Option<String>,
    /// The SHA-256 of the data it saved into the artifact store, draining for a stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
    /// Draining for a stop: why its last try to save the data failed. It tries again after a
    /// growing wait, and the stop keeps every node until a save is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_failure: Option<String>,
    /// SHA-256 (lowercase hex) of the certificate the agent's log endpoint serves: the
    /// controller accepts no other when it reads the node's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_certificate_sha256: Option<String>,
    /// Measurements the autoscaler reads, as aggregates over the last seconds, published at most
    /// every few seconds and only when they move (php and java proxies: `p95Ms`, the 95th
    /// percentile of their requests' response times, and `requestsPerSecond`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, i64>,
}

/// Overall state of a node's role.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    // Setting up.
    Starting,
    // The role serves.
    Ready,
    // The role failed; see the message.
    Failed,
    // A leaving node finished its work in flight: it may be terminated.
    Drained,
}

/// State of one lifecycle script of a generic service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScriptStatus {
    /// Script name, e.g. `init.sh`.
    pub name: String,
    /// `NEVER STARTED`, `RUNNING` or `STOPPED (return code N)`, as ConPaaS reported it.
    pub state: String,
    /// How many times it has run.
    #[serde(default)]
    pub runs: i32,
}
