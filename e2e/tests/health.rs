//! Node health and bounded remediation: a node whose agent dies is replaced; when most agents
//! go silent at once (an outage), nothing is replaced and the Service says why, and it resumes
//! when health returns, giving a node that comes back last a whole timeout to report.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use common::*;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const MANIFEST: &str = "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\nspec:\n  application: demo\n  type: helloworld\n  roles: [{name: node, count: 3}]\n  health: {heartbeatTimeoutSeconds: 3, maxUnhealthyPercent: 40}\n";

fn names(nodes: &[conpaas_crds::v1alpha1::ServiceNode]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

fn degraded_reason(s: &conpaas_crds::v1alpha1::Service) -> Option<String> {
    let status = s.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map(|c| c.reason.clone())
}

/// When the last of the nodes' `Healthy` conditions turned False.
fn latest_unhealthy_since(nodes: &[conpaas_crds::v1alpha1::ServiceNode]) -> Option<Timestamp> {
    nodes
        .iter()
        .filter_map(|n| {
            let c = n
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Healthy" && c.status == "False")?;
            Some(c.last_transition_time.0)
        })
        .max()
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_agents_are_replaced_and_an_outage_holds_remediation() {
    let env = env("health-e2e", 39).await;
    env.apply_cloud_and_app().await;
    env.apply(MANIFEST).await;
    env.wait_ready("hello", "node 3/3").await;

    // One agent dies: its node is replaced.
    let before = names(&env.nodes("hello").await);
    let victim = env.live_vms()[0];
    let killed_at = Instant::now();
    killpg(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    conpaas_e2e::wait::until("the dead node replaced", LIMIT, || async {
        let now = names(&env.nodes("hello").await);
        Ok(now.len() == 3 && now.difference(&before).count() == 1)
    })
    .await
    .unwrap();
    env.wait_ready("hello", "node 3/3").await;
    println!(
        "time to replace a killed node: {:.1}s",
        killed_at.elapsed().as_secs_f64()
    );

    // Every agent freezes (the VMs run, nothing reports): remediation is held.
    let frozen = names(&env.nodes("hello").await);
    let pids = env.live_vms();
    for pid in &pids {
        killpg(Pid::from_raw(*pid), Signal::SIGSTOP).unwrap();
    }
    env.wait_service("hello", "remediation held with every node unhealthy", |s| {
        let held = degraded_reason(s).as_deref() == Some("RemediationHeld");
        let status = s.status.as_ref();
        let all = status.is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.message.starts_with("3 of 3 nodes are unhealthy"))
        });
        held && all
    })
    .await;
    // Held is decided as soon as the nodes turn unhealthy; a replacement could only come once
    // they stayed so for the whole heartbeat timeout (the confirmation window). Stay frozen past
    // that, and past the Service's look at the end of the window, then check.
    let turned = latest_unhealthy_since(&env.nodes("hello").await).expect("unhealthy nodes");
    let window = Duration::from_secs(3 + 3);
    let elapsed =
        Duration::from_secs(Timestamp::now().duration_since(turned).as_secs().max(0) as u64);
    tokio::time::sleep(window.saturating_sub(elapsed)).await;
    assert_eq!(
        names(&env.nodes("hello").await),
        frozen,
        "no node was replaced during the outage"
    );
    let held = env.services().get("hello").await.unwrap();
    assert_eq!(degraded_reason(&held).as_deref(), Some("RemediationHeld"));

    // Health returns, one node late: the outage ends when the first two report, and the last,
    // unhealthy for longer than its timeout by then, still gets a whole timeout from that moment
    // to report. The same nodes are Ready again, none replaced.
    let (late, early) = pids.split_last().expect("running VMs");
    for pid in early {
        killpg(Pid::from_raw(*pid), Signal::SIGCONT).unwrap();
    }
    env.wait_service("hello", "the outage over", |s| {
        degraded_reason(s).as_deref() != Some("RemediationHeld")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    killpg(Pid::from_raw(*late), Signal::SIGCONT).unwrap();
    env.wait_ready("hello", "node 3/3").await;
    assert_eq!(
        names(&env.nodes("hello").await),
        frozen,
        "the same nodes serve again"
    );
}

/// A VM the cloud says is gone is replaced once that is confirmed (10 s), not after the
/// heartbeat timeout (the default 120 s here): its node will not come back by waiting.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_deleted_out_of_band_is_replaced() {
    use conpaas_cloud::ComputeDriver;
    use conpaas_cloud::local::{LocalCloud, LocalConfig};
    let env = env("out-of-band-e2e", 48).await;
    env.apply_cloud_and_app().await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\nspec: {application: demo, type: helloworld, replicas: 3}\n")
        .await;
    env.wait_ready("hello", "node 3/3").await;

    // Someone terminates a VM with the cloud's own tools.
    let before = names(&env.nodes("hello").await);
    let victim = env.nodes("hello").await[0].spec.token.clone();
    let cloud = LocalCloud::new(LocalConfig {
        state_dir: env.state.path().to_path_buf(),
        agent_binary: "/bin/false".into(),
        subnet: 48,
        stop_grace: std::time::Duration::from_secs(5),
    });
    cloud.delete(&victim).await.unwrap();
    let deleted_at = Instant::now();

    // Within LIMIT (120 s), less than the heartbeat timeout and its confirmation (240 s).
    conpaas_e2e::wait::until("the lost node replaced", LIMIT, || async {
        let now = names(&env.nodes("hello").await);
        Ok(now.len() == 3 && now.difference(&before).count() == 1)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller.log()));
    println!(
        "time to replace a VM deleted out of band: {:.1}s",
        deleted_at.elapsed().as_secs_f64()
    );
    env.wait_ready("hello", "node 3/3").await;
    assert_eq!(env.live_vms().len(), 3, "one VM per node again");
}

/// (node, Ready reason), in the order a watch saw them.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Every (node, Ready reason) the nodes of the namespace pass through, as a watch sees them:
/// no state is missed between two looks.
fn record_ready_reasons(env: &Env) -> (Seen, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (nodes, sink) = (env.nodes_api(), seen.clone());
    let task = tokio::spawn(async move {
        // A watch error (the API server still starting) is retried, not the end of the record.
        let mut events = watcher(nodes, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(node) = events.next().await {
            let Ok(node) = node else { continue };
            let reason = node
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == "Ready")
                .map(|c| c.reason.clone())
                .unwrap_or_default();
            sink.lock()
                .unwrap()
                .push((node.metadata.name.unwrap_or_default(), reason));
        }
    });
    (seen, task)
}

/// The agent never waits on its role: a startup script that runs several heartbeat timeouts
/// long keeps the node reporting that it starts, with the script's output kept, and the node is
/// never stale nor replaced.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_startup_script_is_reported_and_its_output_kept() {
    let env = env("long-startup-e2e", 40).await;
    env.apply_cloud_and_app().await;
    let (seen, recorder) = record_ready_reasons(&env);
    let started = Instant::now();
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: slow}\nspec:\n  application: demo\n  type: helloworld\n  roles: [{name: node, count: 1}]\n  health: {heartbeatTimeoutSeconds: 3}\n  startupScript: \"echo installing; sleep 15; echo installed\"\n")
        .await;
    env.wait_ready("slow", "node 1/1").await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    let (names, reasons) = names_and_reasons(&seen);
    println!(
        "a node with a 15 s startup script (heartbeat timeout 3 s) Ready after {:.1}s; Ready reasons seen: {reasons:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "Ready only after the startup script"
    );
    assert_eq!(names.len(), 1, "one node, never replaced: {seen:?}");
    assert!(!reasons.contains("HeartbeatStale"), "{seen:?}");
    assert!(
        reasons.contains("AgentStarting"),
        "the node said it was starting meanwhile: {seen:?}"
    );
    let node = env.nodes("slow").await.remove(0);
    let log = env
        .state
        .path()
        .join("vms")
        .join(&node.spec.token)
        .join("work/logs/startup.log");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "installing\ninstalled\n",
        "the startup script's output is kept"
    );
}

