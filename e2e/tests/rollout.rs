//! A new code version reaches a Service's nodes a few at a time (`spec.code.rollout`): no more
//! than `maxUnavailable` nodes of a role are switching at once, a version whose `init.sh` fails
//! on a node goes to no other node, and with `onFailure: Rollback` the Service activates the
//! version that ran before, by itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use conpaas_crds::v1alpha1::ServiceNode;
use conpaas_e2e::tools::{cpsctl, run};

const NS: &str = "rollout-e2e";

/// Generic scripts of `version`: init.sh takes a second and exits with `init_exit`.
fn site(dir: &Path, version: &str, init_exit: i32) -> String {
    let dir = dir.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("init.sh"), format!("sleep 1\nexit {init_exit}\n")).unwrap();
    std::fs::write(dir.join("run.sh"), "exec sleep 600\n").unwrap();
    dir.to_string_lossy().into_owned()
}

fn upload(env: &Env, dir: &str, version: &str) {
    let args = [
        "-n",
        NS,
        "code",
        "upload",
        "gen",
        dir,
        "--version",
        version,
        "--activate",
    ];
    run(&cpsctl(), &args, &env.cp.kubeconfig, None)
        .expect("cpsctl")
        .ok();
}

/// Nodes of role `node` given `version` whose agent does not run it yet or that are not Ready.
fn switching(nodes: &[ServiceNode], version: &str) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| n.spec.role == "node")
        .filter(|n| n.spec.code.as_ref().is_some_and(|c| c.version == version))
        .filter(|n| !runs(n, version))
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

/// Watches the nodes until `done` holds (for them and the nodes seen given `version` so far);
/// the most nodes of role `node` seen switching to `version` at once, and every node seen given
/// it. Every change of every node comes through the watch, one at a time, so no state the nodes
/// passed through together is missed (as sampling could miss a short double switch).
async fn watch_rollout(
    env: &Env,
    version: &str,
    done: impl Fn(&[ServiceNode], &BTreeSet<String>) -> bool,
) -> (usize, BTreeSet<String>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().labels("conpaas.io/service=gen");
    // A watch error is retried (the watcher lists again), not the end of the record.
    let mut events = watcher(env.nodes_api(), config).default_backoff().boxed();
    let mut by_name: BTreeMap<String, ServiceNode> = BTreeMap::new();
    let mut listed = false;
    let mut most = 0;
    let mut given = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next()).await;
        let nodes: Vec<ServiceNode> = by_name.values().cloned().collect();
        let Ok(Some(event)) = event else {
            panic!(
                "rollout of {version} did not finish: {:?}\n{}",
                nodes
                    .iter()
                    .map(|n| (
                        &n.metadata.name,
                        n.status.as_ref().and_then(|s| s.agent.clone())
                    ))
                    .collect::<Vec<_>>(),
                env.controller.log()
            );
        };
        let Ok(event) = event else { continue };
        match event {
            watcher::Event::Init => by_name.clear(),
            watcher::Event::InitApply(n) | watcher::Event::Apply(n) => {
                by_name.insert(n.metadata.name.clone().unwrap_or_default(), n);
            }
            watcher::Event::Delete(n) => {
                by_name.remove(&n.metadata.name.clone().unwrap_or_default());
            }
            watcher::Event::InitDone => listed = true,
        }
        if !listed {
            continue;
        }
        let nodes: Vec<ServiceNode> = by_name.values().cloned().collect();
        most = most.max(switching(&nodes, version).len());
        given.extend(
            nodes
                .iter()
                .filter(|n| n.spec.code.as_ref().is_some_and(|c| c.version == version))
                .filter_map(|n| n.metadata.name.clone()),
        );
        if done(&nodes, &given) {
            return (most, given);
        }
    }
}

/// The node's agent reports running `version` and the node is Ready.
fn runs(node: &ServiceNode, version: &str) -> bool {
    let status = node.status.clone().unwrap_or_default();
    status.agent.and_then(|a| a.code_version).as_deref() == Some(version)
        && conpaas_crds::v1alpha1::is_condition_true(&status.conditions, "Ready")
}

fn all_run(nodes: &[ServiceNode], version: &str) -> bool {
    nodes.len() == 4 && nodes.iter().all(|n| runs(n, version))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_rolls_out_one_node_at_a_time_and_a_failing_one_is_rolled_back() {
    let env = env(NS, 58).await;
    env.apply_cloud_and_app().await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: gen}\nspec: {application: demo, type: generic, roles: [{name: master, count: 1}, {name: node, count: 3}], code: {rollout: {maxUnavailable: 1, onFailure: Rollback}}}\n").await;
    env.wait_code_api().await;
    let work = tempfile::tempdir().unwrap();

    // The first version goes to every node at once: none serves anything yet.
    upload(&env, &site(work.path(), "v1", 0), "v1");
    watch_rollout(&env, "v1", |nodes, _| all_run(nodes, "v1")).await;

    // The second goes to one node of each role at a time.
    upload(&env, &site(work.path(), "v2", 0), "v2");
    let (most, _) = watch_rollout(&env, "v2", |nodes, _| all_run(nodes, "v2")).await;
    assert_eq!(most, 1, "nodes of role node switching at once");
    env.wait_service("gen", "Progressing back to Idle", |s| {
        let status = s.status.clone().unwrap_or_default();
        conpaas_crds::v1alpha1::find_condition(&status.conditions, "Progressing")
            .is_some_and(|c| c.reason != "RollingOut")
            && status.roles.iter().all(|r| r.updated == r.desired)
    })
    .await;

    // The third fails its init.sh: it reaches one node of a role, the Service says where and
    // why, and goes back to v2 by itself.
    upload(&env, &site(work.path(), "v3", 3), "v3");
    // Watched until v3 reached a node and every node was given v2 back and runs it.
    let (_, given) = watch_rollout(&env, "v3", |nodes, given| {
        let given_v2 = nodes
            .iter()
            .all(|n| n.spec.code.as_ref().is_some_and(|c| c.version == "v2"));
        !given.is_empty() && given_v2 && all_run(nodes, "v2")
    })
    .await;
    let of_role_node: Vec<&String> = given
        .iter()
        .filter(|n| n.starts_with("gen-node-"))
        .collect();
    assert_eq!(
        of_role_node.len(),
        1,
        "v3 reached {of_role_node:?} of role node"
    );
    env.wait_event_where(NS, "RolloutFailed", |e| {
        e.note.as_deref().is_some_and(|n| {
            n.contains("code version v3 failed on node gen-")
                && n.contains("init.sh of code version v3 exited with 3")
        })
    })
    .await;
    env.wait_event(NS, "RolledBack", Some("gen")).await;
    let service = env.services().get("gen").await.unwrap();
    assert_eq!(
        service.spec.code.as_ref().unwrap().active.as_deref(),
        Some("v2")
    );
    assert_eq!(
        service.metadata.annotations.unwrap_or_default()["conpaas.io/rolled-back-from"],
        "v3"
    );
}
