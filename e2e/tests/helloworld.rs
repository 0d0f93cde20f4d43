//! Stories 1-3 of the backbone: apply the helloworld example, scale it, stop and start it.

mod common;

use common::*;
use conpaas_crds::v1alpha1::{Cloud, Phase};
use conpaas_e2e::wait;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn helloworld_runs_scales_stops_and_starts() {
    let env = env("hello-e2e", 31).await;
    env.apply(&EXAMPLE).await;

    // 1. Three nodes, three VMs, each agent reporting its greeting and serving it.
    env.wait_ready("hello", "node 3/3").await;
    let nodes = env.nodes("hello").await;
    assert_eq!(nodes.len(), 3);
    let mut addresses = Vec::new();
    for node in &nodes {
        let status = node.status.clone().unwrap();
        let agent = status.agent.expect("the agent reported");
        assert_eq!(agent.greeting.as_deref(), Some("Hello World!"));
        assert!(
            status
                .provider_id
                .as_deref()
                .unwrap()
                .starts_with("local:///")
        );
        let address = status.address.unwrap();
        assert_eq!(
            http_get(&address, 8080).await.unwrap(),
            "Hello World!",
            "node {address} serves the greeting"
        );
        addresses.push(address);
        for label in [
            "conpaas.io/application",
            "conpaas.io/service",
            "conpaas.io/role",
        ] {
            assert!(
                node.metadata.labels.as_ref().unwrap().contains_key(label),
                "label {label}"
            );
        }
    }
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 3, "every VM has its own address");
    assert_eq!(env.live_vms().len(), 3);
    let svc = env.services().get("hello").await.unwrap();
    assert_eq!(svc.status.unwrap().phase, Phase::Running);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    for node in &nodes {
        let lease = leases
            .get(node.metadata.name.as_deref().unwrap())
            .await
            .expect("a heartbeat Lease per node");
        assert!(
            lease.spec.unwrap().renew_time.is_some(),
            "the agent renews its Lease"
        );
    }
    let clouds: Api<Cloud> = Api::all(env.client.clone());
    wait::until("the Cloud to count 3 nodes", LIMIT, || {
        let clouds = clouds.clone();
        async move {
            let status = clouds.get("local").await?.status.unwrap_or_default();
            Ok(status.nodes == Some(3) && status.provider.as_deref() == Some("local"))
        }
    })
    .await
    .unwrap();

    // The controller reports what it did at /metrics and is healthy and ready.
    let address = env.controller.http_address;
    // The node loop records a node's time to Ready when it writes the node's condition, which
    // may come a moment after the Service counted the agent's report.
    let host = address.ip().to_string();
    let scrape = || http_get_path(&host, address.port(), "/metrics");
    let waited = conpaas_e2e::wait::until("3 node-ready times in /metrics", LIMIT, || async {
        Ok(scrape()
            .await?
            .contains("conpaas_node_ready_seconds_count 3"))
    })
    .await;
    if let Err(e) = waited {
        let seen = scrape().await.unwrap_or_default();
        let count = seen
            .lines()
            .find(|l| l.contains("node_ready_seconds_count"));
        panic!("{e}; /metrics has {count:?}");
    }
    for node in env.nodes("hello").await {
        let status = node.status.unwrap();
        let (created, ready) = (status.created_at.unwrap(), status.ready_at.unwrap());
        assert!(ready.0 >= created.0, "readyAt {ready:?} before createdAt");
    }
    let metrics = scrape().await.unwrap();
    for needle in [
        r#"conpaas_cloud_calls_total{provider="local",operation="create",result="ok"} 3"#,
        "conpaas_node_ready_seconds_count 3",
        r#"conpaas_reconciles_total{kind="Service"}"#,
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    assert_eq!(
        http_get_path(&address.ip().to_string(), address.port(), "/healthz")
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(
        http_get_path(&address.ip().to_string(), address.port(), "/readyz")
            .await
            .unwrap(),
        "ok"
    );

    // 2. Scale to 5, then to 2: ADAPTING, then RUNNING; removed nodes' processes are gone.
    let scale = |n: i32| json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "spec": {"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": n}]}});
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch("hello", &pp, &Patch::Apply(scale(5)))
        .await
        .unwrap();
    env.wait_ready("hello", "node 5/5").await;
    assert_eq!(env.live_vms().len(), 5);
    let before: Vec<i32> = env.live_vms();
    env.services()
        .patch("hello", &pp, &Patch::Apply(scale(2)))
        .await
        .unwrap();
    env.wait_ready("hello", "node 2/2").await;
    env.wait_service("hello", "three VMs gone", |_| env.live_vms().len() == 2)
        .await;
    assert_eq!(
        before.iter().filter(|p| alive(**p)).count(),
        2,
        "the removed nodes' processes are gone"
    );
    let history: Vec<Phase> = phase_history(&env).await;
    assert!(
        history
            .windows(2)
            .any(|w| w == [Phase::Adapting, Phase::Running]),
        "history {history:?}"
    );

    // 3. Stop: EPILOGUE then STOPPED, no nodes, no VMs, the Service and its settings stay.
    let stop = json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "spec": {"application": "demo", "type": "helloworld", "state": "Stopped", "roles": [{"name": "node", "count": 2}]}});
    env.services()
        .patch("hello", &pp, &Patch::Apply(stop))
        .await
        .unwrap();
    env.wait_service("hello", "STOPPED", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.phase == Phase::Stopped)
    })
    .await;
    assert!(env.nodes("hello").await.is_empty());
    assert!(env.live_vms().is_empty(), "no VM runs while stopped");
    assert_eq!(
        env.services().get("hello").await.unwrap().spec.roles[0].count,
        Some(2),
        "the spec stays"
    );

    // ... and Running starts them again: PROLOGUE, then RUNNING.
    env.services()
        .patch("hello", &pp, &Patch::Apply(scale(2)))
        .await
        .unwrap();
    env.wait_ready("hello", "node 2/2").await;
    let history: Vec<Phase> = phase_history(&env).await;
    let tail: Vec<Phase> = history[history.len() - 4..].to_vec();
    assert_eq!(
        tail,
        vec![
            Phase::Epilogue,
            Phase::Stopped,
            Phase::Prologue,
            Phase::Running
        ]
    );

    // Deleting the Service terminates its VMs before the object goes.
    env.services()
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("hello").await;
    assert!(env.live_vms().is_empty(), "no VM outlives its Service");
}

/// The phases of the Service `hello`'s history, oldest first.
async fn phase_history(env: &Env) -> Vec<Phase> {
    let status = env.services().get("hello").await.unwrap().status.unwrap();
    status.history.iter().map(|h| h.phase).collect()
}
