//! An in-process cloud: VMs are entries in a map. A real backend (it passes the conformance
//! suite), used by unit tests and benchmarks; it boots nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::driver::{check_token, tags_match};
use crate::{CloudError, ComputeDriver, CreateRequest, Tags, Vm, VmState};

/// The in-memory cloud.
#[derive(Default)]
pub struct MemoryCloud {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u32,
    vms: BTreeMap<String, Vm>,
    max_vms: Option<usize>,
    calls: usize,
}

impl MemoryCloud {
    /// An empty cloud without limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cloud that refuses to run more than `max` VMs at once.
    pub fn with_quota(max: usize) -> Self {
        let cloud = Self::default();
        cloud.lock().max_vms = Some(max);
        cloud
    }

    /// Sets a VM's state, as when the cloud loses or fails it.
    pub fn set_state(&self, id: &str, state: VmState) {
        if let Some(vm) = self.lock().vms.get_mut(id) {
            vm.state = state;
        }
    }

    /// Removes a VM behind the operator's back.
    pub fn remove_out_of_band(&self, id: &str) {
        self.lock().vms.remove(id);
    }

    /// How many calls the driver has served.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ComputeDriver for MemoryCloud {
    fn provider(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        check_token(&request.token)?;
        let mut inner = self.lock();
        inner.calls += 1;
        if let Some(vm) = inner.vms.values().find(|vm| vm.token == request.token) {
            return Ok(vm.clone());
        }
        let live = inner
            .vms
            .values()
            .filter(|vm| vm.state != VmState::Terminated)
            .count();
        if inner.max_vms.is_some_and(|max| live >= max) {
            return Err(CloudError::QuotaExceeded(format!(
                "{live} VMs run, the quota allows no more"
            )));
        }
        inner.next += 1;
        let n = inner.next;
        let id = format!("mem-{n:06}");
        let vm = Vm {
            provider_id: format!("memory:///{id}"),
            id: id.clone(),
            token: request.token.clone(),
            state: VmState::Running,
            address: Some(format!(
                "10.{}.{}.{}",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            )),
            tags: request.tags.clone(),
            created_at: SystemTime::now(),
        };
        inner.vms.insert(id, vm.clone());
        Ok(vm)
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        let mut inner = self.lock();
        inner.calls += 1;
        Ok(inner.vms.get(id).cloned())
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        let mut inner = self.lock();
        inner.calls += 1;
        Ok(inner
            .vms
            .values()
            .filter(|vm| tags_match(&vm.tags, tags))
            .cloned()
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        let mut inner = self.lock();
        inner.calls += 1;
        inner.vms.remove(id);
        Ok(())
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        let mut inner = self.lock();
        inner.calls += 1;
        let vm = inner
            .vms
            .get_mut(id)
            .ok_or_else(|| CloudError::NotFound(format!("VM {id}")))?;
        vm.tags.extend(tags.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::run(&MemoryCloud::new()).await;
    }

    #[tokio::test]
    async fn quota_refuses_creates_beyond_the_limit() {
        let cloud = MemoryCloud::with_quota(1);
        let mut req = crate::conformance::request("quota-1");
        cloud.create(&req).await.unwrap();
        req.token = "quota-2".into();
        let err = cloud.create(&req).await.unwrap_err();
        assert_eq!(err.category(), "QuotaExceeded");
        assert!(err.is_retryable());
    }
}
