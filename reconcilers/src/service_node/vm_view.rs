//! The node's VM as the controller knows it: as the cloud describes it ([`view`]) or as the
//! node's status records it ([`current_view`]). Observe builds it, status and act read it.

use conpaas_cloud::{Vm, VmState};
use conpaas_crds::v1alpha1::ServiceNode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

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
    /// When the create was journaled.
    pub create_requested_at: Option<Time>,
}

/// The node's VM as the cloud describes it, with the node's create journal kept.
pub fn view(node: &ServiceNode, vm: &Vm) -> VmView {
    VmView {
        create_requested_at: node
            .status
            .as_ref()
            .and_then(|s| s.create_requested_at.clone()),
        provider_id: Some(vm.provider_id.clone()),
        address: vm.address.clone(),
        state: Some(vm.state),
        created_at: Some(Time(whole_seconds(vm.created_at))),
    }
}

/// The VM as the node's status records it.
pub fn current_view(node: &ServiceNode) -> VmView {
    let s = node.status.clone().unwrap_or_default();
    VmView {
        provider_id: s.provider_id,
        address: s.address,
        state: s.vm_state,
        created_at: s.created_at,
        create_requested_at: s.create_requested_at,
    }
}

/// A cloud's timestamp at the API's resolution (whole seconds): compared with what was stored, a
/// finer one would always differ and rewrite the status on every reconcile.
fn whole_seconds(t: std::time::SystemTime) -> Timestamp {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_second(secs).unwrap_or_else(|_| Timestamp::now())
}
