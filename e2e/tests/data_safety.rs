//! A node whose data has no other copy is never replaced by an empty one on its own: the agent
//! of a lone MariaDB node freezes (SIGSTOP, MariaDB keeps serving) for more than three heartbeat
//! timeouts; the node is kept, the Service says `DataAtRisk` naming it, every row is still
//! there once the agent thaws, and the Service is healthy again. Only `cpsctl node replace
//! NODE --accept-data-loss` lets such a node go. A stop whose save the artifact store refuses
//! keeps the node (the Service says `SaveFailed` with the store's message: an archive too
//! large, then no room left in the namespace's quota) until the store takes the save, and the
//! next start has every row. Growing a lone MariaDB node's volume
//! moves the database onto a node with the new volume (a second node joins and syncs before
//! the first leaves): every row is there afterwards. A lone MariaDB node whose VM is reset (its
//! agent and MariaDB killed at once, then booted again on its disk) comes back with its rows;
//! an agent that crashed and was started again while MariaDB ran on stops that MariaDB cleanly
//! and starts its own on the same data, every row there. A three-node Galera cluster keeps every
//! acknowledged row through a crashed agent, a frozen agent, its first node powered off, a
//! volume and an instance type change and a Stop the store refuses until it takes the save,
//! and starts again with every acknowledged row after all three lost power at once. 200 MiB
//! that compress a thousandfold come back whole, on one node and on three, through a Stop/Start
//! and through a Stop made while the save was still being loaded (the load shows its progress).

mod common;

use common::*;
use conpaas_crds::v1alpha1::{ServiceNode, find_condition};
use conpaas_e2e::tools::{cpsctl, run};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const NS: &str = "data-safety-e2e";
const NS_STOP: &str = "data-safety-stop-e2e";
const NS_MOVE: &str = "data-safety-move-e2e";
const NS_RESET: &str = "data-safety-reset-e2e";
const NS_AGENT: &str = "data-safety-agent-e2e";
const NS_GALERA: &str = "data-safety-galera-e2e";
const NS_BLACKOUT: &str = "data-safety-blackout-e2e";
const NS_LARGE: &str = "data-safety-large-e2e";
const TIMEOUT_SECONDS: i64 = 4;

/// Once the lone node of Service `db` is Ready, a table `t` with rows 1, 2, 3 on it; the node.
async fn rows_written(env: &Env) -> ServiceNode {
    env.wait_ready("db", "mysql 1/1, glb 0/0").await;
    let node = env.nodes("db").await.remove(0);
    let address = node.status.clone().and_then(|s| s.address).unwrap();
    let (user, password) = mysql_credentials(env, "db").await;
    mariadb_query(
        &address,
        &user,
        &password,
        "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO t VALUES (1), (2), (3);",
    )
    .unwrap();
    node
}

/// Once the lone node of Service `db` is Ready, the rows of `t` on it (`1,2,3`), or MariaDB's
/// refusal.
async fn rows_read(env: &Env) -> Result<String, String> {
    env.wait_ready("db", "mysql 1/1, glb 0/0").await;
    let node = env.nodes("db").await.remove(0);
    let address = node.status.and_then(|s| s.address).unwrap();
    let (user, password) = mysql_credentials(env, "db").await;
    mariadb_query(&address, &user, &password, "SELECT GROUP_CONCAT(id) FROM t")
}

