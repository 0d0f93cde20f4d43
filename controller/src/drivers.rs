//! Builds the driver for each Cloud from the backends compiled in.

use std::sync::Arc;

use conpaas_cloud::ComputeDriver;
use conpaas_cloud::local::{LocalCloud, LocalConfig};
use conpaas_crds::v1alpha1::Cloud;
use conpaas_reconcilers::DriverRegistry;

/// The controller's drivers. Every local Cloud shares one local driver: they share the host's
/// addresses and state folder, and tags keep their VMs apart.
pub struct Drivers {
    local: Arc<LocalCloud>,
}

impl Drivers {
    pub fn new(local: LocalConfig) -> Self {
        Self {
            local: Arc::new(LocalCloud::new(local)),
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
