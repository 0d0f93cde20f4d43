//! `Cloud`: an IaaS account the operator's admin makes available (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Which IaaS to create VMs on, and how to reach it. Exactly one of `local`, `ec2` and
/// `opennebula` is set, like the source of a Pod volume.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "conpaas.io",
    version = "v1alpha1",
    kind = "Cloud",
    status = "CloudStatus",
    shortname = "cpcloud",
    category = "conpaas",
    doc = "An IaaS cloud on which ConPaaS services run their VMs.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("[has(self.local), has(self.ec2), has(self.opennebula)].filter(x, x).size() == 1").message("exactly one of spec.local, spec.ec2 or spec.opennebula must be set"))]
#[serde(rename_all = "camelCase")]
pub struct CloudSpec {
    /// The local cloud: every VM is a `conpaas-agent` process on the controller's host with its
    /// own loopback address and working directory. For trying ConPaaS on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalCloud>,
    /// Amazon EC2 (or an EC2-compatible endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Cloud>,
    /// OpenNebula, through its XML-RPC API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opennebula: Option<OpenNebulaCloud>,
    /// Most VMs this cloud may run for ConPaaS at once; unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_nodes: Option<i32>,
    /// URL of the Kubernetes API server as agents inside this cloud's VMs reach it; defaults to
    /// the URL the controller itself uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub api_server_url: Option<String>,
    /// Which namespaces (tenants) may run Services on this Cloud, by their labels (as the Gateway
    /// API's allowedRoutes); unset, every namespace may. Every namespace carries its name in the
    /// label `kubernetes.io/metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Credits per VM-hour by instance type (1 credit = 1 VM-hour when a type is not listed),
    /// and under the key `volumeGiB` the credits per GiB-hour of a node's data volume (none when
    /// absent), charged with the VM's hours in the same ledger.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256, "additionalProperties" = {"type": "integer", "minimum": 0}))]
    pub prices: std::collections::BTreeMap<String, i64>,
    /// Most calls per second per operation (create, describe, delete, tag) this controller makes
    /// to the cloud's API; keeps a scale-up under the provider's limits.
    #[serde(default = "default_calls_per_second")]
    #[schemars(range(min = 1, max = 1000))]
    pub calls_per_second: i32,
}

fn default_calls_per_second() -> i32 {
    10
}

/// A key of a Secret in the controller's own namespace (Clouds are cluster-scoped; their
/// credentials stay where only the controller reads them).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Settings of the local cloud; `{}` selects it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalCloud {
    /// The instance types it offers, by name: what a VM of each may use of the host, enforced
    /// by the kernel (cgroup quotas) over the VM's agent and every daemon it starts. When any
    /// are listed, a role naming another type is refused by the cloud; a role naming none runs
    /// unlimited.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub instance_types: std::collections::BTreeMap<String, LocalInstanceType>,
}

/// What one local instance type gives a VM.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LocalInstanceType {
    /// CPU cores; a fraction is a share of one (0.5: half a core's time).
    #[schemars(range(min = 0.01, max = 1024.0))]
    pub cpus: f64,
    /// Memory in MiB; a VM that needs more has a process killed, as on a real VM.
    #[serde(rename = "memoryMiB")]
    #[schemars(range(min = 16, max = 4194304))]
    pub memory_mib: u32,
}

