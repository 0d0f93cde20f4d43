//! `conpaas-bench`: prints the backbone's numbers on the local cloud against a real control
//! plane. Not a test: it asserts nothing about speed, it measures.
//! - time from applying a 10-node helloworld Service to Ready (median of 5 runs);
//! - the controller's RSS while it holds 300 nodes, and the time to get them Ready.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use conpaas_crds::v1alpha1::{Service, is_condition_true};
use conpaas_e2e::{ControlPlane, Controller, manifest, wait};
use kube::api::{Api, DeleteParams};

const BASE: &str = "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: local}\nspec: {local: {}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: bench}\nspec: {cloud: local}\n";

fn service(name: &str, count: i32) -> String {
    format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  application: bench\n  type: helloworld\n  roles: [{{name: node, count: {count}}}]\n"
    )
}

async fn apply_until_ready(
    client: &kube::Client,
    name: &str,
    count: i32,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    manifest::apply(client, &service(name, count), "default").await?;
    let want = format!("node {count}/{count}");
    wait::until(&format!("{name} Ready"), limit, || {
        let api = api.clone();
        let want = want.clone();
        async move {
            let s = api.get(name).await?;
            let st = s.status.unwrap_or_default();
            Ok(is_condition_true(&st.conditions, "Ready")
                && st.ready.as_deref() == Some(want.as_str()))
        }
    })
    .await?;
    Ok(started.elapsed())
}

async fn delete_and_wait(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.delete(name, &DeleteParams::default()).await?;
    wait::until(&format!("{name} gone"), Duration::from_secs(300), || {
        let api = api.clone();
        async move { Ok(api.get_opt(name).await?.is_none()) }
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let state = tempfile::tempdir()?;
    let controller = Controller::start(&cp, state.path(), 120)?;
    let client = cp.client().await?;
    manifest::apply(&client, BASE, "default").await?;

    let mut times = Vec::new();
    for run in 0..5 {
        let name = format!("ten-{run}");
        let t = apply_until_ready(&client, &name, 10, Duration::from_secs(300)).await?;
        println!(
            "run {run}: 10-node helloworld apply -> Ready in {:.2}s",
            t.as_secs_f64()
        );
        times.push(t);
        delete_and_wait(&client, &name).await?;
    }
    times.sort();
    println!(
        "apply -> Ready, 10 nodes, median of 5: {:.2}s",
        times[2].as_secs_f64()
    );

    let pid = controller.pid().context("controller pid")?;
    let idle = conpaas_e2e::process::rss_mib(pid)?;
    let t = apply_until_ready(&client, "three-hundred", 300, Duration::from_secs(1200)).await?;
    println!("apply -> Ready, 300 nodes: {:.1}s", t.as_secs_f64());
    let mut peak: f64 = 0.0;
    for _ in 0..10 {
        peak = peak.max(conpaas_e2e::process::rss_mib(pid)?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("controller RSS: {idle:.1} MiB idle, {peak:.1} MiB holding 300 nodes");
    delete_and_wait(&client, "three-hundred").await?;
    Ok(())
}
