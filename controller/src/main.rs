//! `conpaas-controller`: the ConPaaS operator. Needs no arguments: it finds the cluster as
//! kubectl does (`KUBECONFIG`, `~/.kube/config`, in-cluster) and keeps the local cloud's state
//! under `$XDG_STATE_HOME/conpaas` (or `CONPAAS_STATE_DIR`).

mod args;
mod drivers;
mod http;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use conpaas_reconcilers::{AgentApi, Context, application, cloud, service, service_node};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args::Args::parse();
    args.init_logging();

    let config = Config::infer()
        .await
        .context("find the Kubernetes API server (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let agent_api = AgentApi {
        url: args.agent_api_server.clone().unwrap_or_else(|| {
            config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string()
        }),
        ca_certs: config.root_cert.clone().unwrap_or_default(),
        insecure_skip_tls_verify: config.accept_invalid_certs,
    };
    let client = Client::try_from(config).context("build the Kubernetes client")?;
    let local = args.local_config()?;
    tracing::info!(state_dir = %local.state_dir.display(), agent = %local.agent_binary.display(), api = %agent_api.url, "starting conpaas-controller");

    // Heartbeat Leases are read from a watched cache; the loops start once it is filled, so a
    // restarted controller never sees every node as silent.
    let (leases, lease_writer) = reflector::store::<Lease>();
    let lease_watch = watcher(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().labels(conpaas_crds::labels::LABEL_SERVICE),
    )
    .default_backoff()
    .reflect(lease_writer)
    .for_each(|event| async {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching heartbeat leases");
        }
    });
    let lease_watch = tokio::spawn(lease_watch);
    leases
        .wait_until_ready()
        .await
        .context("fill the heartbeat lease cache")?;

    let metrics = Arc::new(conpaas_reconcilers::metrics::Metrics::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = http::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let address = args.http_address;
    tokio::spawn(async move {
        if let Err(e) = http::serve(address, health).await {
            tracing::error!(error = %e, %address, "the metrics and health endpoints stopped");
        }
    });

    let ctx = Arc::new(Context {
        client: client.clone(),
        drivers: Arc::new(drivers::Drivers::new(local, metrics.clone())),
        metrics,
        agent_api,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "conpaas-controller".into(),
                instance: Some(hostname()),
            },
        ),
        backoff: Default::default(),
        settings: conpaas_reconcilers::context::Settings {
            orphan_grace: Duration::from_secs(args.orphan_grace_seconds),
            ..Default::default()
        },
        leases,
    });

    let services = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ServiceNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(service::reconcile, service::error_policy, ctx.clone())
    .for_each(|_| async {});
    let nodes = Controller::new(
        Api::<ServiceNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        service_node::reconcile,
        service_node::error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    let applications = Controller::new(
        Api::<Application>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        |svc| {
            let ns = svc.metadata.namespace.clone()?;
            Some(ObjectRef::<Application>::new(&svc.spec.application).within(&ns))
        },
    )
    .shutdown_on_signal()
    .run(
        application::reconcile,
        application::error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    // Node changes refresh their Cloud's node count; the debounce folds a burst into one pass.
    let clouds = Controller::new(
        Api::<Cloud>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceNode>::all(client.clone()),
        watcher::Config::default(),
        |node| Some(ObjectRef::<Cloud>::new(&node.spec.cloud)),
    )
    .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
    .shutdown_on_signal()
    .run(cloud::reconcile, cloud::error_policy, ctx.clone())
    .for_each(|_| async {});
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    futures::join!(services, nodes, applications, clouds);
    lease_watch.abort();
    tracing::info!("conpaas-controller stopped");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "local".into())
}
