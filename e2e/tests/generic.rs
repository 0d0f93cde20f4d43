//! Story 5: a generic service runs the user's lifecycle scripts with MY_IP, MY_ROLE, MASTER_IP
//! and the member list, calls notify.sh on membership changes, and reports each script's state.

mod common;

use common::*;
use kube::api::{Patch, PatchParams};
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
    tar_of(&scripts, 0o755)
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

/// The ConfigMap `gen-code` holding the scripts' archive.
async fn create_code(env: &Env) {
    create_config_map(env, "gen-code", "code.tar", archive()).await;
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
    env.apply_cloud_and_app().await;
    create_code(&env).await;
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

/// Serves `body` at any path on 127.0.0.1 and returns the URL.
async fn serve(body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/code.tar", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    url
}

fn url_service(url: &str, sha256: &str) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "fetched"},
        "spec": {
            "application": "demo", "type": "generic",
            "roles": [{"name": "master", "count": 1}],
            "code": {"active": "v1", "versions": [{"name": "v1", "url": url, "sha256": sha256}]}
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_code_from_a_url_is_checked_against_its_sha256() {
    use sha2::{Digest, Sha256};
    let env = env("generic-url-e2e", 37).await;
    env.apply_cloud_and_app().await;
    let body = archive();
    let url = serve(body.clone()).await;
    let pp = PatchParams::apply("conpaas-e2e").force();

    // A wrong digest: the agent refuses the archive and says why; nothing runs.
    let wrong = "0".repeat(64);
    env.services()
        .patch("fetched", &pp, &Patch::Apply(url_service(&url, &wrong)))
        .await
        .unwrap();
    env.wait_service("fetched", "Degraded naming the refusing node", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && c.reason == "AgentFailed"
                    && c.message.starts_with("node fetched-master-0: ")
                    && c.message.contains("sha256")
            })
        })
    })
    .await;
    let api = env.nodes_api();
    conpaas_e2e::wait::until("the node to report the digest mismatch", LIMIT, || {
        let api = api.clone();
        async move {
            let node = api.get("fetched-master-0").await?;
            let agent = node.status.and_then(|s| s.agent).unwrap_or_default();
            Ok(
                agent.state == Some(conpaas_crds::v1alpha1::AgentState::Failed)
                    && agent.message.unwrap_or_default().contains("sha256"),
            )
        }
    })
    .await
    .unwrap();
    let token = env.nodes("fetched").await[0].spec.token.clone();
    assert!(
        vm_file(&env, &token, "init.txt").is_none(),
        "no script of an unverified archive ran"
    );

    // The right digest: the same node installs it and runs init.sh.
    let right = hex::encode(Sha256::digest(&body));
    env.services()
        .patch("fetched", &pp, &Patch::Apply(url_service(&url, &right)))
        .await
        .unwrap();
    env.wait_ready("fetched", "master 1/1, node 0/0").await;
    env.wait_service("fetched", "init.sh to have run", |_| {
        vm_file(&env, &token, "init.txt").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_master_is_replaced_in_place_and_the_nodes_learn_its_address() {
    let env = env("generic-master-e2e", 49).await;
    env.apply_cloud_and_app().await;
    create_code(&env).await;
    let mut spec = service(1);
    spec["spec"]["health"] = json!({"heartbeatTimeoutSeconds": 3});
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch("gen", &pp, &Patch::Apply(&spec))
        .await
        .unwrap();
    env.wait_ready("gen", "master 1/1, node 1/1").await;

    let nodes = env.nodes("gen").await;
    let master = nodes
        .iter()
        .find(|n| n.spec.role == "master")
        .unwrap()
        .clone();
    let worker = nodes
        .iter()
        .find(|n| n.spec.role == "node")
        .unwrap()
        .clone();
    let pid = env.live_vms().into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&master.spec.token))
    });
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid.expect("the master's VM")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // A new master (same role, new node) takes over, and notify.sh tells the worker its address.
    conpaas_e2e::wait::until("a new master", LIMIT, || async {
        let now = env.nodes("gen").await;
        Ok(now
            .iter()
            .any(|n| n.spec.role == "master" && n.metadata.name != master.metadata.name))
    })
    .await
    .unwrap();
    env.wait_ready("gen", "master 1/1, node 1/1").await;
    let new_master = env
        .nodes("gen")
        .await
        .into_iter()
        .find(|n| n.spec.role == "master")
        .unwrap();
    let new_ip = new_master.status.unwrap().address.unwrap();
    env.wait_service("gen", "the worker told the new master's address", |_| {
        vm_file(&env, &worker.spec.token, "members.txt")
            .is_some_and(|m| m.split_whitespace().any(|a| a == new_ip))
    })
    .await;
    assert_eq!(
        env.nodes("gen")
            .await
            .iter()
            .filter(|n| n.spec.role == "master")
            .count(),
        1,
        "exactly one master"
    );
}