/// The nodes seen, and the Ready reasons they had.
fn names_and_reasons(seen: &[(String, String)]) -> (BTreeSet<&str>, BTreeSet<&str>) {
    (
        seen.iter().map(|(n, _)| n.as_str()).collect(),
        seen.iter().map(|(_, r)| r.as_str()).collect(),
    )
}

/// Serves `body` to every GET at `127.0.0.1:<port>/`, slowly: a part every 500 ms over `parts`
/// parts. The port, and the task.
async fn serve_slowly(body: Vec<u8>, parts: usize) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/x-tar\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for part in body.chunks(body.len().div_ceil(parts)) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if socket.write_all(part).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// The agent never waits on its role: on a Ready node, a code version whose archive takes 12 s
/// to arrive (four heartbeat timeouts) installs while the heartbeat goes on. Every state the
/// node passes through is seen by a watch: never `HeartbeatStale`, never replaced, and the
/// version runs in the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_code_download_keeps_the_heartbeat_going() {
    let env = env("slow-code-e2e", 43).await;
    env.apply_cloud_and_app().await;
    let archive = tar_of(
        &[
            ("init.sh", "echo v1 > ../../installed.txt\n"),
            ("run.sh", "exec sleep 600\n"),
        ],
        0o755,
    );
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive));
    let (port, server) = serve_slowly(archive, 24).await;
    let service = |code: &str| {
        format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: slow}}\nspec:\n  application: demo\n  type: generic\n  health: {{heartbeatTimeoutSeconds: 3}}\n{code}"
        )
    };
    // Ready first, with no code: its heartbeat is established.
    env.apply(&service("")).await;
    env.wait_ready("slow", "master 1/1, node 0/0").await;
    let node = env.nodes("slow").await.remove(0);

    let (seen, recorder) = record_ready_reasons(&env);
    let activated = Instant::now();
    env.apply(&service(&format!(
        "  code: {{active: v1, versions: [{{name: v1, url: \"http://127.0.0.1:{port}/v1.tar\", sha256: {sha256}}}]}}\n"
    )))
    .await;
    let installed = env
        .state
        .path()
        .join("vms")
        .join(&node.spec.token)
        .join("work/installed.txt");
    conpaas_e2e::wait::until("the slow version installed and run", LIMIT, || async {
        Ok(std::fs::read_to_string(&installed).is_ok_and(|t| t.trim() == "v1"))
    })
    .await
    .unwrap();
    env.wait_ready("slow", "master 1/1, node 0/0").await;
    recorder.abort();
    server.abort();
    let seen = seen.lock().unwrap().clone();
    let (names, reasons) = names_and_reasons(&seen);
    println!(
        "a 12 s download on a node with a 3 s heartbeat timeout: the version ran after {:.1}s; Ready reasons seen: {reasons:?}",
        activated.elapsed().as_secs_f64()
    );
    assert!(
        activated.elapsed() >= Duration::from_secs(12),
        "the download took its 12 s"
    );
    assert_eq!(
        names,
        BTreeSet::from([node.metadata.name.as_deref().unwrap()]),
        "the same node, never replaced: {seen:?}"
    );
    assert!(!reasons.contains("HeartbeatStale"), "{seen:?}");
}
