//! A local Cloud that lists instance types: the shared local driver, with each VM created at
//! its type's share of the host (`Cloud.spec.local.instanceTypes`). A type the Cloud does not
//! list is refused as a provider refuses an unknown type, naming the types it has.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use conpaas_cloud::{CloudError, ComputeDriver, CreateRequest, Tags, Vm, VmSize};
use conpaas_crds::v1alpha1::LocalInstanceType;

pub struct SizedLocal {
    pub inner: Arc<dyn ComputeDriver>,
    pub cloud: String,
    pub types: BTreeMap<String, LocalInstanceType>,
}

impl SizedLocal {
    /// The size a VM of `instance_type` gets (none asked: unlimited).
    fn size(&self, instance_type: Option<&str>) -> Result<Option<VmSize>, CloudError> {
        let Some(name) = instance_type else {
            return Ok(None);
        };
        let listed = self.types.get(name).ok_or_else(|| {
            CloudError::Unsupported(format!(
                "instance type {name:?} is not one of local Cloud {:?}'s spec.local.instanceTypes ({})",
                self.cloud,
                self.types.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok(Some(VmSize {
            millicpus: listed.millicpus(),
            memory_mib: listed.memory_mib,
        }))
    }
}

#[async_trait]
impl ComputeDriver for SizedLocal {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        let sized = CreateRequest {
            size: self.size(request.instance_type.as_deref())?,
            ..request.clone()
        };
        self.inner.create(&sized).await
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        self.inner.get(id).await
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        self.inner.list(tags).await
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        self.inner.delete(id).await
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        self.inner.set_tags(id, tags).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vm_gets_its_types_share_and_an_unlisted_type_is_refused() {
        let types = BTreeMap::from([(
            "small".to_string(),
            LocalInstanceType {
                cpus: 0.5,
                memory_mib: 256,
            },
        )]);
        let sized = SizedLocal {
            inner: Arc::new(conpaas_cloud::memory::MemoryCloud::new()),
            cloud: "local".into(),
            types,
        };
        assert_eq!(
            sized.size(Some("small")).unwrap(),
            Some(VmSize {
                millicpus: 500,
                memory_mib: 256
            })
        );
        assert_eq!(sized.size(None).unwrap(), None);
        let refused = sized.size(Some("huge")).unwrap_err().to_string();
        assert!(
            refused.contains("\"huge\"") && refused.contains("(small)"),
            "{refused}"
        );
    }
}
