//! `Service`: one elastic ConPaaS service — what users apply.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Phase;
use crate::types::{self, TypeDescriptor};

/// An elastic service of a ConPaaS application: its type, its roles and how many nodes each
/// role runs, the code it serves, and type-specific settings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "conpaas.io",
    version = "v1alpha1",
    kind = "Service",
    namespaced,
    status = "ServiceStatus",
    shortname = "cpsvc",
    shortname = "cps",
    category = "conpaas",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    doc = "An elastic ConPaaS service: a type, roles with node counts, code and settings.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(
        name = "Code",
        type_ = "string",
        json_path = ".status.activeCodeVersion"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name: at most 40 characters, since node names and labels derive from it"))]
#[x_kube(validation = Rule::new("self.type == oldSelf.type").message("spec.type is immutable: create a new Service instead").field_path(".type"))]
#[x_kube(validation = Rule::new("self.application == oldSelf.application").message("spec.application is immutable").field_path(".application"))]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Name of the Application (same namespace) this service belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub application: String,
    /// The kind of service.
    pub r#type: ServiceType,
    /// `Running` keeps the roles at their counts; `Stopped` removes every node and keeps the
    /// Service and its settings.
    #[serde(default)]
    pub state: DesiredState,
    /// The roles and how many nodes run each. Roles the type has but the list omits run the
    /// type's default count (a generic service always has one master).
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub roles: Vec<RoleSpec>,
    /// Node count of the type's scalable default role (`node` for helloworld and generic):
    /// what `kubectl scale` sets. When it is set, the `roles` entry of that role (if any) leaves
    /// `count` out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// Code versions and which one is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeSpec>,
    /// Type-specific settings (helloworld: `greeting`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub settings: BTreeMap<String, String>,
    /// A shell script every node runs once before its role starts, for at most 30 minutes; its
    /// output is kept in the node's `logs/startup.log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub startup_script: Option<String>,
    /// What happens to the VMs when the Service is deleted: `Delete` terminates them, `Orphan`
    /// leaves them running with their ownership tags (and `conpaas.io/orphaned`).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// How node health is judged and how many unhealthy nodes are replaced at once.
    #[serde(default)]
    pub health: HealthSpec,
    /// How long a leaving node (scaled down, moved) may finish its requests in flight once no
    /// peer routes to it any more, before its VM is terminated; unset is the type's default
    /// (10 for php, 1 for mysql, whose nodes also shut MariaDB down cleanly first; 0 for
    /// helloworld and generic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_seconds: Option<i32>,
    /// Other services of the same application this one uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["service".into()]))]
    pub links: Vec<ServiceLink>,
    /// Options of a generic service; only a Service of type `generic` takes this section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericSpec>,
    /// The volumes of a filesystem service; only a Service of type `filesystem` takes this
    /// section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemSpec>,
    /// Elasticity (ConPaaS' SLA enforcement): for each role listed, the controller sets the node
    /// count between `minNodes` and `maxNodes` to meet the target at the lowest cost. A role
    /// listed here takes no count in `roles` or `replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["role".into()]))]
    pub autoscaling: Vec<RoleAutoscaling>,
}

/// How the controller scales one role.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minNodes <= self.maxNodes").message("spec.autoscaling[].minNodes must not exceed maxNodes"))]
pub struct RoleAutoscaling {
    /// The role whose count the controller sets.
    #[schemars(
        length(min = 1, max = 30),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub role: String,
    /// Fewest nodes of the role.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_nodes: i32,
    /// Most nodes of the role (the credits left may allow fewer).
    #[schemars(range(min = 1, max = 1000))]
    pub max_nodes: i32,
    /// What to stay under.
    pub target: AutoscalingTarget,
    /// How long the target must be missed, or the load be low, before the count changes.
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 3600))]
    pub window_seconds: i32,
    /// How long after a change no other change is made.
    #[serde(default = "sixty")]
    #[schemars(range(min = 0, max = 86400))]
    pub cool_down_seconds: i32,
    /// How to trade cost for performance.
    #[serde(default)]
    pub strategy: ScalingStrategy,
}

