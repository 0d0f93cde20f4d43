//! `conpaas-scale-bench`: the controller at scale, against a real API server. Prints numbers;
//! asserts nothing about speed.
//!
//! - The raw rate at which the API server accepts server-side-apply patches (64 workers, no
//!   controller running).
//! - Services totalling N nodes (default 3000) on a `local` Cloud served by the memory backend,
//!   each node's agent simulated here: it gets its node's own token (TokenRequest, as the real
//!   bootstrap does) and makes the real agent's calls with it (Lease renewals, SSA of
//!   status.agent). Time until every Service is Ready, API writes made, writes per node, the
//!   controller's RSS.
//! - With `--overload-seconds N`, a separate load saturates the API server for the first N
//!   seconds of the ramp (64 workers applying ConfigMaps of their own), then stops: the
//!   controller must finish without doing more work per node than in a quiet run.
//! - The API server's own count (`apiserver_request_total`) of the ramp's requests per node by
//!   verb and resource, and of the responses refused for load (429) or failed (5xx).
//! - A steady-state window: API writes by the controller, and its cloud calls by operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use conpaas_crds::v1alpha1::{Service, ServiceNode, is_condition_true};
use conpaas_e2e::standin::StandIns;
use conpaas_e2e::{ControlPlane, Controller, apiserver, manifest, wait};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Nodes in all
    #[arg(long, default_value_t = 3000)]
    nodes: usize,
    /// Nodes per Service
    #[arg(long, default_value_t = 100)]
    per_service: usize,
    /// Seconds of steady state to measure
    #[arg(long, default_value_t = 300)]
    steady_seconds: u64,
    /// Seconds during the ramp in which a separate load (64 workers applying unrelated
    /// ConfigMaps) saturates the API server; 0 for a quiet run
    #[arg(long, default_value_t = 0)]
    overload_seconds: u64,
    /// The API server's --max-requests-inflight (and half of it as
    /// --max-mutating-requests-inflight): lower than its default 400 to see requests refused
    /// with 429 and the controller wait them out
    #[arg(long)]
    max_requests_inflight: Option<u32>,
}

const NS: &str = "default";

/// The Events in the bench's namespace, by "reason on kind", each with its series count.
async fn events_by_reason(client: &Client) -> anyhow::Result<BTreeMap<String, (u64, i64)>> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let mut by_reason: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for e in events.list(&ListParams::default()).await?.items {
        let key = format!(
            "{} on {}",
            e.reason.clone().unwrap_or_default(),
            e.regarding.and_then(|r| r.kind).unwrap_or_default()
        );
        let entry = by_reason.entry(key).or_default();
        entry.0 += 1;
        entry.1 += e.series.map_or(1, |s| s.count as i64);
    }
    Ok(by_reason)
}

/// The API server's mutating requests, by "verb resource/subresource".
async fn api_writes_by(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    apiserver::requests_by(client, &apiserver::WRITES).await
}

/// The API server's mutating requests so far.
async fn api_writes(client: &Client) -> anyhow::Result<u64> {
    Ok(api_writes_by(client).await?.values().sum())
}

