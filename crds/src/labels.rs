//! Names shared by the controller, the agent, the CLI and the clouds: labels on ServiceNodes,
//! ownership tags on VMs, finalizers and server-side-apply field managers.

/// API group of every ConPaaS resource.
pub const GROUP: &str = "conpaas.io";

/// Label on a ServiceNode: the Application it belongs to.
pub const LABEL_APPLICATION: &str = "conpaas.io/application";
/// Label on a ServiceNode: the Service it belongs to.
pub const LABEL_SERVICE: &str = "conpaas.io/service";
/// Label on a ServiceNode: its role within the Service.
pub const LABEL_ROLE: &str = "conpaas.io/role";
/// Label on the per-node ServiceAccount, Role and RoleBinding: the ServiceNode they serve.
pub const LABEL_NODE: &str = "conpaas.io/node";

/// VM tag: which controller installation manages the VM. Only VMs with this tag are ever touched.
pub const TAG_MANAGED_BY: &str = "conpaas.io/managed-by";
/// VM tag: namespace of the owning ServiceNode.
pub const TAG_NAMESPACE: &str = "conpaas.io/namespace";
/// VM tag: UID of the owning Service.
pub const TAG_SERVICE_UID: &str = "conpaas.io/service-uid";
/// VM tag: name of the owning ServiceNode.
pub const TAG_NODE: &str = "conpaas.io/node";
/// VM tag: role of the owning ServiceNode.
pub const TAG_ROLE: &str = "conpaas.io/role";
/// Value of [`TAG_MANAGED_BY`] for this operator.
pub const MANAGED_BY_VALUE: &str = "conpaas-controller";

/// Annotation on a Service: `"true"` stops all reconciling of it (and its nodes' VMs) until
/// removed, e.g. for maintenance.
pub const ANNOTATION_PAUSED: &str = "conpaas.io/paused";
/// Annotation on a Service: the UIDs of its nodes that may be replaced when unhealthy although
/// their data has no other copy (`cpsctl node replace NODE --accept-data-loss`), each as
/// `<uid>@<unix seconds>`, comma-separated, honoured for an hour; without it such a node is kept and the Service is Degraded with reason
/// `DataAtRisk`. On the Service because its users may edit it; ServiceNodes are the
/// controller's.
pub const ANNOTATION_ACCEPT_DATA_LOSS: &str = "conpaas.io/accept-data-loss";
/// Annotation the controller puts on a Service that saved data at a stop: the last
/// [`SAVES_KEPT`] saves, newest first, each as `<sha256>@<unix seconds>`, comma-separated. The
/// artifact store keeps every archive it lists, so a Service whose status was lost (restored
/// from a backup without it, an etcd rolled back) still finds its data by hand. It keeps
/// archives only: what is served under a Service is what its spec and status name.
pub const ANNOTATION_SAVED_DATA: &str = "conpaas.io/saved-data";
/// How many saves [`ANNOTATION_SAVED_DATA`] lists.
pub const SAVES_KEPT: usize = 3;
/// Annotation the controller puts on a ServiceNode whose VM is to be left running when the
/// node goes (its Service was deleted with `deletionPolicy: Orphan`).
pub const ANNOTATION_ORPHAN_VM: &str = "conpaas.io/orphan-vm";
/// Annotation the controller puts on a Service with a git source: the commit its ref was at the
/// last time a version was recorded (`autoActivate` activates a commit once, when the ref moves).
pub const ANNOTATION_GIT_COMMIT: &str = "conpaas.io/git-commit";
/// Annotation the controller puts on a Service it rolled back (`rollout.onFailure: Rollback`):
/// the version that failed. It is never activated again by a rollback, so two failing versions
/// do not take turns.
pub const ANNOTATION_ROLLED_BACK_FROM: &str = "conpaas.io/rolled-back-from";
/// VM tag added to a VM left running by `deletionPolicy: Orphan`; the orphan sweep spares it.
pub const TAG_ORPHANED: &str = "conpaas.io/orphaned";

/// Finalizer on a ServiceNode: its VM is terminated before the object goes.
pub const FINALIZER_VM: &str = "conpaas.io/vm";
/// Finalizer on a Service or a Cloud: the ServiceNodes of the Service, or on the Cloud, (and so
/// their VMs) are gone before the object goes.
pub const FINALIZER_NODES: &str = "conpaas.io/nodes";
/// Finalizer on an Application: its Services are gone before the object goes.
pub const FINALIZER_SERVICES: &str = "conpaas.io/services";

/// Field manager of everything the controller writes.
pub const MANAGER_CONTROLLER: &str = "conpaas-controller";
/// Field manager of what an agent writes into its ServiceNode's status.
pub const MANAGER_AGENT: &str = "conpaas-agent";

/// Condition types used on every kind.
pub mod conditions {
    /// The object does what its spec asks.
    pub const READY: &str = "Ready";
    /// The controller is moving the object towards its spec.
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong that the controller cannot fix by itself.
    pub const DEGRADED: &str = "Degraded";
    /// ServiceNodes: False while the VM is lost or the agent is silent.
    pub const HEALTHY: &str = "Healthy";
    /// Services: True while the `conpaas.io/paused` annotation stops reconciling.
    pub const PAUSED: &str = "Paused";
    /// kstatus: True while the controller converges the object (not Ready, not stalled). Flux,
    /// kpt and `kubectl wait`-style tools report the object as in progress.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when the controller cannot make progress without someone changing the spec
    /// or what it refers to; tools report the object as failed instead of waiting forever.
    pub const STALLED: &str = "Stalled";
}

/// Annotation: the name people gave an object (ConPaaS names may hold spaces and capitals;
/// Kubernetes names cannot, and cannot change). `cpsctl rename` sets it.
pub const ANNOTATION_DISPLAY_NAME: &str = "conpaas.io/display-name";
/// Annotation: where an imported ConPaaS manifest had the startup script from (its URL).
pub const ANNOTATION_STARTUP_SCRIPT_URL: &str = "conpaas.io/startup-script-url";
/// Annotation: the position of a Service in the ConPaaS manifest it came from (order matters:
/// databases before web tiers).
pub const ANNOTATION_MANIFEST_INDEX: &str = "conpaas.io/manifest-index";
/// Annotation: ConPaaS manifest fields this operator does not act on, kept as JSON so an export
/// writes them back.
pub const ANNOTATION_MANIFEST_EXTRA: &str = "conpaas.io/manifest-extra";
