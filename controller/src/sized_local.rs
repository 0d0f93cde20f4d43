//! A local Cloud that lists instance types: the shared local driver, with each VM created at
//! its type's share of the host (`Cloud.spec.local.instanceTypes`). A type the Cloud does not
//! list (or none) is refused as a provider refuses an unknown type, naming the types it has.

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
    /// The size a VM of `instance_type` gets. A Cloud that lists types sizes every VM: one
    /// asking for none (it would run unlimited, at the default price) is refused as well.
    fn size(&self, instance_type: Option<&str>) -> Result<Option<VmSize>, CloudError> {
        let listed = instance_type.and_then(|name| self.types.get(name));
        let listed = listed.ok_or_else(|| {
            CloudError::Unsupported(format!(
                "instance type {} is not one of local Cloud {:?}'s spec.local.instanceTypes ({}): a role on it names one of them",
                instance_type.map_or("(none)".to_string(), |t| format!("{t:?}")),
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
        let typeless = sized.size(None).unwrap_err().to_string();
        assert!(typeless.contains("(none)"), "no unlimited VM: {typeless}");
        let refused = sized.size(Some("huge")).unwrap_err().to_string();
        assert!(
            refused.contains("\"huge\"") && refused.contains("(small)"),
            "{refused}"
        );
    }
}
