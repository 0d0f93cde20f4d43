//! What every reconcile loop shares.

use std::sync::Arc;
use std::time::Duration;

use conpaas_cloud::ComputeDriver;
use conpaas_crds::v1alpha1::Cloud;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::runtime::reflector::Store;

use crate::backoff::Backoff;

/// Builds (and caches) the driver for a Cloud. The controller implements it with the backends
/// it was compiled with; tests may hand out a memory cloud.
#[async_trait::async_trait]
pub trait DriverRegistry: Send + Sync {
    /// The driver for this Cloud, or why there is none (a backend not compiled in, credentials
    /// that cannot be read).
    async fn driver(&self, cloud: &Cloud) -> Result<Arc<dyn ComputeDriver>, String>;
}

/// How agents reach the API server, as written into their bootstrap.
#[derive(Debug, Clone)]
pub struct AgentApi {
    /// API server URL.
    pub url: String,
    /// DER certificates to trust.
    pub ca_certs: Vec<Vec<u8>>,
    /// Skip TLS verification.
    pub insecure_skip_tls_verify: bool,
}

/// Tunables of the loops.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a node's VM is looked at when nothing else happens.
    pub node_resync: Duration,
    /// Lifetime of an agent's token.
    pub agent_token_ttl: Duration,
    /// When agents renew their token (by then at most two thirds of its lifetime).
    pub agent_token_refresh: Duration,
    /// How old an unclaimed VM with our tag must be before the orphan sweep terminates it.
    pub orphan_grace: Duration,
    /// The length of the credit hour: each started one of a node costs its price once.
    pub credit_hour: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_resync: Duration::from_secs(30),
            agent_token_ttl: Duration::from_secs(3600),
            agent_token_refresh: Duration::from_secs(2400),
            orphan_grace: Duration::from_secs(120),
            credit_hour: Duration::from_secs(3600),
        }
    }
}

/// Shared state of the reconcile loops.
pub struct Context {
    /// Kubernetes client with the controller's identity.
    pub client: Client,
    /// Cloud drivers.
    pub drivers: Arc<dyn DriverRegistry>,
    /// How agents reach the API server.
    pub agent_api: AgentApi,
    /// Publishes Kubernetes Events, one per happening.
    pub recorder: crate::events::Recorder,
    /// Per-object failure backoff.
    pub backoff: Backoff,
    /// Tunables.
    pub settings: Settings,
    /// Metrics served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Shared per-Cloud VM listings the VM loop reads from.
    pub vms: crate::service_node::vm_cache::VmCache,
    /// The agents' heartbeat Leases, kept current by a watch: reading a heartbeat costs no call.
    pub leases: Store<Lease>,
    /// The loops' own kinds, kept current by their watches.
    pub caches: crate::caches::Caches,
    /// The agents' credentials and tokens this controller already made.
    pub credentials: crate::service_node::credentials::Memo,
    /// The Services whose credentials Secret this controller already made.
    pub service_secrets: crate::service::secrets::Made,
    /// The autoscaler's decisions this controller wrote, newer than the cache for a moment.
    pub scaling_written: crate::service::scaling_memo::Written,
    /// The nodes' first Ready times this controller wrote, newer than the cache for a moment.
    pub ready_written: crate::service_node::ready_memo::ReadyWritten,
    /// The VMs this controller recorded on nodes, newer than the cache for a moment.
    pub vms_recorded: crate::service_node::recorded_memo::Recorded,
    /// The nodes whose cloud refused them for good, waiting for a change.
    pub parked: crate::service_node::parked_memo::Parked,
}
