//! What an agent receives at boot (EC2 user-data, OpenNebula CONTEXT, a file on the local
//! cloud): how to reach the API server and which ServiceNode it serves. Its token belongs to a
//! per-node ServiceAccount that may read only that ServiceNode and patch only its status.

use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};

/// The agent's bootstrap document, serialised as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentBootstrap {
    /// URL of the Kubernetes API server.
    pub api_server_url: String,
    /// DER certificates the agent trusts for the API server (empty: the system roots).
    #[serde(default)]
    pub ca_certs: Vec<ByteString>,
    /// Skip TLS verification (only when the controller itself was told to).
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Namespace of the ServiceNode.
    pub namespace: String,
    /// Name of the ServiceNode.
    pub node: String,
    /// Bearer token of the node's ServiceAccount.
    pub token: String,
    /// Lifetime the agent asks for when it renews its token.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u64,
    /// How long after getting a token the agent renews it (before it expires).
    #[serde(default = "default_token_refresh")]
    pub token_refresh_seconds: u64,
}

fn default_token_ttl() -> u64 {
    3600
}

fn default_token_refresh() -> u64 {
    default_token_ttl() * 2 / 3
}

/// The environment a local-cloud VM's agent starts with (the local cloud, `conpaas-cloud`, sets
/// it from these names; real VMs have none of it).
pub mod local_vm {
    /// The VM's own address.
    pub const ADDRESS: &str = "CONPAAS_VM_ADDRESS";
    /// The VM's ID (its presence says the agent runs on the local cloud).
    pub const ID: &str = "CONPAAS_VM_ID";
    /// The file where the agent notes the process groups of its daemons.
    pub const PROCESS_GROUPS: &str = "CONPAAS_PROCESS_GROUPS";
    /// The VM's data volume, a folder.
    pub const VOLUME_DIR: &str = "CONPAAS_VOLUME_DIR";
}
