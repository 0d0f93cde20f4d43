//! Builds the driver for each Cloud from the backends compiled in (cargo features `ec2` and
//! `opennebula`), with credentials read from a Secret in the controller's namespace. Drivers are
//! cached per Cloud and rebuilt when the Cloud's spec or its Secret changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use conpaas_cloud::ComputeDriver;
use conpaas_cloud::local::{LocalCloud, LocalConfig};
use conpaas_crds::v1alpha1::Cloud;
use conpaas_reconcilers::DriverRegistry;
use conpaas_reconcilers::metrics::{Metered, Metrics};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

/// The controller's drivers. Every local Cloud shares one local driver: they share the host's
/// addresses and state folder, and tags keep their VMs apart.
pub struct Drivers {
    local: Arc<dyn ComputeDriver>,
    metrics: Arc<Metrics>,
    /// Reads credential Secrets.
    #[cfg_attr(not(any(feature = "ec2", feature = "opennebula")), allow(dead_code))]
    secrets: Api<Secret>,
    /// Per Cloud name: the driver and what it was built from.
    built: Mutex<HashMap<String, Built>>,
}

/// A driver and the version (`<Cloud generation>/<Secret resourceVersion>`) it was built from.
type Built = (String, Arc<dyn ComputeDriver>);

impl Drivers {
    /// Every driver is metered: its calls are counted and timed. `in_memory` serves local
    /// Clouds from the memory backend instead of processes (only in a controller built with the
    /// `memory-cloud` feature). Credential Secrets are read from `namespace`.
    pub fn new(
        local: LocalConfig,
        in_memory: bool,
        metrics: Arc<Metrics>,
        client: Client,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let backend: Arc<dyn ComputeDriver> = match in_memory {
            #[cfg(feature = "memory-cloud")]
            true => Arc::new(conpaas_cloud::memory::MemoryCloud::new()),
            #[cfg(not(feature = "memory-cloud"))]
            true => anyhow::bail!(
                "--local-backend memory: this controller was built without the memory-cloud feature (the scale benchmark's build has it)"
            ),
            false => Arc::new(LocalCloud::new(local)),
        };
        Ok(Self {
            local: Arc::new(Metered::new(backend, metrics.clone())),
            metrics,
            secrets: Api::namespaced(client, namespace),
            built: Mutex::new(HashMap::new()),
        })
    }

    /// The cached driver for `cloud` if it was built from this `version`.
    fn cached(&self, cloud: &str, version: &str) -> Option<Arc<dyn ComputeDriver>> {
        let built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        built
            .get(cloud)
            .filter(|(v, _)| v == version)
            .map(|(_, d)| d.clone())
    }

    fn remember(
        &self,
        cloud: &str,
        version: String,
        driver: Arc<dyn ComputeDriver>,
    ) -> Arc<dyn ComputeDriver> {
        let metered: Arc<dyn ComputeDriver> = Arc::new(Metered::new(driver, self.metrics.clone()));
        self.built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cloud.to_string(), (version, metered.clone()));
        metered
    }

    /// A Secret's values by key, and its resourceVersion.
    #[cfg_attr(not(any(feature = "ec2", feature = "opennebula")), allow(dead_code))]
    async fn secret(&self, name: &str) -> Result<(HashMap<String, String>, String), String> {
        let ns = self.secrets.namespace().unwrap_or("?").to_string();
        let secret = self
            .secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("read Secret {ns}/{name}: {e}"))?
            .ok_or_else(|| format!("Secret {ns}/{name} does not exist (credentials are read from the controller's namespace)"))?;
        let values = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).trim().to_string()))
            .collect();
        Ok((values, secret.metadata.resource_version.unwrap_or_default()))
    }
}

#[async_trait::async_trait]
impl DriverRegistry for Drivers {
    async fn driver(&self, cloud: &Cloud) -> Result<Arc<dyn ComputeDriver>, String> {
        let generation = cloud.metadata.generation.unwrap_or(0);
        match cloud.spec.provider() {
            Some("local") => match cloud.spec.local.as_ref() {
                Some(local) if !local.instance_types.is_empty() => {
                    Ok(Arc::new(crate::sized_local::SizedLocal {
                        inner: self.local.clone(),
                        cloud: cloud.name_any(),
                        types: local.instance_types.clone(),
                    }))
                }
                _ => Ok(self.local.clone()),
            },
            #[cfg(feature = "opennebula")]
            Some("opennebula") => {
                use conpaas_cloud::opennebula::{OpenNebula, OpenNebulaConfig};
                let spec = cloud
                    .spec
                    .opennebula
                    .as_ref()
                    .expect("provider is opennebula");
                let (values, secret_version) = self.secret(&spec.credentials_secret.name).await?;
                let version = format!("{generation}/{secret_version}");
                if let Some(driver) = self.cached(&cloud.name_any(), &version) {
                    return Ok(driver);
                }
                let session = values.get("session").cloned().ok_or_else(|| {
                    format!(
                        "Secret {:?} has no key `session` (user:password)",
                        spec.credentials_secret.name
                    )
                })?;
                let driver = OpenNebula::new(OpenNebulaConfig {
                    endpoint: spec.endpoint.clone(),
                    session,
                    template_id: spec.template_id.map(|t| t as i32),
                    template: spec.template.clone(),
                    network_ids: spec.network_ids.iter().map(|n| *n as i32).collect(),
                    calls_per_second: cloud.spec.calls_per_second.max(1) as u32,
                })
                .map_err(|e| e.to_string())?;
                Ok(self.remember(&cloud.name_any(), version, Arc::new(driver)))
            }
            #[cfg(feature = "ec2")]
            Some("ec2") => {
                use conpaas_cloud::ec2::{Ec2, Ec2Config};
                let spec = cloud.spec.ec2.as_ref().expect("provider is ec2");
                let (credentials, secret_version) = match &spec.credentials_secret {
                    Some(r) => {
                        let (values, v) = self.secret(&r.name).await?;
                        let key = |k: &str| {
                            values
                                .get(k)
                                .cloned()
                                .ok_or_else(|| format!("Secret {:?} has no key `{k}`", r.name))
                        };
                        (
                            Some((
                                key("accessKeyId")?,
                                key("secretAccessKey")?,
                                values.get("sessionToken").cloned(),
                            )),
                            v,
                        )
                    }
                    None => (None, String::new()),
                };
                let version = format!("{generation}/{secret_version}");
                if let Some(driver) = self.cached(&cloud.name_any(), &version) {
                    return Ok(driver);
                }
                let driver = Ec2::new(Ec2Config {
                    region: spec.region.clone(),
                    endpoint: spec.endpoint.clone(),
                    image_id: spec.image_id.clone(),
                    instance_type: spec.instance_type.clone(),
                    subnet_id: spec.subnet_id.clone(),
                    security_group_ids: spec.security_group_ids.clone(),
                    key_name: spec.key_name.clone(),
                    credentials,
                    calls_per_second: cloud.spec.calls_per_second.max(1) as u32,
                })
                .await;
                Ok(self.remember(&cloud.name_any(), version, Arc::new(driver)))
            }
            Some(other) => Err(format!(
                "the {other} driver is not built into this controller (cargo feature `{other}` of conpaas-controller)"
            )),
            None => Err("spec: exactly one of local, ec2 or opennebula must be set".into()),
        }
    }
}
