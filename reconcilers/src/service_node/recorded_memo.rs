//! The VMs this controller recorded on nodes that the node cache does not show yet. A pass that
//! read a node from a cache lagging its own status write would see no VM, find the VM it had just
//! made by the node's token, and adopt it: a second status write and an Event for nothing (0.93
//! of each per node in the scale bench once nothing else slowed a pass down). Such a pass waits
//! for the cache instead. An entry lives until the cache shows the VM, or [`PATIENCE`] at most:
//! a write the cache never shows is then treated as if it had not happened (the node adopts its
//! VM by token, as after a restart).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conpaas_crds::v1alpha1::ServiceNode;
use kube::ResourceExt;

/// How long a recorded VM may be missing from the cache before the cache is believed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// VMs recorded, by node UID: the provider ID and when.
#[derive(Default)]
pub struct Recorded(Mutex<HashMap<String, (String, Instant)>>);

impl Recorded {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This controller wrote `provider_id` into `node`'s status.
    pub fn note(&self, node: &ServiceNode, provider_id: &str) {
        if let Some(uid) = node.uid() {
            self.entries()
                .insert(uid, (provider_id.to_string(), Instant::now()));
        }
    }

    /// Whether `node` as read lags a VM recorded on it (the pass should wait for the cache);
    /// an entry the cache caught up with, or one past its patience, is forgotten.
    pub fn lagging(&self, node: &ServiceNode) -> bool {
        let Some(uid) = node.uid() else {
            return false;
        };
        let shown = node.status.as_ref().and_then(|s| s.provider_id.as_ref());
        let mut entries = self.entries();
        match entries.get(&uid) {
            Some((_, at)) if shown.is_none() && at.elapsed() < PATIENCE => true,
            Some(_) => {
                entries.remove(&uid);
                false
            }
            None => false,
        }
    }

    /// Forgets a node that is gone.
    pub fn forget(&self, node: &ServiceNode) {
        if let Some(uid) = node.uid() {
            self.entries().remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::ServiceNodeStatus;

    fn node(provider_id: Option<&str>) -> ServiceNode {
        let mut node = ServiceNode::new("s-node-0", conpaas_planner::fixtures::node_spec("t"));
        node.metadata.uid = Some("u1".into());
        node.status = Some(ServiceNodeStatus {
            provider_id: provider_id.map(String::from),
            ..Default::default()
        });
        node
    }

    #[test]
    fn a_pass_waits_for_the_cache_to_show_the_vm_it_recorded() {
        let memo = Recorded::default();
        assert!(
            !memo.lagging(&node(None)),
            "nothing recorded: nothing to wait for"
        );
        memo.note(&node(None), "local:///vm-1");
        assert!(memo.lagging(&node(None)), "the cache does not show it yet");
        assert!(!memo.lagging(&node(Some("local:///vm-1"))));
        // Shown once: forgotten, so a VM the node loses later is seen as lost.
        assert!(!memo.lagging(&node(None)));
    }

    #[test]
    fn a_gone_node_is_forgotten() {
        let memo = Recorded::default();
        memo.note(&node(None), "local:///vm-1");
        memo.forget(&node(None));
        assert!(!memo.lagging(&node(None)));
    }
}
