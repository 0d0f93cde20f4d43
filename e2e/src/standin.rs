//! Stand-in agents for VMs that boot nothing (the memory backend, moto's EC2 instances). For
//! each ServiceNode with a VM, a stand-in gets the node's own token (TokenRequest for the
//! node's ServiceAccount, as the real bootstrap carries) and makes the real agent's calls with
//! it: server-side apply of `status.agent` (Ready, for the node's generation) and a renewal of
//! the node's heartbeat Lease as often as the agent would. Nothing else of the agent is simulated: no role
//! software runs, nothing listens on the node's address.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conpaas_crds::v1alpha1::ServiceNode;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::ControlPlane;

/// The stand-ins of one control plane. Requests carry the bearer token of the node they act
/// for, over a client that has no credentials of its own.
pub struct StandIns {
    raw: Client,
    writes: AtomicU64,
    tokens: AtomicU64,
}

impl StandIns {
    /// Stand-ins that reach `cp`'s API server.
    pub async fn new(cp: &ControlPlane) -> anyhow::Result<Self> {
        let mut config = Config::new(cp.url.parse()?);
        config.root_cert = Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&cp.kubeconfig)?,
            &Default::default(),
        )
        .await?
        .root_cert;
        Ok(Self {
            raw: Client::try_from(config)?,
            writes: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        })
    }

    /// Tokens the stand-ins requested for themselves so far: a real agent gets its token in the
    /// bootstrap instead, so these are the benchmark's cost, not the system's.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// API writes the stand-ins made so far (renewals and reports, with the nodes' tokens).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    async fn send(
        &self,
        method: http::Method,
        path: String,
        content_type: &str,
        body: serde_json::Value,
        token: &str,
    ) -> anyhow::Result<()> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(serde_json::to_vec(&body)?)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.raw.request_text(req).await?;
        Ok(())
    }

    async fn renew(&self, ns: &str, node: &str, token: &str) -> anyhow::Result<()> {
        let body = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
        let path = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{node}?fieldManager=conpaas-agent"
        );
        self.send(
            http::Method::PATCH,
            path,
            "application/merge-patch+json",
            body,
            token,
        )
        .await
    }

    /// Reports the node Ready at `generation`.
    async fn report(
        &self,
        ns: &str,
        node: &ServiceNode,
        generation: i64,
        token: &str,
    ) -> anyhow::Result<()> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let body = json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode", "status": {"agent": {
            "state": "Ready", "observedGeneration": generation, "role": node.spec.role,
            "message": "simulated agent", "greeting": "Hello World!"}}});
        let path = format!(
            "/apis/conpaas.io/v1alpha1/namespaces/{ns}/servicenodes/{name}/status?fieldManager=conpaas-agent&force=true"
        );
        self.send(
            http::Method::PATCH,
            path,
            "application/apply-patch+yaml",
            body,
            token,
        )
        .await
    }

    /// Boots a stand-in for every node of namespace `ns` that has a VM and that `wanted`
    /// selects, and keeps its heartbeat. Runs until the watch ends.
    pub async fn run(self: Arc<Self>, admin: Client, ns: String, wanted: fn(&ServiceNode) -> bool) {
        let nodes: Api<ServiceNode> = Api::namespaced(admin.clone(), &ns);
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, &ns);
        let booting = Arc::new(Semaphore::new(64));
        let mut started: HashSet<(String, i64)> = HashSet::new();
        // The newest generation seen per node (by UID), each behind a lock held from reading it
        // to reporting it: a stand-in started for an older generation that reports late must not
        // put it back over a newer one (reading, then reporting apart, let that happen).
        let newest: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<i64>>>>> = Default::default();
        let mut stream = watcher(nodes, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        // A failed watch call is retried with backoff by the stream: it must not end the
        // stand-ins (they would stop reporting new generations, and their nodes stay unready).
        while let Some(event) = stream.next().await {
            let Ok(node) = event else {
                continue;
            };
            let has_vm = node
                .status
                .as_ref()
                .is_some_and(|s| s.provider_id.is_some());
            // By UID: a node re-created under the same name is a new VM to boot.
            let key = (
                node.metadata.uid.clone().unwrap_or_default(),
                node.metadata.generation.unwrap_or(0),
            );
            let seen = newest
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.0.clone())
                .or_default()
                .clone();
            {
                let mut seen = seen.lock().await;
                *seen = (*seen).max(key.1);
            }
            if !has_vm
                || !wanted(&node)
                || node.metadata.deletion_timestamp.is_some()
                || !started.insert(key)
            {
                continue;
            }
            let (me, accounts, booting, ns) =
                (self.clone(), accounts.clone(), booting.clone(), ns.clone());
            tokio::spawn(async move {
                let Ok(_permit) = booting.acquire().await else {
                    return;
                };
                let name = node.metadata.name.clone().unwrap_or_default();
                let request = TokenRequest {
                    spec: TokenRequestSpec {
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                // As the real agent: a call refused for load (429) is tried again, never given up,
                // or the node would look dead for the benchmark's own reason. A node that is gone
                // (its account or Lease deleted) ends its stand-in.
                let mut wait = Duration::from_millis(500);
                let token = loop {
                    me.tokens.fetch_add(1, Ordering::Relaxed);
                    match accounts
                        .create_token_request(&name, &PostParams::default(), &request)
                        .await
                    {
                        Ok(t) => break t.status.map(|s| s.token).unwrap_or_default(),
                        Err(kube::Error::Api(e)) if e.code == 404 => return,
                        Err(_) => {}
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                };
                loop {
                    let booted = match me.renew(&ns, &name, &token).await {
                        Ok(()) => {
                            let generation = seen.lock().await;
                            me.report(&ns, &node, *generation, &token).await
                        }
                        Err(e) => Err(e),
                    };
                    match booted {
                        Ok(()) => break,
                        Err(e) if gone(&e) => return,
                        Err(_) => {}
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                drop(_permit);
                let every =
                    conpaas_crds::v1alpha1::heartbeat_interval(node.spec.heartbeat_timeout_seconds);
                let mut next = every;
                loop {
                    tokio::time::sleep(next).await;
                    next = match me.renew(&ns, &name, &token).await {
                        Ok(()) => every,
                        Err(e) if gone(&e) => return,
                        Err(_) => Duration::from_secs(1),
                    };
                }
            });
        }
    }
}

/// The node a call was made for no longer exists (or its credentials went with it).
fn gone(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<kube::Error>(), Some(kube::Error::Api(e)) if [401, 403, 404].contains(&e.code))
}