fn one() -> i32 {
    1
}

fn thirty() -> i32 {
    30
}

fn sixty() -> i32 {
    60
}

/// The value an autoscaled role is kept under; exactly one is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.p95Ms) != has(self.metric)").message("spec.autoscaling[].target: set exactly one of p95Ms or metric"))]
pub struct AutoscalingTarget {
    /// The 95th-percentile response time of the requests the proxies served, in milliseconds
    /// (php and java).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600000))]
    pub p95_ms: Option<i32>,
    /// A metric the role's agents report (`status.agent.metrics`), averaged over its nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricTarget>,
}

/// A metric and the value to stay under.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// The metric's name in `status.agent.metrics`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The average to stay under.
    #[schemars(range(min = 1))]
    pub value: i64,
}

/// How an autoscaled role trades cost for performance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ScalingStrategy {
    // One node more when the target is missed; a node goes only when the hour it paid is
    // about to end (an hour already paid costs the same used or not).
    #[default]
    LowestCost,
    // One node more when the target is missed, one less when the load allows.
    Balanced,
    // As many nodes more as the miss says at once, one less when the load allows.
    Performance,
}

/// Structured options of a generic service (`spec.generic`). Each type with options of its own
/// has a section named after it; CEL refuses a section on a Service of another type.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenericSpec {
    /// How long `interrupt.sh`, `run.sh` and `cleanup.sh` may take to end when a node stops
    /// before they are killed (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub stop_grace_seconds: Option<i32>,
}

/// The volumes of a filesystem service (`spec.filesystem`), each spread over the storage nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.volumes.all(v, oldSelf.volumes.all(o, o.name != v.name || (o.replicas == v.replicas && has(o.disperse) == has(v.disperse) && (!has(v.disperse) || o.disperse == v.disperse))))").message("spec.filesystem.volumes[]: the replicas and disperse of an existing volume cannot change; add a volume with the new layout and copy the files over").field_path(".volumes"))]
pub struct FilesystemSpec {
    /// The volumes; a volume left out of the list is deleted with its data.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub volumes: Vec<VolumeSpec>,
}

/// One volume: its bricks, one per storage node, form groups of `replicas` (or `disperse`)
/// nodes; files are distributed over the groups (ConPaaS' XtreemFS replication factor is
/// `replicas`, its striping is `disperse`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.disperse) || self.replicas == 1").message("spec.filesystem.volumes[].disperse: a volume is either replicated or dispersed (GlusterFS cannot do both): leave replicas at 1"))]
pub struct VolumeSpec {
    /// Volume name, as links name it.
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Copies of every file, each on another storage node.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 4))]
    pub replicas: i32,
    /// Erasure coding instead of copies: every file is cut into pieces over this many nodes,
    /// any one of which may be lost (GlusterFS disperse with redundancy 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 16))]
    pub disperse: Option<i32>,
}

impl VolumeSpec {
    /// How many storage nodes one group of the volume's bricks spans.
    pub fn group_size(&self) -> i32 {
        self.disperse.unwrap_or(self.replicas).max(1)
    }
}

/// Node health checks and bounded remediation, like Cluster API's MachineHealthCheck.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    /// A node whose agent has not renewed its heartbeat Lease for this long is unhealthy and
    /// replaced.
    #[serde(default = "default_heartbeat_timeout")]
    #[schemars(range(min = 3, max = 3600))]
    pub heartbeat_timeout_seconds: i32,
    /// When more than this share of the service's nodes is unhealthy at once (a cloud outage),
    /// nothing is replaced until health returns. At least one node is always replaceable.
    #[serde(default = "default_max_unhealthy")]
    #[schemars(range(min = 0, max = 100))]
    pub max_unhealthy_percent: i32,
}

