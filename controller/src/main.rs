//! `conpaas-controller`: the ConPaaS operator. Needs no arguments: it finds the cluster as
//! kubectl does (`KUBECONFIG`, `~/.kube/config`, in-cluster) and keeps the local cloud's state
//! under `$XDG_STATE_HOME/conpaas` (or `CONPAAS_STATE_DIR`).
//!
//! Start-up order: endpoints (so /healthz answers while standing by) -> leadership -> the
//! heartbeat cache -> the loops ([`loops::run`]).

mod args;
mod code_api;
mod drivers;
mod git;
mod http;
mod leader;
mod loops;
mod sized_local;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use conpaas_reconcilers::backpressure;
use conpaas_reconcilers::metrics::Metrics;
use conpaas_reconcilers::{AgentApi, Context};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::client::ClientBuilder;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Config};

/// The shortest credit hour a controller accepts unless a test says otherwise.
const MIN_CREDIT_HOUR_SECONDS: u64 = 60;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = args::Args::parse();
    args.init_logging();
    if args.credit_hour_seconds < MIN_CREDIT_HOUR_SECONDS && !args.test_short_credit_hour {
        anyhow::bail!(
            "CONPAAS_CREDIT_HOUR_SECONDS={} is below {MIN_CREDIT_HOUR_SECONDS}: every node would be billed again every few seconds (tests set CONPAAS_TEST_SHORT_CREDIT_HOUR=true)",
            args.credit_hour_seconds
        );
    }
    // With the EC2 driver compiled in, rustls has two crypto backends and picks none itself.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut config = Config::infer()
        .await
        .context("find the Kubernetes API server (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let own_url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let agent_api = AgentApi {
        url: args.agent_api_server.clone().unwrap_or(own_url),
        ca_certs: config.root_cert.clone().unwrap_or_default(),
        insecure_skip_tls_verify: config.accept_invalid_certs,
    };
    let namespace = args
        .leader_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    // Writes are limited and refused ones retried by our own layers (backpressure), not kube's.
    config.default_retry = false;
    // The leader Lease is renewed on a client of its own: behind the reconcilers' queue of
    // writes, a renewal could wait past the lease under load and leadership would be lost.
    let lease_client = Client::try_from(config.clone()).context("build the leader's client")?;
    // Outside a pod nothing makes the code API's Service: name this host unless told (an empty
    // value means none).
    let code_api_external_name = match args.code_api_external_name.as_deref() {
        Some(name) => Some(name.to_string()).filter(|n| !n.is_empty()),
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() => {
            Some(this_host_for(config.cluster_url.host()))
        }
        None => None,
    };
    args.code_api_external_name = code_api_external_name;
    let client = ClientBuilder::try_from(config)
        .context("build the Kubernetes client")?
        .with_layer(&backpressure::layers(args.max_concurrent_writes))
        .build();
    let local = args.local_config()?;
    let identity = format!("{}-{}", hostname(), std::process::id());
    tracing::info!(state_dir = %local.state_dir.display(), agent = %local.agent_binary.display(), api = %agent_api.url, %identity, "starting conpaas-controller");

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
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

    let leading = if args.leader_elect {
        Some(
            leader::acquire(
                lease_client,
                &namespace,
                &identity,
                args.leader_lease_seconds,
            )
            .await?,
        )
    } else {
        None
    };

    // Heartbeat Leases are read from a watched cache; the loops start once it is filled, so a
    // restarted controller never sees every node as silent. Each renewal is dated by this
    // controller's clock when seen, not the VM's (`lease_clock`).
    let (leases, lease_writer) = reflector::store::<Lease>();
    let lease_watch = watcher(
        Api::<Lease>::all(client.clone()),
        watcher::Config::default().labels(conpaas_crds::labels::LABEL_SERVICE),
    )
    .default_backoff()
    .map_ok({
        let mut clock = conpaas_reconcilers::service_node::lease_clock::LeaseClock::default();
        move |mut event| {
            clock.observe(&mut event, k8s_openapi::jiff::Timestamp::now());
            event
        }
    })
    .modify(slim_lease)
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

    let (caches, cache_writers) = loops::caches();
    let ctx = Arc::new(Context {
        client: client.clone(),
        drivers: Arc::new(drivers::Drivers::new(
            local,
            args.local_backend == "memory",
            metrics.clone(),
            client.clone(),
            &namespace,
        )?),
        metrics,
        agent_api,
        recorder: conpaas_reconcilers::events::Recorder::new(
            client.clone(),
            "conpaas-controller",
            &identity,
        ),
        backoff: Default::default(),
        settings: conpaas_reconcilers::context::Settings {
            orphan_grace: Duration::from_secs(args.orphan_grace_seconds),
            credit_hour: Duration::from_secs(args.credit_hour_seconds),
            agent_token_ttl: Duration::from_secs(args.agent_token_ttl_seconds),
            agent_token_refresh: Duration::from_secs(
                args.agent_token_refresh_seconds
                    .unwrap_or(args.agent_token_ttl_seconds * 2 / 3),
            ),
            ..Default::default()
        },
        // One VM listing per Cloud every 10 s serves every node on it.
        vms: conpaas_reconcilers::service_node::vm_cache::VmCache::new(Duration::from_secs(10)),
        leases,
        caches,
        credentials: Default::default(),
        service_secrets: Default::default(),
        scaling_written: Default::default(),
        ready_written: Default::default(),
        vms_recorded: Default::default(),
        parked: Default::default(),
    });

    let store = artifact_store(&args)?;
    let git = git::run(
        ctx.clone(),
        store.clone(),
        git::Settings {
            cache_dir: args.local_config()?.state_dir.join("git"),
            max_archive_bytes: args.max_archive_bytes,
            allowed_networks: args.git_allowed_networks.clone(),
        },
    );
    let code_api = tokio::spawn(serve_code_api(
        args,
        namespace,
        store,
        ctx.clone(),
        ready.clone(),
    ));

    // Counts of repeated Events are written once a minute.
    let event_counts = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.recorder.run().await }
    });

    // The git sources write Services: they run where the loops run, on the leader.
    let work = async {
        tokio::select! {
            _ = loops::run(client, ctx, cache_writers, ready) => {}
            _ = git => {}
        }
    };
    match leading {
        Some(leadership) => {
            tokio::select! {
                _ = work => {}
                _ = leadership.lost() => {
                    // Stop acting at once: another replica may already lead.
                    tracing::error!("lost leadership; exiting");
                    std::process::exit(1);
                }
            }
            leadership.release().await;
        }
        None => work.await,
    }
    lease_watch.abort();
    event_counts.abort();
    code_api.abort();
    tracing::info!("conpaas-controller stopped");
    Ok(())
}