/// How long the node's Healthy condition has been False, in seconds.
fn unhealthy_for(node: &ServiceNode) -> i64 {
    node.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Healthy"))
        .filter(|c| c.status == "False")
        .map(|c| Timestamp::now().as_second() - c.last_transition_time.0.as_second())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_agent_of_a_lone_database_is_kept_with_its_rows() {
    let env = env(NS, 131).await;
    env.apply_cloud_and_app().await;
    env.apply(&format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec: {{application: demo, type: mysql, replicas: 1, settings: {{database: shop}}, health: {{heartbeatTimeoutSeconds: {TIMEOUT_SECONDS}}}}}\n"
    ))
    .await;
    let node = rows_written(&env).await;

    // The agent alone stops (not its process group: MariaDB keeps running).
    let agent = env.agent_of(&node.spec.token).expect("the node's agent");
    kill(Pid::from_raw(agent), Signal::SIGSTOP).unwrap();
    let thaw = scopeguard(agent);

    env.wait_service("db", "DataAtRisk naming the node", |s| {
        let (reason, message) = degraded(s);
        reason == "DataAtRisk" && message.contains(&node.name_any())
    })
    .await;
    // Past three heartbeat timeouts of silence the node is still the same one, not deleting.
    let nodes = env.nodes_api();
    conpaas_e2e::wait::until("three heartbeat timeouts of silence", LIMIT, || {
        let nodes = nodes.clone();
        let name = node.name_any();
        async move { Ok(unhealthy_for(&nodes.get(&name).await?) > 3 * TIMEOUT_SECONDS) }
    })
    .await
    .unwrap();
    let kept = env.nodes("db").await;
    assert_eq!(kept.len(), 1, "no replacement was made");
    assert_eq!(kept[0].uid(), node.uid(), "the same node");
    assert!(kept[0].metadata.deletion_timestamp.is_none(), "not deleted");

    // The agent thaws: the Service is healthy again and every row is there.
    drop(thaw);
    env.wait_service("db", "healthy again", |s| degraded(s).0.is_empty())
        .await;
    assert_eq!(rows_read(&env).await, Ok("1,2,3".to_string()));
    assert_eq!(env.nodes("db").await[0].uid(), node.uid());

    // Frozen again, the node goes only when a user accepts the loss.
    let refused = run(
        &cpsctl(),
        &["-n", NS, "node", "replace", &node.name_any()],
        &env.cp.kubeconfig,
        None,
    )
    .unwrap();
    assert_ne!(refused.code, Some(0), "needs --accept-data-loss");
    kill(Pid::from_raw(agent), Signal::SIGSTOP).unwrap();
    let _thaw = scopeguard(agent);
    env.wait_service("db", "DataAtRisk again", |s| degraded(s).0 == "DataAtRisk")
        .await;
    run(
        &cpsctl(),
        &[
            "-n",
            NS,
            "node",
            "replace",
            &node.name_any(),
            "--accept-data-loss",
        ],
        &env.cp.kubeconfig,
        None,
    )
    .unwrap()
    .ok();
    // Still frozen (a node whose agent came back is healthy, and kept), it is replaced.
    conpaas_e2e::wait::until("the node replaced", LIMIT, || async {
        let now = env.nodes("db").await;
        Ok(now.len() == 1 && now[0].uid() != node.uid())
    })
    .await
    .unwrap();
    env.wait_ready("db", "mysql 1/1, glb 0/0").await;
}