/// Two minutes: an agent renews its Lease every 40 s (a third of it), so a node is declared
/// unhealthy after missing about three renewals. At 3,000 nodes that is 75 Lease writes a
/// second; a 60 s timeout (renewals every 20 s) doubled the load the heartbeats put on the API
/// server, for failures noticed one minute sooner.
fn default_heartbeat_timeout() -> i32 {
    120
}

fn default_max_unhealthy() -> i32 {
    40
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            heartbeat_timeout_seconds: default_heartbeat_timeout(),
            max_unhealthy_percent: default_max_unhealthy(),
        }
    }
}

/// Service types this controller runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    // ConPaaS' reference service: every node serves a greeting.
    Helloworld,
    // ConPaaS 2.0's generic service: user lifecycle scripts on a master and nodes.
    Generic,
    // PHP web hosting: nginx proxies, static web nodes, php-fpm backends.
    Php,
    // MySQL on MariaDB Galera.
    Mysql,
    // Java web hosting: nginx proxies, static web nodes, Tomcat backends.
    Java,
    // ConPaaS' XtreemFS: shared POSIX volumes on GlusterFS.
    Filesystem,
    // ConPaaS' Scalaris: a key-value store on Redis Cluster.
    Kvstore,
    // ConPaaS' Hadoop MapReduce: Spark standalone.
    Mapreduce,
}

impl ServiceType {
    /// Every type, in the order documentation lists them.
    pub const ALL: [ServiceType; 8] = [
        ServiceType::Helloworld,
        ServiceType::Generic,
        ServiceType::Php,
        ServiceType::Java,
        ServiceType::Mysql,
        ServiceType::Filesystem,
        ServiceType::Kvstore,
        ServiceType::Mapreduce,
    ];

    /// Everything the operator knows about this type: one module per type under
    /// [`crate::types`]. Registering a new type is its arm here.
    pub fn descriptor(self) -> &'static TypeDescriptor {
        match self {
            ServiceType::Helloworld => &types::helloworld::DESCRIPTOR,
            ServiceType::Generic => &types::generic::DESCRIPTOR,
            ServiceType::Php => &types::php::DESCRIPTOR,
            ServiceType::Mysql => &types::mysql::DESCRIPTOR,
            ServiceType::Java => &types::java::DESCRIPTOR,
            ServiceType::Filesystem => &types::filesystem::DESCRIPTOR,
            ServiceType::Kvstore => &types::kvstore::DESCRIPTOR,
            ServiceType::Mapreduce => &types::mapreduce::DESCRIPTOR,
        }
    }

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        self.descriptor().name
    }
}

/// What deleting a Service does to its VMs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    // Terminate every VM before the Service goes.
    #[default]
    Delete,
    // Leave the VMs running, tagged, unmanaged.
    Orphan,
}

/// Whether the service should run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DesiredState {
    // Nodes run at the roles' counts.
    #[default]
    Running,
    // No nodes run.
    Stopped,
}

/// One role of a service and its node count.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Role name; which names exist depends on the service type.
    #[schemars(
        length(min = 1, max = 30),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// How many nodes run this role; unset runs the type's default count (or `spec.replicas`
    /// for the default role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub count: Option<i32>,
    /// Cloud for this role's nodes; defaults to the Application's cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cloud: Option<String>,
    /// Instance type for this role's nodes; defaults to the Cloud's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub instance_type: Option<String>,
    /// A data volume of its own for each node of the role, created and destroyed with the node
    /// (EC2: an EBS volume deleted on termination; OpenNebula: a volatile disk; local: a folder).
    /// mysql and filesystem nodes keep their data on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<NodeVolume>,
}

/// A node's own data volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeVolume {
    /// Its size in GiB.
    #[serde(rename = "sizeGiB")]
    #[schemars(range(min = 1, max = 16384))]
    pub size_gib: i32,
}

