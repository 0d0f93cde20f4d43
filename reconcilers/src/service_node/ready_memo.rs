//! The `readyAt` times this controller wrote that the node cache does not show yet. A pass that
//! read a node from a cache lagging its own status write would otherwise record the node's first
//! Ready again, a moment later: a second, later `readyAt` and a second sample of the time to
//! Ready. An entry lives only until the cache shows the time, so the memo stays small.

use std::collections::HashMap;
use std::sync::Mutex;

use conpaas_crds::v1alpha1::{ServiceNode, ServiceNodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// `readyAt` written, by node UID.
#[derive(Default)]
pub struct ReadyWritten(Mutex<HashMap<String, Time>>);

impl ReadyWritten {
    /// `status` with the `readyAt` already written for `node`, and the seconds from VM creation
    /// to Ready when `status` is the first to record the node Ready.
    pub fn settle(
        &self,
        node: &ServiceNode,
        mut status: ServiceNodeStatus,
    ) -> (ServiceNodeStatus, Option<f64>) {
        let Some(uid) = node.uid() else {
            return (status, None);
        };
        let mut written = self.0.lock().expect("the readyAt memo is never poisoned");
        if node.status.as_ref().is_some_and(|s| s.ready_at.is_some()) {
            written.remove(&uid);
            return (status, None);
        }
        if let Some(earlier) = written.get(&uid) {
            status.ready_at = Some(earlier.clone());
            return (status, None);
        }
        let Some(ready_at) = status.ready_at.clone() else {
            return (status, None);
        };
        written.insert(uid, ready_at.clone());
        let seconds = status
            .created_at
            .as_ref()
            .map(|created| ready_at.0.duration_since(created.0).as_secs_f64());
        (status, seconds)
    }

    /// Forgets a node that is gone.
    pub fn forget(&self, node: &ServiceNode) {
        if let Some(uid) = node.uid() {
            self.0
                .lock()
                .expect("the readyAt memo is never poisoned")
                .remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::{Timestamp, ToSpan};

    fn node(ready_at: Option<Time>) -> ServiceNode {
        let mut node = ServiceNode::new("n", conpaas_planner::fixtures::node_spec("t"));
        node.metadata.uid = Some("uid-1".into());
        node.status = Some(ServiceNodeStatus {
            ready_at,
            ..Default::default()
        });
        node
    }

    fn status(created: Timestamp, ready: Timestamp) -> ServiceNodeStatus {
        ServiceNodeStatus {
            created_at: Some(Time(created)),
            ready_at: Some(Time(ready)),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_ready_is_counted_once_even_from_a_stale_cache() {
        let memo = ReadyWritten::default();
        let created = Timestamp::UNIX_EPOCH;
        let first = created + 7.seconds();
        let (written, seconds) = memo.settle(&node(None), status(created, first));
        assert_eq!(seconds, Some(7.0));
        assert_eq!(written.ready_at, Some(Time(first)));

        // The cache still shows no readyAt: the time already written is kept, not counted again.
        let later = first + 3.seconds();
        let (again, seconds) = memo.settle(&node(None), status(created, later));
        assert_eq!(seconds, None);
        assert_eq!(again.ready_at, Some(Time(first)));

        // Once the cache shows it, the entry goes and nothing is counted.
        let (_, seconds) = memo.settle(&node(Some(Time(first))), status(created, first));
        assert_eq!(seconds, None);
        assert!(memo.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_node_not_ready_yet_is_not_counted() {
        let memo = ReadyWritten::default();
        let not_ready = ServiceNodeStatus::default();
        assert_eq!(memo.settle(&node(None), not_ready).1, None);
        assert!(memo.0.lock().unwrap().is_empty());
    }
}
