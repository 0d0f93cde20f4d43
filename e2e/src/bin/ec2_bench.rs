//! `conpaas-ec2-bench`: the EC2 driver against moto, with stand-in agents (moto boots nothing).
//! Prints numbers; asserts nothing about speed.
//!
//! - Time for a helloworld Service to go 0 -> 20 -> 0 nodes (Ready at each end).
//! - Cloud API calls per VM-cache sync (one per Cloud every 10 s) while 100 nodes run steadily.
//! - Crash safety: N runs (default 20) of "scale 0 -> 1, kill -9 the controller as soon as moto
//!   holds the new instance (right after RunInstances), restart it, wait for Ready, scale to 0";
//!   after each run, duplicate instances (more than one for the node) and leaked ones (any left
//!   after scaling to 0) are counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use conpaas_cloud::moto::Moto;
use conpaas_crds::v1alpha1::Service;
use conpaas_e2e::controller::sum_calls;
use conpaas_e2e::moto::live_instances;
use conpaas_e2e::standin::StandIns;
use conpaas_e2e::{ControlPlane, Controller, manifest, wait};
use kube::api::{Api, Patch, PatchParams};

const NS: &str = "default";

#[derive(Parser)]
struct Args {
    /// Kill-after-RunInstances runs.
    #[arg(long, default_value_t = 20)]
    crash_runs: usize,
    /// Nodes for the steady-state call count.
    #[arg(long, default_value_t = 100)]
    steady_nodes: i32,
}

async fn scale(api: &Api<Service>, count: i32) -> anyhow::Result<()> {
    let spec = serde_json::json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "metadata": {"name": "hello"},
        "spec": {"application": "bench", "type": "helloworld", "replicas": count}});
    api.patch(
        "hello",
        &PatchParams::apply("conpaas-bench").force(),
        &Patch::Apply(spec),
    )
    .await?;
    Ok(())
}

async fn ready(api: &Api<Service>, count: i32) -> anyhow::Result<()> {
    let want = format!("node {count}/{count}");
    wait::until(
        &format!("hello Ready with {want}"),
        Duration::from_secs(600),
        || async {
            let s = api.get("hello").await?;
            let st = s.status.unwrap_or_default();
            Ok(st.observed_generation == s.metadata.generation
                && st.ready.as_deref() == Some(want.as_str())
                && conpaas_crds::v1alpha1::is_condition_true(&st.conditions, "Ready"))
        },
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let moto = Moto::start()?;
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    let state = tempfile::tempdir()?;
    let mut controller = Controller::start_with(&cp, state.path(), 131, &[])?;
    manifest::apply(&admin, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: aws-creds}}\nstringData: {{accessKeyId: testing, secretAccessKey: testing}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {{name: aws}}\nspec: {{callsPerSecond: 100, ec2: {{region: us-east-1, endpoint: '{}', imageId: ami-03cf127a, instanceType: t3.micro, credentialsSecret: {{name: aws-creds}}}}}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {{name: bench}}\nspec: {{cloud: aws}}\n",
        moto.endpoint), NS).await?;
    let standins = Arc::new(StandIns::new(&cp).await?);
    tokio::spawn(standins.run(admin.clone(), NS.to_string(), |_| true));
    let api: Api<Service> = Api::namespaced(admin.clone(), NS);

    scale(&api, 0).await?;
    ready(&api, 0).await?;
    let started = Instant::now();
    scale(&api, 20).await?;
    ready(&api, 20).await?;
    let up = started.elapsed();
    scale(&api, 0).await?;
    ready(&api, 0).await?;
    wait::until("moto empty", Duration::from_secs(120), || async {
        Ok(live_instances(&moto).await?.is_empty())
    })
    .await?;
    let total = started.elapsed();
    println!(
        "0 -> 20 -> 0 on moto: {:.1} s (0 -> 20 Ready: {:.1} s)",
        total.as_secs_f64(),
        up.as_secs_f64()
    );

    scale(&api, args.steady_nodes).await?;
    ready(&api, args.steady_nodes).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = controller.cloud_calls().await?;
    let window = Duration::from_secs(60);
    tokio::time::sleep(window).await;
    let after = controller.cloud_calls().await?;
    let syncs = window.as_secs_f64() / 10.0;
    for op in ["list", "get", "create", "delete", "set_tags"] {
        let n = sum_calls(&after, op) - sum_calls(&before, op);
        println!(
            "steady {} nodes, {}s: {op} calls {n} ({:.2} per sync)",
            args.steady_nodes,
            window.as_secs(),
            n / syncs
        );
    }
    scale(&api, 0).await?;
    ready(&api, 0).await?;

    let (mut duplicates, mut leaked) = (0usize, 0usize);
    for run in 0..args.crash_runs {
        let before = live_instances(&moto).await?.len();
        scale(&api, 1).await?;
        wait::until("RunInstances", Duration::from_secs(60), || async {
            Ok(live_instances(&moto).await?.len() > before)
        })
        .await?;
        controller.kill();
        controller.restart()?;
        ready(&api, 1).await?;
        let live = live_instances(&moto).await?.len();
        duplicates += live.saturating_sub(1);
        scale(&api, 0).await?;
        ready(&api, 0).await?;
        // The orphan sweep would remove a duplicate after its grace period; count before that.
        let left = live_instances(&moto).await?.len();
        leaked += left;
        println!(
            "run {run}: {live} instance(s) while Ready with 1 node, {left} left after scaling to 0"
        );
    }
    println!(
        "kill -9 right after RunInstances, {} runs: {duplicates} duplicate, {leaked} leaked instance(s)",
        args.crash_runs
    );
    controller.stop();
    Ok(())
}