/// Serves the code API; when it cannot start (an API server without a front proxy, a port
/// taken, a refused call) the controller still reconciles, says why, and tries again with
/// backoff (`cpsctl doctor` shows the APIService unavailable meanwhile).
async fn serve_code_api(
    args: args::Args,
    namespace: String,
    store: conpaas_artifacts::Store,
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
) {
    let mut wait = Duration::from_secs(5);
    loop {
        let served = async {
            // Empty means none, so an environment can unset a default given by another layer.
            let external_name = args
                .code_api_external_name
                .as_deref()
                .filter(|name| !name.is_empty());
            let port = args.code_api_service_port.unwrap_or(match external_name {
                Some(_) => args.code_api_address.port(),
                None => 443,
            });
            let target = code_api::Target {
                namespace: &namespace,
                service: &args.code_api_service,
                port: port.into(),
                external_name,
            };
            code_api::run(
                args.code_api_address,
                target,
                store.clone(),
                ctx.clone(),
                ready.clone(),
                code_api::Settings {
                    max_archive_bytes: args.max_archive_bytes,
                    namespace_store_bytes: args.namespace_store_bytes,
                    gc_grace: Duration::from_secs(args.artifact_gc_grace_seconds),
                    gc_every: Duration::from_secs(args.artifact_gc_interval_seconds.max(1)),
                },
            )
            .await
        };
        if let Err(e) = served.await {
            tracing::error!(retry_in = ?wait,
                error = format!("{e:#}"),
                "the code API is not served: code uploads and archive downloads fail"
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(300));
    }
}

/// The artifact store: `CONPAAS_ARTIFACT_STORE`, or `artifacts` in the state folder.
fn artifact_store(args: &args::Args) -> anyhow::Result<conpaas_artifacts::Store> {
    let url = match &args.artifact_store {
        Some(url) => url.clone(),
        None => format!(
            "file://{}",
            args.local_config()?.state_dir.join("artifacts").display()
        ),
    };
    conpaas_artifacts::Store::from_url(&url)
        .with_context(|| format!("open the artifact store {url}"))
}

/// Keeps what the loops read of a heartbeat Lease, its name and `renewTime`: thousands of them
/// stay cached, and the rest (holder, durations, labels, owners) is only weight.
fn slim_lease(lease: &mut Lease) {
    let renew_time = lease.spec.as_mut().and_then(|s| s.renew_time.take());
    let meta = &mut lease.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
    meta.owner_references = None;
    lease.spec = Some(LeaseSpec {
        renew_time,
        ..Default::default()
    });
}

/// How an API server at `api` reaches this host: `localhost` when it runs here, else the
/// host's name.
fn this_host_for(api_host: Option<&str>) -> String {
    let local = api_host.is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if local {
        "localhost".into()
    } else {
        hostname()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "local".into())
}
