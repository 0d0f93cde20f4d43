//! Builds the driver for each Cloud from the backends compiled in.

use std::sync::Arc;

use conpaas_cloud::ComputeDriver;
use conpaas_cloud::local::{LocalCloud, LocalConfig};
use conpaas_cloud::memory::MemoryCloud;
use conpaas_crds::v1alpha1::Cloud;
use conpaas_reconcilers::DriverRegistry;
use conpaas_reconcilers::metrics::{Metered, Metrics};

/// The controller's drivers. Every local Cloud shares one local driver: they share the host's
/// addresses and state folder, and tags keep their VMs apart.
pub struct Drivers {
    local: Arc<dyn ComputeDriver>,
}

impl Drivers {
    /// Every driver is metered: its calls are counted and timed. `in_memory` serves local
    /// Clouds from the memory backend instead of processes.
    pub fn new(local: LocalConfig, in_memory: bool, metrics: Arc<Metrics>) -> Self {
        let backend: Arc<dyn ComputeDriver> = if in_memory {
            Arc::new(MemoryCloud::new())
        } else {
            Arc::new(LocalCloud::new(local))
        };
        Self {
            local: Arc::new(Metered::new(backend, metrics)),
        }
    }
}

impl DriverRegistry for Drivers {
    fn driver(&self, cloud: &Cloud) -> Result<Arc<dyn ComputeDriver>, String> {
        match cloud.spec.provider() {
            Some("local") => Ok(self.local.clone()),
            Some(other) => Err(format!(
                "the {other} driver is not built into this controller (cargo feature `{other}` of conpaas-controller)"
            )),
            None => Err("spec: exactly one of local, ec2 or opennebula must be set".into()),
        }
    }
}
