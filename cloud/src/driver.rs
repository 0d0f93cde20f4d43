//! The driver trait and the values it exchanges.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::CloudError;

/// Tags on a VM: ownership marks the operator sets at launch and filters on.
pub type Tags = BTreeMap<String, String>;

/// A VM's state as the cloud reports it: the API's own type, so a ServiceNode's `status.vmState`
/// is what the driver said, with no mapping in between.
pub use conpaas_crds::v1alpha1::VmState;

/// Everything needed to create one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Idempotency key: a second create with the same token returns the first VM.
    /// 1 to 64 characters of `[A-Za-z0-9-]`.
    pub token: String,
    /// A human-readable name (shown by the cloud's own tools).
    pub name: String,
    /// Instance type; `None` uses the cloud's default.
    pub instance_type: Option<String>,
    /// Tags set at launch.
    pub tags: Tags,
    /// What the VM's agent reads at boot (EC2 user-data, OpenNebula CONTEXT, a file locally).
    pub user_data: String,
    /// A data volume of this many GiB made with the VM and destroyed with it.
    pub volume_gib: Option<u32>,
    /// What the VM may use of its host, for a cloud that sizes VMs itself (the local cloud,
    /// with cgroup quotas); providers size VMs by `instance_type` and ignore it.
    pub size: Option<VmSize>,
}

/// A VM's share of its host: CPU in thousandths of a core, memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmSize {
    pub millicpus: u32,
    pub memory_mib: u32,
}

/// A VM as the cloud describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The cloud's own ID.
    pub id: String,
    /// The ID qualified with the provider, e.g. `local:///<id>`; what ServiceNodes record.
    pub provider_id: String,
    /// The token it was created with.
    pub token: String,
    /// Its state.
    pub state: VmState,
    /// Its IP address, once it has one.
    pub address: Option<String>,
    /// Its tags.
    pub tags: Tags,
    /// When it was created.
    pub created_at: SystemTime,
}

/// An IaaS backend. Every method is one logical cloud call; implementations must be safe to
/// call concurrently and must never touch a VM that lacks the tags it was asked to filter on.
#[async_trait]
pub trait ComputeDriver: Send + Sync {
    /// `local`, `memory`, `ec2`, `opennebula`.
    fn provider(&self) -> &'static str;

    /// Creates a VM, or returns the VM created earlier with the same token.
    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError>;

    /// Describes one VM by ID; `Ok(None)` when the cloud says it does not exist.
    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError>;

    /// Every VM carrying all of `tags`, in one call to the cloud.
    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError>;

    /// Terminates a VM. Deleting a VM that is already gone succeeds.
    async fn delete(&self, id: &str) -> Result<(), CloudError>;

    /// Adds `tags` to a VM (overwriting keys it has). `NotFound` when the VM does not exist.
    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError>;
}

/// Checks a token against the rules every backend shares.
#[cfg_attr(not(any(feature = "local", feature = "memory")), allow(dead_code))]
pub(crate) fn check_token(token: &str) -> Result<(), CloudError> {
    let valid = !token.is_empty()
        && token.len() <= 64
        && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(CloudError::Other(format!(
            "invalid idempotency token {token:?}"
        )))
    }
}

/// True when `vm_tags` carries every tag of `filter` with the same value.
#[cfg_attr(not(any(feature = "local", feature = "memory")), allow(dead_code))]
pub(crate) fn tags_match(vm_tags: &Tags, filter: &Tags) -> bool {
    filter.iter().all(|(k, v)| vm_tags.get(k) == Some(v))
}