fn database(state: &str) -> String {
    format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec: {{application: demo, type: mysql, state: {state}, replicas: 1, settings: {{database: shop}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_whose_save_is_refused_keeps_the_node_until_the_store_takes_it() {
    // The store takes no archive larger than 64 bytes: no dump fits.
    let mut env = env_with(NS_STOP, 132, &[("CONPAAS_MAX_ARCHIVE_BYTES", "64")]).await;
    env.apply_cloud_and_app().await;
    env.apply(&database("Running")).await;
    let node = rows_written(&env).await;

    env.apply(&database("Stopped")).await;
    env.wait_service("db", "SaveFailed with the store's refusal", |s| {
        let (reason, message) = degraded(s);
        reason == "SaveFailed" && message.contains("413") && message.contains(&node.name_any())
    })
    .await;
    let kept = env.nodes("db").await;
    assert_eq!(kept.len(), 1, "the node is kept");
    assert_eq!(kept[0].uid(), node.uid());
    assert!(kept[0].metadata.deletion_timestamp.is_none());
    let service = env.services().get("db").await.unwrap();
    assert!(
        service.status.and_then(|s| s.saved_data).is_none(),
        "nothing saved"
    );

    // Large archives are taken, but the namespace's quota of the store has no room for the
    // save: refused the same way, in the quota's words.
    env.controller.kill();
    env.controller
        .set_env("CONPAAS_MAX_ARCHIVE_BYTES", &(1u64 << 30).to_string());
    env.controller
        .set_env("CONPAAS_NAMESPACE_STORE_BYTES", "64");
    env.controller.restart().unwrap();
    env.wait_service("db", "SaveFailed with the quota's refusal", |s| {
        let (reason, message) = degraded(s);
        reason == "SaveFailed" && message.contains("CONPAAS_NAMESPACE_STORE_BYTES")
    })
    .await;
    assert_eq!(env.nodes("db").await.len(), 1, "the node is kept");

    // The store takes archives again: the node's next try is stored and the stop completes.
    env.controller.kill();
    env.controller
        .set_env("CONPAAS_NAMESPACE_STORE_BYTES", &(1u64 << 30).to_string());
    env.controller.restart().unwrap();
    env.wait_service("db", "stopped with its data saved", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.saved_data.is_some() && degraded(s).0.is_empty())
    })
    .await;
    conpaas_e2e::wait::until("the node gone", LIMIT, || async {
        Ok(env.nodes("db").await.is_empty())
    })
    .await
    .unwrap();
    // The save is listed where the store's collector sees it even if the status is lost.
    conpaas_e2e::wait::until("the save listed on the Service", LIMIT, || async {
        let service = env.services().get("db").await?;
        let saved = service.status.as_ref().and_then(|s| s.saved_data.clone());
        let listed = service
            .annotations()
            .get(conpaas_crds::labels::ANNOTATION_SAVED_DATA)
            .cloned()
            .unwrap_or_default();
        Ok(saved.is_some_and(|d| listed.starts_with(&format!("{}@", d.sha256))))
    })
    .await
    .unwrap();

    // Started again, every row is back.
    env.apply(&database("Running")).await;
    assert_eq!(rows_read(&env).await, Ok("1,2,3".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_database_moved_by_a_volume_then_an_instance_type_change_keeps_every_row() {
    let env = env(NS_MOVE, 133).await;
    env.apply_cloud_and_app().await;
    let service = |gib: i32, instance_type: &str| {
        format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec: {{application: demo, type: mysql, roles: [{{name: mysql, count: 1, instanceType: {instance_type}, volume: {{sizeGiB: {gib}}}}}], settings: {{database: shop}}}}\n"
        )
    };
    env.apply(&service(1, "small")).await;
    let mut before = rows_written(&env).await;

    // Growing the disk, then a larger instance: each moves the database to a new node.
    for (gib, instance_type) in [(2, "small"), (2, "large")] {
        env.apply(&service(gib, instance_type)).await;
        let moved = conpaas_e2e::wait::until(
            &format!("the database moved to a {gib} GiB {instance_type} node"),
            LIMIT,
            || async {
                let nodes = env.nodes("db").await;
                Ok(nodes.len() == 1
                    && nodes[0].uid() != before.uid()
                    && nodes[0].spec.volume.as_ref().map(|v| v.size_gib) == Some(gib)
                    && nodes[0].spec.instance_type.as_deref() == Some(instance_type))
            },
        )
        .await;
        if let Err(e) = moved {
            panic!("{e}\n{}", env.controller.log());
        }
        assert_eq!(
            rows_read(&env).await,
            Ok("1,2,3".to_string()),
            "the rows moved with the database to the {gib} GiB {instance_type} node"
        );
        before = env.nodes("db").await.remove(0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_database_reset_with_its_vm_comes_back_with_its_rows() {
    let env = env(NS_RESET, 134).await;
    env.apply_cloud_and_app().await;
    env.apply(&database("Running")).await;
    let node = rows_written(&env).await;

    // A power loss: the agent and MariaDB die at once, and the VM (a local VM's id is its
    // node's token) boots again on its disk.
    let vm = &node.spec.token;
    env.controller.local_cloud().power_cycle(vm).await.unwrap();

    // MariaDB, killed mid-flight, recovers its data at the next start.
    let address = node.status.clone().and_then(|s| s.address).unwrap();
    let (user, password) = mysql_credentials(&env, "db").await;
    conpaas_e2e::wait::until("the rows back after the reset", LIMIT, || async {
        mariadb_query(&address, &user, &password, "SELECT GROUP_CONCAT(id) FROM t")
            .map(|rows| rows == "1,2,3")
            .map_err(anyhow::Error::msg)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", vm_logs(env.state.path())));
    assert_eq!(rows_read(&env).await, Ok("1,2,3".to_string()));
    let now = env.nodes("db").await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].uid(), node.uid(), "the same node, not a replacement");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_takes_over_a_running_database_without_losing_a_row() {
    let env = env(NS_AGENT, 135).await;
    env.apply_cloud_and_app().await;
    env.apply(&database("Running")).await;
    let node = rows_written(&env).await;
    let vm = node.spec.token.as_str();
    let before = mariadbd(vm).expect("the node's MariaDB");
    let _cleanup = Killed(before);

    // The agent crashes and its VM's init starts it again; MariaDB never stopped.
    env.controller
        .local_cloud()
        .restart_agent(vm)
        .await
        .unwrap();

    let address = node.status.clone().and_then(|s| s.address).unwrap();
    let (user, password) = mysql_credentials(&env, "db").await;
    conpaas_e2e::wait::until("a new MariaDB serving every row", LIMIT, || async {
        let restarted = mariadbd(vm).is_some_and(|pid| pid != before);
        Ok(restarted
            && mariadb_query(&address, &user, &password, "SELECT GROUP_CONCAT(id) FROM t")
                .is_ok_and(|rows| rows == "1,2,3"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", vm_logs(env.state.path())));
    assert!(
        !alive(before),
        "the earlier MariaDB was stopped, not left running"
    );
    env.wait_ready("db", "mysql 1/1, glb 0/0").await;
    assert_eq!(rows_read(&env).await, Ok("1,2,3".to_string()));
    assert_eq!(env.nodes("db").await[0].uid(), node.uid(), "the same node");
}

/// A three-node Galera cluster through the faults of its nodes, one at a time, while a client
/// inserts: a crashed agent (MariaDB running on), a frozen agent past three heartbeat timeouts
/// (its node has copies elsewhere: it is replaced), the first node's VM powered off (replaced;
/// the others keep the Primary component), the data volume grown and then a larger instance
/// type (each moving the nodes one at a time), and a Stop whose save the store refuses (it
/// takes no archive over 64 bytes: every node kept) until it takes it, then a Start. Every
/// acknowledged row is on every node after the faults and again after the Start.
#[tokio::test(flavor = "multi_thread")]
async fn a_galera_cluster_keeps_every_acknowledged_row_through_its_nodes_faults() {
    let mut env = env_with(NS_GALERA, 139, &[("CONPAAS_MAX_ARCHIVE_BYTES", "64")]).await;
    env.apply_cloud_and_app().await;
    let galera = |gib: i32, instance_type: &str, state: &str| {
        format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec: {{application: demo, type: mysql, state: {state}, roles: [{{name: mysql, count: 3, instanceType: {instance_type}, volume: {{sizeGiB: {gib}}}}}], settings: {{database: shop}}, health: {{heartbeatTimeoutSeconds: {TIMEOUT_SECONDS}}}}}\n"
        )
    };
    env.apply(&galera(1, "small", "Running")).await;
    let ready = "mysql 3/3, glb 0/0";
    env.wait_ready("db", ready).await;
    let (user, password) = mysql_credentials(&env, "db").await;
    let node = |ordinal: u32| {
        let env = &env;
        async move {
            env.nodes("db")
                .await
                .into_iter()
                .find(|n| n.name_any() == format!("db-mysql-{ordinal}"))
                .unwrap_or_else(|| panic!("no node db-mysql-{ordinal}"))
        }
    };
    let address = |n: &ServiceNode| n.status.clone().and_then(|s| s.address).unwrap();
    let spared = address(&node(1).await);
    mariadb_query(
        &spared,
        &user,
        &password,
        "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
    )
    .unwrap();
    let writer = InsertWriter::start(spared.clone(), user.clone(), password.clone(), 1);
    let mut cells = Vec::new();

    // The agent of node 2 crashes and is started again while its MariaDB runs. The new agent
    // stops that MariaDB and starts its own, which syncs again (the node's status said Ready
    // all along: only the new process and its Galera state show the take-over).
    let started = std::time::Instant::now();
    let third = node(2).await;
    let before = mariadbd(&third.spec.token).expect("node 2's MariaDB");
    env.controller
        .local_cloud()
        .restart_agent(&third.spec.token)
        .await
        .unwrap();
    let third_address = address(&third);
    conpaas_e2e::wait::until("node 2's new MariaDB synced", LIMIT, || async {
        let restarted = mariadbd(&third.spec.token).is_some_and(|pid| pid != before);
        Ok(restarted
            && mariadb_query(&third_address, &user, &password, SYNCED).as_deref() == Ok("Synced"))
    })
    .await
    .unwrap();
    env.wait_ready("db", ready).await;
    assert_eq!(node(2).await.uid(), third.uid(), "the same node");
    cells.push(("agent SIGKILL, MariaDB running", started.elapsed()));

    // Node 2's agent freezes past three heartbeat timeouts: the other two hold every row, so
    // it is replaced, and its replacement syncs from them.
    let started = std::time::Instant::now();
    let agent = env.agent_of(&third.spec.token).expect("node 2's agent");
    kill(Pid::from_raw(agent), Signal::SIGSTOP).unwrap();
    let _thaw = scopeguard(agent);
    env.wait_replaced("db", &third, 3).await.unwrap();
    env.wait_ready("db", ready).await;
    cells.push(("agent SIGSTOP past 3 timeouts", started.elapsed()));

    // The first node's VM goes off.
    let started = std::time::Instant::now();
    let first = node(0).await;
    env.controller
        .local_cloud()
        .power_off(&first.spec.token)
        .await
        .unwrap();
    env.wait_replaced("db", &first, 3).await.unwrap();
    env.wait_ready("db", ready).await;
    cells.push(("first node's VM powered off", started.elapsed()));

    // The data volume grown, then a larger instance type: each moves the nodes one at a time
    // (a new node joins and syncs before an old one leaves); the client follows the nodes.
    for (gib, instance_type, cell) in [
        (2, "small", "volume 1 -> 2 GiB"),
        (2, "large", "instance type small -> large"),
    ] {
        let started = std::time::Instant::now();
        let old = uids(&env.nodes("db").await);
        env.apply(&galera(gib, instance_type, "Running")).await;
        conpaas_e2e::wait::until(
            &format!("every node on a {gib} GiB {instance_type} VM"),
            4 * LIMIT,
            || async {
                let nodes = env.nodes("db").await;
                // The client writes through the nodes there are, Synced or not (a failed insert
                // goes on through the next one).
                writer.aim(
                    nodes
                        .iter()
                        .filter_map(|n| n.status.as_ref()?.address.clone())
                        .collect(),
                );
                Ok(nodes.len() == 3
                    && nodes.iter().all(|n| {
                        !old.contains(&n.uid().unwrap_or_default())
                            && n.spec.instance_type.as_deref() == Some(instance_type)
                    }))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.controller.log()));
        env.wait_ready("db", ready).await;
        writer.aim(env.nodes("db").await.iter().map(address).collect());
        cells.push((cell, started.elapsed()));
    }

    let acknowledged = writer.finish();
    assert!(
        acknowledged.len() > 50,
        "the client wrote through the faults: {}",
        acknowledged.len()
    );
    let ids: Vec<String> = acknowledged.iter().map(u64::to_string).collect();
    let count = format!("SELECT COUNT(*) FROM t WHERE id IN ({})", ids.join(","));
    let every_row_on_every_node = async |env: &Env| {
        for n in env.nodes("db").await {
            let on = address(&n);
            conpaas_e2e::wait::until(&format!("every row on {}", n.name_any()), LIMIT, || async {
                Ok(mariadb_query(&on, &user, &password, &count) == Ok(ids.len().to_string()))
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: {:?} of {}",
                    mariadb_query(&on, &user, &password, &count),
                    ids.len()
                )
            });
        }
    };
    every_row_on_every_node(&env).await;

    // A Stop whose save the store refuses: every node stays, nothing is saved.
    let started = std::time::Instant::now();
    let before = uids(&env.nodes("db").await);
    env.apply(&galera(2, "large", "Stopped")).await;
    env.wait_service("db", "SaveFailed with the store's refusal", |s| {
        let (reason, message) = degraded(s);
        reason == "SaveFailed" && message.contains("413")
    })
    .await;
    let kept = env.nodes("db").await;
    assert_eq!(uids(&kept), before, "every node is kept");
    assert!(kept.iter().all(|n| n.metadata.deletion_timestamp.is_none()));
    let saved = env.services().get("db").await.unwrap().status;
    assert!(saved.and_then(|s| s.saved_data).is_none(), "nothing saved");
    // The store takes archives again: the next try is stored, the nodes go, and a Start
    // brings every row back.
    env.controller.kill();
    env.controller
        .set_env("CONPAAS_MAX_ARCHIVE_BYTES", &(1u64 << 30).to_string());
    env.controller.restart().unwrap();
    env.wait_service("db", "stopped with its data saved", |s| {
        s.status.as_ref().is_some_and(|st| st.saved_data.is_some()) && degraded(s).0.is_empty()
    })
    .await;
    conpaas_e2e::wait::until("no mysql node left", LIMIT, || async {
        Ok(env.nodes("db").await.is_empty())
    })
    .await
    .unwrap();
    env.apply(&galera(2, "large", "Running")).await;
    env.wait_ready("db", ready).await;
    every_row_on_every_node(&env).await;
    cells.push((
        "Stop with the store refusing, then taking the save; Start",
        started.elapsed(),
    ));

    for (cell, took) in cells {
        println!(
            "mysql, 3 nodes, {cell}: no acknowledged row lost, {:.1}s",
            took.as_secs_f64()
        );
    }
    println!("{} acknowledged rows, all on every node", ids.len());
}

/// The nodes' UIDs, sorted.
fn uids(nodes: &[ServiceNode]) -> Vec<String> {
    let mut uids: Vec<String> = nodes.iter().filter_map(|n| n.uid()).collect();
    uids.sort();
    uids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_galera_cluster_that_lost_power_all_at_once_starts_again_with_every_row() {
    let env = env(NS_BLACKOUT, 149).await;
    env.apply_cloud_and_app().await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: db}\nspec: {application: demo, type: mysql, replicas: 3, settings: {database: shop}}\n")
        .await;
    let ready = "mysql 3/3, glb 0/0";
    env.wait_ready("db", ready).await;
    let (user, password) = mysql_credentials(&env, "db").await;
    let nodes = env.nodes("db").await;
    let address = |n: &ServiceNode| n.status.clone().and_then(|s| s.address).unwrap();
    let through = address(&nodes[1]);
    mariadb_query(
        &through,
        &user,
        &password,
        "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
    )
    .unwrap();
    let writer = InsertWriter::start(through.clone(), user.clone(), password.clone(), 1);
    conpaas_e2e::wait::until("rows written", LIMIT, || async {
        Ok(
            mariadb_query(&through, &user, &password, "SELECT COUNT(*) FROM t")
                .is_ok_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 50)),
        )
    })
    .await
    .unwrap();

    // Node 0 goes off first and the other two go on writing without it, so its data is the
    // oldest: the lowest ordinal must not be the one that starts the cluster again.
    let vms: Vec<&str> = nodes.iter().map(|n| n.spec.token.as_str()).collect();
    let first = nodes
        .iter()
        .find(|n| n.name_any() == "db-mysql-0")
        .expect("node 0");
    env.controller
        .local_cloud()
        .power_off(&first.spec.token)
        .await
        .unwrap();
    let rows = || mariadb_query(&through, &user, &password, "SELECT COUNT(*) FROM t");
    let when_off: u32 = rows().unwrap().parse().unwrap();
    conpaas_e2e::wait::until("rows written without node 0", LIMIT, || async {
        Ok(rows().is_ok_and(|n| n.parse::<u32>().is_ok_and(|n| n >= when_off + 20)))
    })
    .await
    .unwrap();

    // Then every member loses power while the client writes: after the crash Galera marks none
    // of them safe to start the cluster from.
    let started = std::time::Instant::now();
    env.controller
        .local_cloud()
        .power_cycle_together(&vms)
        .await
        .unwrap();
    for n in &nodes {
        let on = address(n);
        conpaas_e2e::wait::until(&format!("{} synced again", n.name_any()), LIMIT, || async {
            Ok(mariadb_query(&on, &user, &password, SYNCED).as_deref() == Ok("Synced"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", vm_logs(env.state.path())));
    }
    env.wait_ready("db", ready).await;
    let took = started.elapsed();
    let acknowledged = writer.finish();

    let now = env.nodes("db").await;
    assert_eq!(
        uids(&now),
        uids(&nodes),
        "the same three nodes, none replaced"
    );
    let ids: Vec<String> = acknowledged.iter().map(u64::to_string).collect();
    let count = format!("SELECT COUNT(*) FROM t WHERE id IN ({})", ids.join(","));
    for n in &now {
        let on = address(n);
        conpaas_e2e::wait::until(&format!("every row on {}", n.name_any()), LIMIT, || async {
            Ok(mariadb_query(&on, &user, &password, &count) == Ok(ids.len().to_string()))
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {:?} of {}",
                mariadb_query(&on, &user, &password, &count),
                ids.len()
            )
        });
    }
    println!(
        "mysql, 3 nodes, all powered off and on at once: {} acknowledged rows, all on every node; \
         the cluster served again after {:.1}s",
        ids.len(),
        took.as_secs_f64()
    );
}

/// A lone database holding 200 MiB that compresses about a thousandfold, and rows a client
/// writes through the stop, is stopped; started again, it is stopped while it still loads the
/// save (the stop waits for the load: a save of part of it would replace the whole), then
/// started as three nodes. The same again as three nodes: stopped while a client writes,
/// started, stopped while its first node loads the save, started. After each Start every byte
/// and every acknowledged row is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_compressible_database_survives_stops_and_stops_during_its_restore() {
    let env = env(NS_LARGE, 151).await;
    env.apply_cloud_and_app().await;
    let service = |state: &str, replicas: u32| {
        format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec: {{application: demo, type: mysql, state: {state}, replicas: {replicas}, settings: {{database: shop}}}}\n"
        )
    };
    let ready = |replicas: u32| format!("mysql {replicas}/{replicas}, glb 0/0");
    env.apply(&service("Running", 1)).await;
    env.wait_ready("db", &ready(1)).await;
    let (user, password) = mysql_credentials(&env, "db").await;
    let first = async || {
        let nodes = env.nodes("db").await;
        let first = nodes
            .iter()
            .min_by_key(|n| n.name_any())
            .expect("a mysql node");
        first.status.clone().and_then(|s| s.address).unwrap()
    };
    let through = first().await;
    mariadb_query(
        &through,
        &user,
        &password,
        "CREATE TABLE big (id INT PRIMARY KEY, body LONGBLOB) ENGINE=InnoDB; \
         CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
    )
    .unwrap();
    for chunk in 0..20 {
        let insert = format!(
            "INSERT INTO big SELECT seq, REPEAT('x', 1048576) FROM seq_{}_to_{}",
            chunk * 10 + 1,
            chunk * 10 + 10
        );
        mariadb_query(&through, &user, &password, &insert).unwrap();
    }
    const FINGERPRINT: &str = "SELECT CONCAT(COUNT(*), ' rows, ', SUM(LENGTH(body)), ' bytes, ', \
         MD5(GROUP_CONCAT(MD5(body) ORDER BY id))) FROM big";
    let fingerprint = mariadb_query(&through, &user, &password, FINGERPRINT).unwrap();
    assert!(
        fingerprint.starts_with("200 rows, 209715200 bytes"),
        "{fingerprint}"
    );

    let stop = async |replicas: u32, what: &str| {
        let started = std::time::Instant::now();
        env.apply(&service("Stopped", replicas)).await;
        env.wait_service("db", what, |s| {
            s.status.as_ref().is_some_and(|s| s.saved_data.is_some())
        })
        .await;
        // The nodes go once this stop's save is stored (a stop during a restore waits for the
        // restore first).
        let gone = conpaas_e2e::wait::until("no mysql node left", 3 * LIMIT, || async {
            Ok(env.nodes("db").await.is_empty())
        })
        .await;
        if let Err(e) = gone {
            let status = env.services().get("db").await.ok().and_then(|s| s.status);
            panic!(
                "{what}: {e}\n{status:?}\n{}",
                env.agent_logs("db", 30).await
            );
        }
        println!("{what}: {:.1}s", started.elapsed().as_secs_f64());
    };
    // A Stop while a client writes; a Start, and a Stop again while the save still goes in;
    // a Start with `replicas` nodes: every byte and acknowledged row there.
    let cell = async |replicas: u32, first_id: u64| {
        let through = first().await;
        let writer = InsertWriter::start(through.clone(), user.clone(), password.clone(), first_id);
        conpaas_e2e::wait::until("rows written", LIMIT, || async {
            let count = format!("SELECT COUNT(*) FROM t WHERE id >= {first_id}");
            Ok(mariadb_query(&through, &user, &password, &count)
                .is_ok_and(|n| n.parse::<u64>().is_ok_and(|n| n >= 20)))
        })
        .await
        .unwrap();
        stop(replicas, "db stopped with its data saved").await;
        let acknowledged = writer.finish();
        env.apply(&service("Running", replicas)).await;
        // The load itself (its progress shown), not the download or the wait for the members.
        env.wait_agent_saying("a node loading the save", |m| {
            m.starts_with("loading the data saved at the last stop (") && m.ends_with(" MiB in)")
        })
        .await;
        stop(replicas, "db stopped during its restore").await;
        acknowledged
    };
    let everything_back = async |replicas: u32, acknowledged: &[u64], cell: &str| {
        env.apply(&service("Running", replicas)).await;
        env.wait_ready("db", &ready(replicas)).await;
        let through = first().await;
        assert_eq!(
            mariadb_query(&through, &user, &password, FINGERPRINT).as_deref(),
            Ok(fingerprint.as_str()),
            "after {cell}: every byte of the large table"
        );
        let ids: Vec<String> = acknowledged.iter().map(u64::to_string).collect();
        let count = format!("SELECT COUNT(*) FROM t WHERE id IN ({})", ids.join(","));
        assert_eq!(
            mariadb_query(&through, &user, &password, &count),
            Ok(ids.len().to_string()),
            "after {cell}: every acknowledged row"
        );
    };

    let started = std::time::Instant::now();
    let mut acknowledged = cell(1, 1).await;
    everything_back(
        3,
        &acknowledged,
        "a lone node's Stop, Start and Stop during the restore",
    )
    .await;
    let lone = started.elapsed();

    let started = std::time::Instant::now();
    acknowledged.extend(cell(3, 1_000_000).await);
    everything_back(
        3,
        &acknowledged,
        "three nodes' Stop, Start and Stop during the restore",
    )
    .await;
    let three = started.elapsed();
    for (nodes, took) in [(1, lone), (3, three)] {
        println!(
            "mysql, {nodes} node(s), 200 MiB compressible: a Stop under writes, a Start, a Stop \
             during the restore and a Start in {:.1}s, every byte and acknowledged row back",
            took.as_secs_f64()
        );
    }
    println!("{} acknowledged rows", acknowledged.len());
}

/// Galera's state of the node asked.
const SYNCED: &str = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
     WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE_COMMENT'";

/// Inserts rows into `t` one by one through a MariaDB node, and keeps the acknowledged ids;
/// after a failed insert it goes on through the next node it was given.
struct InsertWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl InsertWriter {
    /// Inserts ids from `first_id` on through `address`.
    fn start(address: String, user: String, password: String, first_id: u64) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let targets = std::sync::Arc::new(std::sync::Mutex::new(vec![address]));
        let thread = std::thread::spawn({
            let (stop, targets) = (stop.clone(), targets.clone());
            move || {
                let mut acknowledged = Vec::new();
                let (mut id, mut turn) = (first_id, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let address = {
                        let targets = targets.lock().unwrap();
                        targets[turn % targets.len()].clone()
                    };
                    let insert = format!("INSERT INTO t VALUES ({id})");
                    if mariadb_query(&address, &user, &password, &insert).is_ok() {
                        acknowledged.push(id);
                    } else {
                        turn += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    // An insert whose answer was lost may have committed: never reused.
                    id += 1;
                }
                acknowledged
            }
        });
        Self {
            stop,
            targets,
            thread,
        }
    }

    /// Goes on through these nodes (the Service's nodes after a move).
    fn aim(&self, addresses: Vec<String>) {
        if !addresses.is_empty() {
            *self.targets.lock().unwrap() = addresses;
        }
    }

    /// Stops inserting; the ids of the rows acknowledged.
    fn finish(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The mariadbd of local VM `vm`: its command line names the VM's configuration.
fn mariadbd(vm: &str) -> Option<i32> {
    conpaas_cloud::local::find_by_cmdline(&format!("{vm}/work/mysql/my.cnf"))
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .next()
                    .is_some_and(|p| p.ends_with(b"mariadbd"))
            })
        })
}

/// Kills `pid` when dropped: a daemon a test orphaned does not outlive it.
struct Killed(i32);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Sends SIGCONT to `pid` when dropped, so that a failing test leaves no stopped process.
fn scopeguard(pid: i32) -> impl Drop {
    struct Thaw(i32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
        }
    }
    Thaw(pid)
}