impl LocalInstanceType {
    /// Thousandths of a core.
    pub fn millicpus(&self) -> u32 {
        (self.cpus * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

/// Settings of an EC2 cloud.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Ec2Cloud {
    /// AWS region, e.g. `us-east-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// EC2 API endpoint; else `AWS_ENDPOINT_URL`, else AWS itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// AMI the VMs boot from.
    #[schemars(length(min = 1, max = 128))]
    pub image_id: String,
    /// Default instance type; a Service role may override it.
    #[schemars(length(min = 1, max = 64))]
    pub instance_type: String,
    /// Subnet the VMs are launched in; unset uses the default VPC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub subnet_id: Option<String>,
    /// Security groups of the VMs (IDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub security_group_ids: Vec<String>,
    /// EC2 key pair for SSH access to the VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub key_name: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`); without
    /// it the SDK's default chain is used (environment, profile, instance role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsRef>,
}

/// Settings of an OpenNebula cloud.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.templateId) != has(self.template)").message("spec.opennebula: exactly one of templateId or template"))]
#[serde(rename_all = "camelCase")]
pub struct OpenNebulaCloud {
    /// The XML-RPC URL, e.g. `http://one:2633/RPC2`.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,
    /// ID of the VM template to instantiate; exclusive with `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub template_id: Option<i64>,
    /// A full VM template (OpenNebula template text) to allocate; exclusive with `templateId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub template: Option<String>,
    /// Virtual networks each VM gets a NIC on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub network_ids: Vec<i64>,
    /// Secret whose key `session` holds the session string (`user:password` or `user:token`).
    pub credentials_secret: CredentialsRef,
}

/// What the controller observed about a Cloud.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CloudStatus {
    /// Which provider the spec selects: local, ec2 or opennebula.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// VMs the controller currently manages on this cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<i32>,
    /// `Ready` is True when the controller can use this cloud.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl CloudSpec {
    /// The provider the spec selects, when exactly one is set.
    pub fn provider(&self) -> Option<&'static str> {
        match (&self.local, &self.ec2, &self.opennebula) {
            (Some(_), None, None) => Some("local"),
            (None, Some(_), None) => Some("ec2"),
            (None, None, Some(_)) => Some("opennebula"),
            _ => None,
        }
    }
}

impl Cloud {
    /// Whether a namespace with these labels may run Services here; the refusal says why.
    pub fn admits(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        let Some(selector) = &self.spec.allowed_namespaces else {
            return Ok(());
        };
        if crate::selector::matches(selector, labels) {
            return Ok(());
        }
        Err(format!(
            "Cloud {:?} does not admit namespace {namespace:?}: its labels do not match the Cloud's spec.allowedNamespaces",
            self.metadata.name.as_deref().unwrap_or_default()
        ))
    }

    /// The instance type its VMs get when a role names none (EC2's `instanceType`).
    pub fn default_instance_type(&self) -> Option<String> {
        self.spec.ec2.as_ref().map(|e| e.instance_type.clone())
    }

    /// Credits per VM-hour of one of its VMs with a data volume of `volume_gib`: `prices` for
    /// the instance type (the node's, else the Cloud's default), 1 when it lists none, plus
    /// `prices.volumeGiB` for each GiB of the volume.
    pub fn price(&self, instance_type: Option<&str>, volume_gib: Option<i64>) -> i64 {
        let instance_type = instance_type
            .map(str::to_string)
            .or_else(|| self.default_instance_type());
        let vm = instance_type
            .filter(|t| t != VOLUME_GIB_PRICE)
            .and_then(|t| self.spec.prices.get(&t).copied())
            .unwrap_or(1);
        let per_gib = self.spec.prices.get(VOLUME_GIB_PRICE).copied().unwrap_or(0);
        vm.saturating_add(per_gib.saturating_mul(volume_gib.unwrap_or(0).max(0)))
    }

    /// Credits per VM-hour of `node`'s VM and data volume on this Cloud.
    pub fn node_price(&self, node: &super::ServiceNode) -> i64 {
        let volume = node.spec.volume.as_ref().map(|v| i64::from(v.size_gib));
        self.price(node.spec.instance_type.as_deref(), volume)
    }

    /// The instance types `prices` lists (not the volume's price).
    pub fn priced_types(&self) -> impl Iterator<Item = &String> {
        self.spec.prices.keys().filter(|k| *k != VOLUME_GIB_PRICE)
    }
}

/// The key of `Cloud.spec.prices` that prices a GiB-hour of data volume.
pub const VOLUME_GIB_PRICE: &str = "volumeGiB";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_costs_its_types_price_and_its_volumes_gib_hours() {
        let cloud = Cloud::new(
            "priced",
            CloudSpec {
                local: Some(LocalCloud::default()),
                prices: [("small".to_string(), 2), (VOLUME_GIB_PRICE.to_string(), 3)].into(),
                ..Default::default()
            },
        );
        assert_eq!(cloud.price(Some("small"), None), 2);
        assert_eq!(cloud.price(Some("small"), Some(10)), 2 + 30);
        assert_eq!(cloud.price(Some("unlisted"), Some(1)), 1 + 3);
        assert_eq!(
            cloud.price(Some(VOLUME_GIB_PRICE), None),
            1,
            "not an instance type"
        );
        assert_eq!(cloud.priced_types().collect::<Vec<_>>(), ["small"]);
        let unpriced_volumes = Cloud::new("plain", CloudSpec::default());
        assert_eq!(unpriced_volumes.price(None, Some(100)), 1);
    }
}