/// Code versions of a service; one may be active.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.active) || self.versions.exists(v, v.name == self.active)").message("spec.code.active must name one of spec.code.versions").field_path(".active"))]
#[serde(rename_all = "camelCase")]
pub struct CodeSpec {
    /// Name of the version the nodes run; unset runs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub active: Option<String>,
    /// Known versions.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub versions: Vec<CodeVersion>,
    /// A git repository the controller polls: each new commit of `ref` becomes the version
    /// `git-<short sha>` (an archive of the commit in the artifact store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// How a newly active version reaches the nodes.
    #[serde(default)]
    pub rollout: Rollout,
}

/// A version is activated a few nodes at a time: a node gets it once the nodes updated before
/// it run it and are Ready.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Nodes of each role that may be switching versions (or not Ready) at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: i32,
    /// What a version that fails on a node does: `Stop` the rollout there (the nodes not updated
    /// keep the version they run), or `Rollback` to the version active before.
    #[serde(default)]
    pub on_failure: OnFailure,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            max_unavailable: default_max_unavailable(),
            on_failure: OnFailure::default(),
        }
    }
}

fn default_max_unavailable() -> i32 {
    1
}

/// What a failed rollout does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// The rollout stops; the Service says where and why (`Progressing=False`, `RolloutFailed`).
    #[default]
    Stop,
    /// The Service activates the version that was active before, by itself.
    Rollback,
}

/// Where the controller pulls code versions from, as ConPaaS' git push made them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Repository URL: `https://`, `http://` or `git://` (no credentials; local paths and
    /// `file://` are refused, they would read the controller's own disk).
    #[schemars(length(max = 2048), regex(pattern = r"^(https?|git)://[^\s]+$"))]
    pub url: String,
    /// Branch, tag or full commit to follow.
    #[serde(default = "default_git_ref", rename = "ref")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[A-Za-z0-9_][-A-Za-z0-9_./]*$")
    )]
    pub r#ref: String,
    /// How often the ref is looked up, in seconds.
    #[serde(default = "default_git_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub interval_seconds: i32,
    /// Activate each new commit of the ref as soon as it is stored (ConPaaS' post-update hook).
    #[serde(default)]
    pub auto_activate: bool,
}

fn default_git_ref() -> String {
    "HEAD".into()
}

fn default_git_interval() -> i32 {
    60
}

/// One code version: a tar archive (optionally gzipped) from the artifact store, a ConfigMap or
/// a URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.configMap), has(self.url), has(self.artifact)].filter(x, x).size() == 1").message("a code version needs exactly one of artifact, configMap or url"))]
#[x_kube(validation = Rule::new("!has(self.url) || has(self.sha256)").message("a code version from a url needs its sha256").field_path(".sha256"))]
#[serde(rename_all = "camelCase")]
pub struct CodeVersion {
    /// Version name, e.g. `v1`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub name: String,
    /// The archive is the value of a key of a ConfigMap in the Service's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKey>,
    /// The archive is downloaded from this http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// SHA-256 of the archive, lowercase hex; required with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// The archive is in the artifact store (`cpsctl code upload` puts it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    /// The git commit the archive was packed from (versions made from `spec.code.git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub commit: Option<String>,
}

/// An archive in the artifact store, named by its digest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    /// SHA-256 of the archive, lowercase hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// A key of a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key under `binaryData` (or `data`) holding the archive.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A link to another service of the same application.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.volume) == has(self.mountPath)").message("spec.links[]: volume and mountPath go together (a link to a filesystem Service mounts a volume somewhere)"))]
pub struct ServiceLink {
    /// Name of the linked Service.
    #[schemars(length(min = 1, max = 253))]
    pub service: String,
    /// The prefix of the environment variables the link gives (`<AS>_HOST`, ...); default: the
    /// linked Service's name in capitals, `-` as `_`.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9_]{0,62}$"))]
    pub as_name: Option<String>,
    /// A link to a filesystem Service: the volume mounted on every node of this Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub volume: Option<String>,
    /// Where the volume appears, relative to the code folder (e.g. `wp-content/uploads`), so
    /// it stays in place across code versions; it replaces what the code has there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
    )]
    pub mount_path: Option<String>,
}

