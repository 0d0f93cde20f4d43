//! One listing per Cloud serves every node on it: the VM loop reads VMs from a snapshot that is
//! refreshed with a single `list` call at most every sync period, so steady-state cloud calls do
//! not grow with the node count. A VM missing from the snapshot (newer than it, or gone) is asked
//! for directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conpaas_cloud::{CloudError, ComputeDriver, Tags, Vm};
use conpaas_crds::labels::{MANAGED_BY_VALUE, TAG_MANAGED_BY};
use tokio::sync::Mutex;

struct Snapshot {
    taken: Instant,
    vms: HashMap<String, Vm>,
}

/// Snapshots of our VMs, per Cloud.
pub struct VmCache {
    max_age: Duration,
    snapshots: Mutex<HashMap<String, Arc<Snapshot>>>,
}

impl VmCache {
    /// A cache whose snapshots are refreshed once older than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    /// The VM with this ID on `cloud`, from the current snapshot or, when the snapshot lacks it,
    /// from the cloud directly.
    pub async fn get(
        &self,
        cloud: &str,
        driver: &dyn ComputeDriver,
        id: &str,
    ) -> Result<Option<Vm>, CloudError> {
        let snapshot = self.snapshot(cloud, driver).await?;
        match snapshot.vms.get(id) {
            Some(vm) => Ok(Some(vm.clone())),
            None => driver.get(id).await,
        }
    }

    async fn snapshot(
        &self,
        cloud: &str,
        driver: &dyn ComputeDriver,
    ) -> Result<Arc<Snapshot>, CloudError> {
        // Held across the list: concurrent reconciles wait for one refresh instead of each listing.
        let mut snapshots = self.snapshots.lock().await;
        if let Some(s) = snapshots
            .get(cloud)
            .filter(|s| s.taken.elapsed() < self.max_age)
        {
            return Ok(s.clone());
        }
        let ours = Tags::from([(TAG_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())]);
        let taken = Instant::now();
        let vms = driver
            .list(&ours)
            .await?
            .into_iter()
            .map(|vm| (vm.id.clone(), vm))
            .collect();
        let snapshot = Arc::new(Snapshot { taken, vms });
        snapshots.insert(cloud.to_string(), snapshot.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_cloud::memory::MemoryCloud;

    fn ours(token: &str) -> conpaas_cloud::CreateRequest {
        let mut r = conpaas_cloud::conformance::request(token);
        r.tags
            .insert(TAG_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
        r
    }

    #[tokio::test]
    async fn many_nodes_cost_one_list_per_period() {
        let cloud = MemoryCloud::new();
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(cloud.create(&ours(&format!("c-{i}"))).await.unwrap().id);
        }
        let cache = VmCache::new(Duration::from_secs(60));
        let before = cloud.calls();
        for id in &ids {
            assert!(cache.get("local", &cloud, id).await.unwrap().is_some());
        }
        assert_eq!(cloud.calls() - before, 1, "fifty lookups, one list");

        // A VM newer than the snapshot is asked for directly; a gone one reads as absent.
        let fresh = cloud.create(&ours("c-new")).await.unwrap();
        assert!(
            cache
                .get("local", &cloud, &fresh.id)
                .await
                .unwrap()
                .is_some()
        );
        cloud.remove_out_of_band(&ids[0]);
        assert_eq!(
            cache
                .get("local", &cloud, &ids[0])
                .await
                .unwrap()
                .map(|v| v.id),
            Some(ids[0].clone()),
            "until the next refresh the snapshot still has it"
        );

        // Once a snapshot is older than the period, the next lookup lists again: the gone VM
        // reads as absent (asked for directly, as the new listing lacks it).
        let expired = VmCache::new(Duration::ZERO);
        let before = cloud.calls();
        assert!(
            expired
                .get("local", &cloud, &ids[1])
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(expired.get("local", &cloud, &ids[0]).await.unwrap(), None);
        assert_eq!(
            cloud.calls() - before,
            3,
            "a list per lookup past the period, and one get of the VM it lacked"
        );
    }
}
