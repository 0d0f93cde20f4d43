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
    /// Credits per VM-hour by instance type (1 credit = 1 VM-hour when a type is not listed).
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

/// Settings of the local cloud. It has none yet; `{}` selects it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
// Without properties the API server would keep any key here; say plainly that none is taken.
#[schemars(extend("maxProperties" = 0))]
pub struct LocalCloud {}

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

    /// Credits per VM-hour of one of its VMs: `prices` for the instance type (the node's, else
    /// the Cloud's default), 1 when it lists none.
    pub fn price(&self, instance_type: Option<&str>) -> i64 {
        let instance_type = instance_type
            .map(str::to_string)
            .or_else(|| self.default_instance_type());
        instance_type
            .and_then(|t| self.spec.prices.get(&t).copied())
            .unwrap_or(1)
    }
}
