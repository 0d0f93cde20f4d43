//! Story 5: a generic service runs the user's lifecycle scripts with MY_IP, MY_ROLE, MASTER_IP
//! and the member list, calls notify.sh on membership changes, and reports each script's state.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

fn archive() -> Vec<u8> {
    let scripts = [
        ("init.sh", "echo initialised > ../../init.txt\n"),
        (
            "run.sh",
            "echo \"$MY_ROLE $MY_IP $MASTER_IP\" > ../../run.txt\nexec sleep 600\n",
        ),
        ("notify.sh", "echo \"$MEMBERS\" > ../../members.txt\n"),
        ("interrupt.sh", "echo interrupted > ../../interrupt.txt\n"),
        ("cleanup.sh", "echo cleaned > ../../cleanup.txt\n"),
    ];
    let mut builder = tar::Builder::new(Vec::new());
    for (name, body) in scripts {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        builder
            .append_data(&mut header, name, body.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn service(nodes: i32) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "gen"},
        "spec": {
            "application": "demo", "type": "generic",
            "roles": [{"name": "master", "count": 1}, {"name": "node", "count": nodes}],
            "code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "gen-code", "key": "code.tar"}}]}
        }
    })
}

fn vm_file(env: &Env, token: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(
        env.state
            .path()
            .join("vms")
            .join(token)
            .join("work")
            .join(file),
    )
    .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_runs_the_lifecycle_scripts() {
    let env = env("generic-e2e", 32).await;
    env.apply(
        EXAMPLE
            .split("---")
            .take(2)
            .collect::<Vec<_>>()
            .join("---")
            .as_str(),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("gen-code".into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            "code.tar".to_string(),
            ByteString(archive()),
        )])),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch("gen", &pp, &Patch::Apply(service(2)))
        .await
        .unwrap();
    env.wait_ready("gen", "master 1/1, node 2/2").await;

    let nodes = env.nodes("gen").await;
    let master = nodes.iter().find(|n| n.spec.role == "master").unwrap();
    let master_ip = master.status.clone().unwrap().address.unwrap();
    env.wait_service(
        "gen",
        "run.sh running and notify.sh run on every node",
        |_| {
            nodes.iter().all(|n| {
                vm_file(&env, &n.spec.token, "members.txt")
                    .is_some_and(|m| m.split_whitespace().count() == 3)
            })
        },
    )
    .await;
    for node in &nodes {
        let status = node.status.clone().unwrap();
        let ip = status.address.unwrap();
        assert_eq!(
            vm_file(&env, &node.spec.token, "init.txt").as_deref(),
            Some("initialised\n")
        );
        assert_eq!(
            vm_file(&env, &node.spec.token, "run.txt").unwrap(),
            format!("{} {ip} {master_ip}\n", node.spec.role)
        );
    }
    let fresh = env.nodes("gen").await;
    for node in &fresh {
        let scripts = node.status.clone().unwrap().agent.unwrap().scripts;
        let state = |name: &str| {
            scripts
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.state.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            state("init.sh"),
            "STOPPED (return code 0)",
            "{}",
            node.metadata.name.clone().unwrap()
        );
        assert_eq!(state("run.sh"), "RUNNING");
        assert_eq!(state("cleanup.sh"), "NEVER STARTED");
    }

    // A membership change reaches every node through notify.sh.
    env.services()
        .patch("gen", &pp, &Patch::Apply(service(3)))
        .await
        .unwrap();
    env.wait_ready("gen", "master 1/1, node 3/3").await;
    let nodes = env.nodes("gen").await;
    env.wait_service("gen", "notify.sh told every node of four members", |_| {
        nodes.iter().all(|n| {
            vm_file(&env, &n.spec.token, "members.txt")
                .is_some_and(|m| m.split_whitespace().count() == 4)
        })
    })
    .await;

    // The master is never removed: scaling nodes to zero keeps it, with the same VM.
    env.services()
        .patch("gen", &pp, &Patch::Apply(service(0)))
        .await
        .unwrap();
    env.wait_ready("gen", "master 1/1, node 0/0").await;
    let left = env.nodes("gen").await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].metadata.name, master.metadata.name,
        "the same master"
    );
    assert_eq!(env.live_vms().len(), 1);
}
