//! Nodes whose cloud refused for a reason that repeats (an unknown image, a missing subnet): they
//! are tried again when the node's spec or its Cloud changes, and otherwise only every
//! [`RETRY_EVERY`] (a fix made outside Kubernetes: an image registered, a quota raised at the
//! provider), as their Ready condition says. The loop wakes for more than that (the node's own status write and Event, charges on its
//! namespace's credits), and each wake-up would otherwise send the same doomed create to the
//! cloud.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::{Cloud, ServiceNode, find_condition};
use kube::ResourceExt;

/// How long a parked node that nothing changed waits before it is tried once more.
pub const RETRY_EVERY: Duration = Duration::from_secs(600);

/// Parked nodes by UID, with what they wait to see change and since when.
pub struct Parked {
    entries: Mutex<HashMap<String, (Waits, Instant)>>,
    retry_every: Duration,
}

impl Default for Parked {
    fn default() -> Self {
        Self {
            entries: Default::default(),
            retry_every: RETRY_EVERY,
        }
    }
}

impl Parked {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Waits, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node`'s cloud refused it for good, as `node` and `cloud` are now.
    pub fn park(&self, node: &ServiceNode, cloud: Option<&Cloud>) {
        if let Some(uid) = node.uid() {
            self.entries()
                .insert(uid, (Waits::of(node, cloud), Instant::now()));
        }
    }

    /// While `node` is parked and neither it nor its Cloud changed since, how long it still
    /// waits before it is tried once more; `None`: try it now.
    pub fn holds(&self, node: &ServiceNode, cloud: Option<&Cloud>) -> Option<Duration> {
        let uid = node.uid()?;
        let mut entries = self.entries();
        let (waits, since) = entries.get(&uid)?;
        let left = self.retry_every.saturating_sub(since.elapsed());
        if *waits == Waits::of(node, cloud) && !left.is_zero() {
            return Some(left);
        }
        tracing::debug!(parked = ?waits, now = ?Waits::of(node, cloud), "a parked node is tried again");
        entries.remove(&uid);
        None
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
    fn a_parked_node_is_tried_again_after_a_while_even_if_nothing_changed() {
        let parked = Parked {
            retry_every: Duration::from_millis(50),
            ..Default::default()
        };
        parked.park(&node(1), Some(&cloud(1)));
        assert!(parked.holds(&node(1), Some(&cloud(1))).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(parked.holds(&node(1), Some(&cloud(1))), None, "tried again");
        assert_eq!(
            parked.holds(&node(1), Some(&cloud(1))),
            None,
            "until parked again"
        );
    }

    #[test]
    fn holds_until_the_node_or_its_cloud_changes() {
        let parked = Parked::default();
        assert!(
            parked.holds(&node(1), Some(&cloud(1))).is_none(),
            "not parked yet"
        );
        parked.park(&node(1), Some(&cloud(1)));
        let left = parked
            .holds(&node(1), Some(&cloud(1)))
            .expect("nothing changed");
        assert!(left <= RETRY_EVERY && left > RETRY_EVERY / 2);
        assert!(
            parked.holds(&node(2), Some(&cloud(1))).is_none(),
            "the node's spec"
        );
        assert!(
            parked.holds(&node(1), Some(&cloud(1))).is_none(),
            "released for good"
        );

        parked.park(&node(1), Some(&cloud(1)));
        assert!(
            parked.holds(&node(1), Some(&cloud(2))).is_none(),
            "the Cloud's spec"
        );

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
            parked.holds(&node(1), Some(&ready)).is_none(),
            "the Cloud turned Ready"
        );

        parked.park(&node(1), Some(&cloud(1)));
        let mut deleting = node(1);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(
            parked.holds(&deleting, Some(&cloud(1))).is_none(),
            "a deletion"
        );

        parked.park(&node(1), Some(&cloud(1)));
        parked.forget(&node(1));
        assert!(
            parked.holds(&node(1), Some(&cloud(1))).is_none(),
            "forgotten"
        );
    }
}
