//! Crash safety: no VM is leaked or doubled when the controller dies at any point, VMs that no
//! node claims are swept, and VMs without our tag are never touched.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use conpaas_cloud::local::{LocalCloud, LocalConfig};
use conpaas_cloud::{ComputeDriver, CreateRequest, Tags, VmState};
use conpaas_crds::v1alpha1::ServiceNode;
use conpaas_e2e::wait;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

/// The controller's VMs as the cloud lists them, live ones only.
async fn live_vms(state: &Path) -> Vec<conpaas_cloud::Vm> {
    let cloud = LocalCloud::new(LocalConfig {
        state_dir: state.to_path_buf(),
        agent_binary: "/bin/false".into(),
        subnet: 250,
        stop_grace: Duration::from_secs(1),
    });
    let ours = Tags::from([(
        "conpaas.io/managed-by".to_string(),
        "conpaas-controller".to_string(),
    )]);
    cloud
        .list(&ours)
        .await
        .unwrap()
        .into_iter()
        // Every VM that still exists counts: a leaked VM that is starting or stopping costs money
        // all the same.
        .filter(|vm| vm.state != VmState::Terminated)
        .collect()
}

/// (leaked, duplicate): live VMs no node claims, and VMs beyond the first per node.
fn leaks_and_duplicates(vms: &[conpaas_cloud::Vm], nodes: &[ServiceNode]) -> (usize, usize) {
    let tokens: BTreeSet<&str> = nodes.iter().map(|n| n.spec.token.as_str()).collect();
    let leaked = vms
        .iter()
        .filter(|vm| !tokens.contains(vm.token.as_str()))
        .count();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for vm in vms {
        *per_node
            .entry(vm.tags.get("conpaas.io/node").map_or("", String::as_str))
            .or_default() += 1;
    }
    let duplicates = per_node.values().map(|n| n.saturating_sub(1)).sum();
    (leaked, duplicates)
}

/// A reproducible sequence of kill delays (xorshift; no dependency, same on every machine).
struct Seeded(u64);

impl Seeded {
    fn next_millis(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_controller_at_random_points_leaks_and_doubles_nothing() {
    let seed: u64 = std::env::var("CONPAAS_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    let mut rng = Seeded(seed);
    // A killed leader's Lease must expire before its restart leads: keep that short here.
    let mut env = env_with("torture-e2e", 40, &[("CONPAAS_LEADER_LEASE_SECONDS", "2")]).await;
    env.apply(&EXAMPLE.replace("count: 3", "count: 0")).await;
    env.wait_ready("hello", "node 0/0").await;
    let pp = PatchParams::apply("conpaas-e2e").force();
    let (mut kills, mut leaked_total, mut duplicate_total, mut checks) = (0, 0, 0, 0);
    for cycle in 0..5 {
        for count in [20, 0] {
            // A kill that cuts a VM's boot short leaves it failed; its node is replaced once
            // unhealthy for the heartbeat timeout (the default 120 s would outlast the wait below).
            let spec = json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
                "spec": {"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": count}],
                    "health": {"heartbeatTimeoutSeconds": 15}}});
            env.services()
                .patch("hello", &pp, &Patch::Apply(spec))
                .await
                .unwrap();
            for _ in 0..5 {
                // The kill point: a random moment of the scale, not a wait for anything.
                tokio::time::sleep(Duration::from_millis(rng.next_millis(900))).await;
                env.controller.kill();
                kills += 1;
                env.controller.restart().unwrap();
            }
            // A quiet point: the scale has converged; the VMs must equal the ServiceNodes.
            env.wait_ready("hello", &format!("node {count}/{count}"))
                .await;
            let nodes = env.nodes("hello").await;
            let vms = live_vms(env.state.path()).await;
            let (leaked, duplicates) = leaks_and_duplicates(&vms, &nodes);
            println!(
                "cycle {cycle}, count {count}: {} nodes, {} VMs, {leaked} leaked, {duplicates} duplicate",
                nodes.len(),
                vms.len()
            );
            leaked_total += leaked;
            duplicate_total += duplicates;
            checks += 1;
            assert_eq!(nodes.len(), count as usize);
            assert_eq!(
                vms.len(),
                nodes.len(),
                "VMs equal ServiceNodes at a quiet point"
            );
        }
    }
    println!(
        "torture (seed {seed:#x}): {kills} kills, {checks} quiet points, {leaked_total} leaked, {duplicate_total} duplicate VMs"
    );
    assert_eq!((leaked_total, duplicate_total), (0, 0));
}

fn fake_agent(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("foreign-vm");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_are_swept_and_foreign_vms_are_never_touched() {
    let mut env = env_with("orphan-e2e", 41, &[("CONPAAS_ORPHAN_GRACE_SECONDS", "1")]).await;
    env.apply(&EXAMPLE.replace("count: 3", "count: 2")).await;
    env.wait_ready("hello", "node 2/2").await;

    // A VM someone else runs from the same cloud account, with a tag that is not ours.
    let foreign_cloud = LocalCloud::new(LocalConfig {
        state_dir: env.state.path().to_path_buf(),
        agent_binary: fake_agent(env.state.path()),
        subnet: 41,
        stop_grace: Duration::from_secs(1),
    });
    let foreign = foreign_cloud
        .create(&CreateRequest {
            token: "foreign-1".into(),
            name: "not-ours".into(),
            instance_type: None,
            tags: Tags::from([(
                "conpaas.io/managed-by".to_string(),
                "someone-else".to_string(),
            )]),
            user_data: String::new(),
            volume_gib: None,
            size: None,
        })
        .await
        .unwrap();

    // A node force-deleted while the controller was down leaves its VM without an owner.
    env.controller.kill();
    let nodes = env.nodes("hello").await;
    let lost = nodes[0].metadata.name.clone().unwrap();
    let lost_token = nodes[0].spec.token.clone();
    let api: Api<ServiceNode> = env.nodes_api();
    api.patch(
        &lost,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    api.delete(&lost, &DeleteParams::default()).await.ok();
    assert!(
        live_vms(env.state.path())
            .await
            .iter()
            .any(|vm| vm.token == lost_token)
    );
    env.controller.restart().unwrap();

    // The Service replaces the node; the sweep terminates the orphan and says so.
    env.wait_ready("hello", "node 2/2").await;
    wait::until("the orphan swept", LIMIT, || async {
        Ok(!live_vms(env.state.path())
            .await
            .iter()
            .any(|vm| vm.token == lost_token))
    })
    .await
    .unwrap();
    env.wait_event("default", "OrphanSwept", None).await;
    let nodes = env.nodes("hello").await;
    let vms = live_vms(env.state.path()).await;
    assert_eq!(leaks_and_duplicates(&vms, &nodes), (0, 0));
    assert_eq!(vms.len(), 2);

    let survivor = foreign_cloud
        .get(&foreign.id)
        .await
        .unwrap()
        .expect("the foreign VM still exists");
    assert_eq!(
        survivor.state,
        VmState::Running,
        "a VM without our tag is never touched"
    );
    foreign_cloud.delete(&foreign.id).await.unwrap();
}