/// What grew between two breakdowns, largest first.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let mut rows: Vec<(u64, String)> = apiserver::grown(before, after)
        .into_iter()
        .map(|(k, d)| (d, k))
        .collect();
    rows.sort_by(|a, b| b.cmp(a));
    rows.iter()
        .map(|(d, k)| format!("    {d:>7}  {k}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Accepted SSA status patches per second, 64 workers, for `seconds`.
async fn raw_apply_rate(admin: &Client, seconds: u64) -> anyhow::Result<f64> {
    let api: Api<ServiceNode> = Api::namespaced(admin.clone(), "rate");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &k8s_openapi::api::core::v1::Namespace {
                metadata: ObjectMeta {
                    name: Some("rate".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    for i in 0..64 {
        let node: ServiceNode = serde_json::from_value(
            json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode", "metadata": {"name": format!("rate-{i}")},
            "spec": {"application": "a", "service": "s", "serviceType": "helloworld", "role": "node", "cloud": "none", "token": format!("t{i}")}}),
        )?;
        api.create(&PostParams::default(), &node).await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for i in 0..64 {
        let (api, done) = (api.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let patch = json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode", "status": {"agent": {"message": format!("write {n}")}}});
                let pp = kube::api::PatchParams::apply("rate").force();
                if api.patch_status(&format!("rate-{i}"), &pp, &kube::api::Patch::Apply(&patch)).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    // Gone before the controller starts: they belong to no Cloud and would only add noise.
    namespaces.delete("rate", &Default::default()).await?;
    api.delete_collection(&Default::default(), &ListParams::default())
        .await?;
    wait::until(
        "the scratch namespace to be gone",
        Duration::from_secs(120),
        || {
            let namespaces = namespaces.clone();
            async move { Ok(namespaces.get_opt("rate").await?.is_none()) }
        },
    )
    .await?;
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

/// Saturates the API server for `seconds` with 64 workers applying ConfigMaps in a namespace
/// of their own, as an unrelated tenant would; returns how many applies were accepted.
async fn overload(admin: Client, seconds: u64) -> anyhow::Result<u64> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some("overload".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &ns).await?;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin, "overload");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..64)
        .map(|i| {
            let (api, done) = (api.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let name = format!("load-{i}-{}", n % 16);
                    let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": n.to_string()}});
                    let pp = kube::api::PatchParams::apply("overload").force();
                    match api.patch(&name, &pp, &kube::api::Patch::Apply(&patch)).await {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if n == 1 => eprintln!("overload worker {i}: {e}"),
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    Ok(done.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limits: Vec<String> = args
        .max_requests_inflight
        .map(|n| {
            vec![
                format!("--max-requests-inflight={n}"),
                format!("--max-mutating-requests-inflight={}", (n / 2).max(1)),
            ]
        })
        .unwrap_or_default();
    let cp = ControlPlane::start_with(&limits).await?;
    let admin = cp.client().await?;

    let rate = raw_apply_rate(&admin, 10).await?;
    println!("raw server-side-apply rate (64 workers, no controller): {rate:.0} patches/s");

    let state = tempfile::tempdir()?;
    let controller = Controller::start_with(
        &cp,
        state.path(),
        130,
        &[("CONPAAS_LOCAL_BACKEND", "memory")],
    )?;
    manifest::apply(&admin, "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: local}\nspec: {local: {}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: bench}\nspec: {cloud: local}\n", NS).await?;

    let agents = Arc::new(StandIns::new(&cp).await?);
    tokio::spawn(agents.clone().run(admin.clone(), NS.to_string(), |_| true));

    let services = args.nodes.div_ceil(args.per_service);
    let writes_before = api_writes(&admin).await?;
    let requests_before = apiserver::all_requests_by(&admin).await?;
    let codes_before = apiserver::responses_by_code(&admin).await?;
    let started = Instant::now();
    let overload = (args.overload_seconds > 0)
        .then(|| tokio::spawn(overload(admin.clone(), args.overload_seconds)));
    for i in 0..services {
        let count = args.per_service.min(args.nodes - i * args.per_service);
        let yaml = format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{application: bench, type: helloworld, roles: [{{name: node, count: {count}}}]}}\n"
        );
        manifest::apply(&admin, &yaml, NS).await?;
    }
    let api: Api<Service> = Api::namespaced(admin.clone(), NS);
    let mut last_report = Instant::now();
    loop {
        // Polled every 5 s: the benchmark's own LISTs stay a small part of what is counted.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| is_condition_true(&st.conditions, "Ready"))
            })
            .count();
        if ready == services {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            println!(
                "  {:.0}s: {ready} of {services} Services Ready",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "not every Service was Ready after an hour"
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(overload) = overload {
        let patches = overload.await??;
        println!(
            "overload: {patches} ConfigMap applies accepted in {}s",
            args.overload_seconds
        );
    }
    let writes = api_writes(&admin).await? - writes_before;
    let pid = controller.pid().context("controller pid")?;
    println!(
        "{} nodes in {services} Services: all Ready in {elapsed:.1}s",
        args.nodes
    );
    println!(
        "API writes: {writes} ({:.1} per node; simulated agents made {})",
        writes as f64 / args.nodes as f64,
        agents.writes()
    );
    println!(
        "target: time to Ready <= 1.5 x writes / raw rate = {:.1}s",
        1.5 * writes as f64 / rate
    );
    println!("Events of the ramp: {:?}", events_by_reason(&admin).await?);
    let requests = apiserver::grown(&requests_before, &apiserver::all_requests_by(&admin).await?);
    // The overload's own ConfigMaps are not the controller's work.
    let (load, ours): (BTreeMap<_, _>, BTreeMap<_, _>) = requests
        .into_iter()
        .partition(|(k, _)| k.contains("configmaps/"));
    let total: u64 = ours.values().sum();
    println!(
        "API requests during the ramp (API server's count, ConfigMaps of the overload left out: {}): {total}, {:.1} per node",
        load.values().sum::<u64>(),
        total as f64 / args.nodes as f64
    );
    // What bringing a node up costs, apart from time: every write but the heartbeat renewals
    // (one per node every 40 s by default, for as long as the ramp lasts) and the stand-ins' own tokens.
    let renewals = ours.get("PATCH leases/").copied().unwrap_or(0);
    let creation: u64 = ours
        .iter()
        .filter(|(k, _)| {
            apiserver::WRITES
                .iter()
                .any(|w| k.starts_with(&format!("{w} ")))
        })
        .map(|(_, n)| n)
        .sum::<u64>()
        - renewals
        - agents
            .tokens()
            .min(ours.get("POST serviceaccounts/token").copied().unwrap_or(0));
    println!(
        "writes to bring a node up: {:.2} per node (heartbeat renewals left out: {:.2} per node; the stand-ins' own {} token requests left out)",
        creation as f64 / args.nodes as f64,
        renewals as f64 / args.nodes as f64,
        agents.tokens()
    );
    let mut rows: Vec<_> = ours.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    for (key, n) in rows {
        println!("    {:>7.2} per node  {key}", n as f64 / args.nodes as f64);
    }
    let codes = apiserver::grown(&codes_before, &apiserver::responses_by_code(&admin).await?);
    let refused: u64 = codes.get("429").copied().unwrap_or(0);
    let failed: u64 = codes
        .iter()
        .filter(|(c, _)| c.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    println!(
        "responses during the ramp: {refused} refused for load (429), {failed} server errors (5xx)"
    );
    println!(
        "controller RSS at {} nodes: {:.1} MiB",
        args.nodes,
        conpaas_e2e::process::rss_mib(pid)?
    );

    // Steady state: nothing changes; only heartbeats flow.
    let calls_before = controller.cloud_calls().await?;
    let breakdown_before = api_writes_by(&admin).await?;
    let writes_before = api_writes(&admin).await?;
    let agent_writes_before = agents.writes();
    let steady_from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let total = api_writes(&admin).await? - writes_before;
    let by_agents = agents.writes() - agent_writes_before;
    let calls_after = controller.cloud_calls().await?;
    println!(
        "  writes by resource:\n{}",
        grown(&breakdown_before, &api_writes_by(&admin).await?)
    );
    println!(
        "steady state, {}s: {} API writes by the controller ({total} in all, {by_agents} by the agents' heartbeats)",
        args.steady_seconds,
        total.saturating_sub(by_agents)
    );
    for op in ["list", "get", "create", "delete"] {
        println!(
            "  cloud {op} calls: {:.0}",
            conpaas_e2e::controller::sum_calls(&calls_after, op)
                - conpaas_e2e::controller::sum_calls(&calls_before, op)
        );
    }
    // What a steady state should not have: Events, and nodes that are not Ready.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), NS);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.list(&ListParams::default()).await?.items {
        let last = e
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0)
            .or(e.event_time.as_ref().map(|t| t.0));
        if last.is_some_and(|t| t >= steady_from) {
            let key = format!(
                "{} on {}",
                e.reason.unwrap_or_default(),
                e.regarding.and_then(|r| r.kind).unwrap_or_default()
            );
            *reasons.entry(key).or_default() += 1;
        }
    }
    println!("  Events during steady state: {reasons:?}");
    let nodes: Api<ServiceNode> = Api::namespaced(admin.clone(), NS);
    let mut unready: BTreeMap<String, u64> = BTreeMap::new();
    for node in nodes.list(&ListParams::default()).await?.items {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        if let Some(c) = ready.filter(|c| c.status != "True") {
            *unready.entry(c.reason).or_default() += 1;
        }
    }
    println!("  nodes not Ready at the end: {unready:?}");
    println!(
        "controller RSS after steady state: {:.1} MiB",
        conpaas_e2e::process::rss_mib(pid)?
    );
    Ok(())
}