impl ServiceLink {
    /// The prefix of the link's environment variables.
    pub fn prefix(&self) -> String {
        self.as_name
            .clone()
            .unwrap_or_else(|| self.service.to_uppercase().replace(['-', '.'], "_"))
    }
}

/// What the controller observed about a Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The ConPaaS phase.
    #[serde(default)]
    pub phase: Phase,
    /// Ready nodes against desired nodes per role, e.g. `node 3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Desired and ready nodes of each role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub roles: Vec<RoleStatus>,
    /// Nodes of the default role that exist (the scale subresource's replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the default role's ServiceNodes (for the scale subresource and
    /// autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Code version the nodes were told to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_code_version: Option<String>,
    /// The version that was active before it (what `cpsctl code rollback` activates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_code_version: Option<String>,
    /// When replacing unhealthy nodes last resumed after an outage had held it: a node unhealthy
    /// since before then gets a whole heartbeat timeout from then to report again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_resumed_at: Option<Time>,
    /// Where clients reach the service (php: `http://<first proxy>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `host:port` clients connect to (mysql: the first node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// mysql: the version (resourceVersion) of the credentials Secret that every mysql node
    /// accepts; linked services switch to its credentials once it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
    /// The data saved when the Service last stopped (mysql: a dump of its database), which
    /// its nodes restore when it starts again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_data: Option<SavedData>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The latest phase changes, newest last (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub history: Vec<PhaseChange>,
    /// What the autoscaler decided for each role of `spec.autoscaling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["role".into()]))]
    pub autoscaling: Vec<RoleScaling>,
}

/// The autoscaler's state for one role: written when it decides, not per measurement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoleScaling {
    /// Role name.
    pub role: String,
    /// The node count the autoscaler set.
    pub count: i32,
    /// Since when the target has been missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_since: Option<Time>,
    /// Since when the load has been low enough for one node less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_since: Option<Time>,
    /// When the count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Time>,
    /// The last change and the figures that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
}

impl Service {
    /// The SHA-256 of every archive the Service names: its code versions' and the data it
    /// saved when it stopped. Only these are served under it and kept in the store.
    pub fn named_archives(&self) -> impl Iterator<Item = &str> {
        let versions = self.spec.code.iter().flat_map(|c| &c.versions);
        let saved = self.status.as_ref().and_then(|s| s.saved_data.as_ref());
        versions
            .filter_map(|v| v.artifact.as_ref().map(|a| a.sha256.as_str()))
            .chain(saved.map(|d| d.sha256.as_str()))
    }

    /// Every archive the store must keep for the Service: those it names, and the earlier
    /// saves its annotation lists ([`saves_listed`]).
    pub fn kept_archives(&self) -> Vec<String> {
        let listed = self
            .annotations()
            .get(crate::labels::ANNOTATION_SAVED_DATA)
            .map(|a| saves_listed(a))
            .unwrap_or_default();
        // Users may edit annotations: no more than the controller writes is honoured.
        let listed = listed.into_iter().take(crate::labels::SAVES_KEPT);
        self.named_archives()
            .map(str::to_string)
            .chain(listed.map(|(sha, _)| sha))
            .collect()
    }
}

/// The saves [`ANNOTATION_SAVED_DATA`](crate::labels::ANNOTATION_SAVED_DATA) lists, newest first:
/// (sha256, unix seconds). Entries that do not parse are skipped.
pub fn saves_listed(annotation: &str) -> Vec<(String, i64)> {
    annotation
        .split(',')
        .filter_map(|entry| {
            let (sha, time) = entry.trim().split_once('@')?;
            let valid = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
            Some((sha.to_ascii_lowercase(), time.parse().ok()?)).filter(|_| valid)
        })
        .collect()
}

