//! Nodes whose cloud refused for a reason that repeats (an unknown image, a missing subnet): they
//! are not tried again until the node's spec or its Cloud changes, as their Ready condition
//! says. The loop wakes for more than that (the node's own status write and Event, charges on its
//! namespace's credits), and each wake-up would otherwise send the same doomed create to the
//! cloud.

use std::collections::HashMap;
use std::sync::Mutex;

use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::{Cloud, ServiceNode, find_condition};
use kube::ResourceExt;

/// Parked nodes by UID, with what they wait to see change.
#[derive(Default)]
pub struct Parked(Mutex<HashMap<String, Waits>>);

impl Parked {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waits>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node`'s cloud refused it for good, as `node` and `cloud` are now.
    pub fn park(&self, node: &ServiceNode, cloud: Option<&Cloud>) {
        if let Some(uid) = node.uid() {
            self.entries().insert(uid, Waits::of(node, cloud));
        }
    }

    /// Whether `node` is parked and neither it nor its Cloud changed since.
    pub fn holds(&self, node: &ServiceNode, cloud: Option<&Cloud>) -> bool {
        let Some(uid) = node.uid() else {
            return false;
        };
        let mut entries = self.entries();
        match entries.get(&uid) {
            Some(parked) if *parked == Waits::of(node, cloud) => true,
            Some(parked) => {
                tracing::debug!(parked = ?parked, now = ?Waits::of(node, cloud), "a parked node is tried again");
                entries.remove(&uid);
                false
            }
            None => false,
        }
    }

    /// Forgets `node` (it succeeded, or it is gone).
    pub fn forget(&self, node: &ServiceNode) {
        if let Some(uid) = node.uid() {
            self.entries().remove(&uid);
        }
    }
}

/// What a parked node waits to see change: its spec, its deletion, its Cloud's spec and
/// readiness (credentials fixed in the Cloud's Secret turn it Ready again).
#[derive(Debug, PartialEq)]
struct Waits {
    generation: Option<i64>,
    deleting: bool,
    cloud: Option<(Option<String>, Option<i64>)>,
    cloud_ready: Option<String>,
}

impl Waits {
    fn of(node: &ServiceNode, cloud: Option<&Cloud>) -> Self {
        Waits {
            generation: node.metadata.generation,
            deleting: node.metadata.deletion_timestamp.is_some(),
            cloud: cloud.map(|c| (c.uid(), c.metadata.generation)),
            cloud_ready: cloud
                .and_then(|c| c.status.as_ref())
                .and_then(|s| find_condition(&s.conditions, READY))
                .map(|c| c.status.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::CloudSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn node(generation: i64) -> ServiceNode {
        let mut node = ServiceNode::new("n", conpaas_planner::fixtures::node_spec("t"));
        node.metadata.uid = Some("u".into());
        node.metadata.generation = Some(generation);
        node
    }

    fn cloud(generation: i64) -> Cloud {
        let mut cloud = Cloud::new("aws", CloudSpec::default());
        cloud.metadata.uid = Some("c".into());
        cloud.metadata.generation = Some(generation);
        cloud
    }

    #[test]
    fn holds_until_the_node_or_its_cloud_changes() {
        let parked = Parked::default();
        assert!(!parked.holds(&node(1), Some(&cloud(1))), "not parked yet");
        parked.park(&node(1), Some(&cloud(1)));
        assert!(parked.holds(&node(1), Some(&cloud(1))), "nothing changed");
        assert!(!parked.holds(&node(2), Some(&cloud(1))), "the node's spec");
        assert!(
            !parked.holds(&node(1), Some(&cloud(1))),
            "released for good"
        );

        parked.park(&node(1), Some(&cloud(1)));
        assert!(!parked.holds(&node(1), Some(&cloud(2))), "the Cloud's spec");

        parked.park(&node(1), Some(&cloud(1)));
        let mut ready = cloud(1);
        ready.status = Some(conpaas_crds::v1alpha1::CloudStatus {
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: READY.into(),
                status: "True".into(),
                reason: "DriverReady".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: None,
            }],
            ..Default::default()
        });
        assert!(
            !parked.holds(&node(1), Some(&ready)),
            "the Cloud turned Ready"
        );

        parked.park(&node(1), Some(&cloud(1)));
        let mut deleting = node(1);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(!parked.holds(&deleting, Some(&cloud(1))), "a deletion");

        parked.park(&node(1), Some(&cloud(1)));
        parked.forget(&node(1));
        assert!(!parked.holds(&node(1), Some(&cloud(1))), "forgotten");
    }
}