/// The annotation's value once `saved` is recorded: it first, then the earlier saves, at most
/// [`SAVES_KEPT`](crate::labels::SAVES_KEPT). `None` when it lists `saved` first already.
pub fn saves_with(annotation: Option<&str>, saved: &SavedData) -> Option<String> {
    let earlier = saves_listed(annotation.unwrap_or_default());
    if earlier.first().is_some_and(|(sha, _)| *sha == saved.sha256) {
        return None;
    }
    let entries: Vec<String> = std::iter::once((saved.sha256.clone(), saved.time.0.as_second()))
        .chain(earlier.into_iter().filter(|(sha, _)| *sha != saved.sha256))
        .take(crate::labels::SAVES_KEPT)
        .map(|(sha, time)| format!("{sha}@{time}"))
        .collect();
    Some(entries.join(","))
}

/// Data a stopping Service saved into the artifact store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavedData {
    /// SHA-256 of the archive, lowercase hex.
    pub sha256: String,
    /// The node that saved it.
    pub node: String,
    /// When the controller noted it.
    pub time: Time,
}

/// Desired and ready node counts of one role.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// Role name.
    pub name: String,
    /// Nodes the spec asks for.
    pub desired: i32,
    /// Nodes that exist.
    pub current: i32,
    /// Nodes that are Ready.
    pub ready: i32,
    /// Nodes that run the active code version.
    #[serde(default)]
    pub updated: i32,
}

/// One entry of a Service's phase history.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhaseChange {
    /// The phase entered.
    pub phase: Phase,
    /// When it was entered.
    pub time: Time,
    /// Why, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn save(sha: char, second: i64) -> SavedData {
        SavedData {
            sha256: sha.to_string().repeat(64),
            node: "db-mysql-0".into(),
            time: Time(Timestamp::from_second(second).unwrap()),
        }
    }

    #[test]
    fn the_last_saves_are_listed_newest_first_for_the_store_to_keep() {
        let first = saves_with(None, &save('a', 100)).unwrap();
        assert_eq!(first, format!("{}@100", "a".repeat(64)));
        assert_eq!(
            saves_with(Some(&first), &save('a', 100)),
            None,
            "written once"
        );
        let mut listed = first;
        for (sha, at) in [('b', 200), ('c', 300), ('d', 400)] {
            listed = saves_with(Some(&listed), &save(sha, at)).unwrap();
        }
        let shas: Vec<char> = saves_listed(&listed)
            .iter()
            .map(|(sha, _)| sha.chars().next().unwrap())
            .collect();
        assert_eq!(shas, ['d', 'c', 'b'], "the newest three");
        // A hand-edited value keeps what parses.
        let edited = format!("junk,{}@5,{}@x", "e".repeat(64), "f".repeat(64));
        assert_eq!(saves_listed(&edited), vec![("e".repeat(64), 5)]);

        let mut service = Service::new(
            "db",
            serde_json::from_value(serde_json::json!({"application": "app", "type": "mysql"}))
                .unwrap(),
        );
        service.status = Some(ServiceStatus {
            saved_data: Some(save('d', 400)),
            ..Default::default()
        });
        service
            .annotations_mut()
            .insert(crate::labels::ANNOTATION_SAVED_DATA.into(), listed);
        let kept = service.kept_archives();
        for sha in ['b', 'c', 'd'] {
            assert!(kept.contains(&sha.to_string().repeat(64)), "{sha} kept");
        }
        // A longer hand-written list pins no more than the controller would list.
        let long: Vec<String> = ('a'..='f')
            .map(|c| format!("{}@1", c.to_string().repeat(64)))
            .collect();
        service
            .annotations_mut()
            .insert(crate::labels::ANNOTATION_SAVED_DATA.into(), long.join(","));
        assert_eq!(service.kept_archives().len(), 1 + crate::labels::SAVES_KEPT);
        assert_eq!(
            service.named_archives().count(),
            1,
            "only the status' save is served"
        );
    }
}
