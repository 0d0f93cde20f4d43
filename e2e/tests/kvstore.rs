//! The kvstore service (ConPaaS' Scalaris) on real redis-server processes in cluster mode: 10,000
//! keys written through a cluster-aware client (the `redis` crate's, not the agent's code), the
//! nodes scale 3 -> 5 -> 3 while the client keeps writing, and every key and acknowledged write
//! is read back; a php Service linked to it keeps its sessions in it; Stop keeps every key and
//! Start brings them back. The fault matrix of issue 25, with and without replicas: agents
//! crashed while redis runs, an agent frozen, a VM powered off (kept when its slots have no
//! other copy; failed over to its replica otherwise), the data volume and the instance type
//! changed under writes, a Stop whose save the store refuses, a 200 MiB save and a Stop during
//! the restore: no key nor acknowledged write is lost in any.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use conpaas_e2e::wait;
use kube::api::{Api, Patch, PatchParams};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use serde_json::json;

const KEYS: usize = 10_000;
const COUNTER: &str = "<?php session_start(); $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1; echo $_SESSION['n'], ' ', session_id(), ' ', getenv('KV_HOSTS') === false ? 'no-hosts' : 'hosts';\n";

fn kvstore(nodes: i32, state: &str) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "kv"},
        "spec": {
            "application": "demo", "type": "kvstore", "state": state,
            "replicas": nodes,
            // Each node keeps its AOF on a data volume of its own.
            "roles": [{"name": "node", "volume": {"sizeGiB": 1}}]
        }
    })
}

/// Three masters with a replica each, applied and Ready; the Service as applied.
async fn replicated(env: &Env) -> serde_json::Value {
    let mut service = kvstore(6, "Running");
    service["spec"]["settings"] = json!({"replicas": "1"});
    apply(env, service.clone()).await.unwrap();
    env.wait_ready("kv", "node 6/6").await;
    service
}

fn site() -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "site"},
        "spec": {
            "application": "demo", "type": "php",
            "roles": [{"name": "proxy", "count": 1}, {"name": "web", "count": 0}, {"name": "backend", "count": 1}],
            "links": [{"service": "kv", "as": "KV"}],
            "code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "site-code", "key": "code.tar"}}]}
        }
    })
}

async fn apply(env: &Env, service: serde_json::Value) -> Result<(), kube::Error> {
    let name = service["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch(&name, &pp, &Patch::Apply(service))
        .await
        .map(|_| ())
}

async fn password(env: &Env) -> String {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), &env.ns);
    let name = conpaas_crds::types::kvstore::secret_name("kv");
    let data = secrets.get(&name).await.unwrap().data.unwrap();
    String::from_utf8(data["password"].0.clone()).unwrap()
}

async fn endpoint(env: &Env) -> String {
    env.services()
        .get("kv")
        .await
        .unwrap()
        .status
        .and_then(|s| s.endpoint)
        .expect("the kvstore has an endpoint")
}

/// A cluster client starting from the seeds of `status.endpoint`.
fn cluster_client(seeds: &str, password: &str) -> redis::cluster::ClusterClient {
    let infos: Vec<redis::ConnectionInfo> = seeds
        .split(',')
        .map(|seed| {
            let (host, port) = seed.rsplit_once(':').unwrap();
            ConnectionAddr::Tcp(host.into(), port.parse().unwrap())
                .into_connection_info()
                .unwrap()
                .set_redis_settings(RedisConnectionInfo::default().set_password(password))
        })
        .collect();
    redis::cluster::ClusterClient::builder(infos)
        .password(password)
        .retries(10)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Writes `key:<i>` = `value-<i>` for the [`KEYS`] keys, one by one.
fn write_keys(connection: &mut redis::cluster::ClusterConnection) {
    for i in 0..KEYS {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value-{i}"))
            .query::<()>(connection)
            .unwrap();
    }
}

/// Keys on the node at `address`, asked directly.
fn keys_on(address: &str, password: &str) -> u64 {
    let info = ConnectionAddr::Tcp(address.into(), 6379)
        .into_connection_info()
        .unwrap()
        .set_redis_settings(RedisConnectionInfo::default().set_password(password));
    let mut connection = redis::Client::open(info)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    redis::cmd("DBSIZE").query(&mut connection).unwrap()
}

/// Whether the node at `address` is a master, and its keys.
fn role_and_keys(address: &str, password: &str) -> redis::RedisResult<(bool, u64)> {
    let info = ConnectionAddr::Tcp(address.into(), 6379)
        .into_connection_info()?
        .set_redis_settings(RedisConnectionInfo::default().set_password(password));
    let mut connection =
        redis::Client::open(info)?.get_connection_with_timeout(Duration::from_secs(2))?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection)?;
    let master = matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
    let keys = redis::cmd("DBSIZE").query(&mut connection)?;
    Ok((master, keys))
}

/// A connection to the cluster, tried again for a while (a busy machine may reset the first).
fn connected(client: &redis::cluster::ClusterClient) -> redis::cluster::ClusterConnection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get_connection() {
            Ok(connection) => return connection,
            Err(e) if Instant::now() < deadline => {
                println!("connect to the cluster: {e}; trying again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("connect to the cluster: {e}"),
        }
    }
}

/// Writes `w:<n>` = n for n = 0, 1, ... until told to stop, noting each acknowledged write; a
/// failed write (a moment of CLUSTERDOWN while a slot moves) is counted and tried again.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    failures: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Writes `w:N` = N for N from `first` on.
    fn start(client: redis::cluster::ClusterClient, first: u64) -> Self {
        Self::writing(client, first, false)
    }

    /// The same, a write counting as acknowledged only once a replica has it too (`WAIT 1`):
    /// Redis answers a write before it replicates it, so a master lost at that moment loses it.
    fn start_replicated(client: redis::cluster::ClusterClient, first: u64) -> Self {
        Self::writing(client, first, true)
    }

    fn writing(client: redis::cluster::ClusterClient, first: u64, replicated: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU64::new(0));
        // Connected before the caller goes on to its fault: a connection made while a node is
        // being powered off can be reset, and the writer would then write nothing at all.
        let mut connection = connected(&client);
        let thread = std::thread::spawn({
            let (stop, acknowledged, failures) =
                (stop.clone(), acknowledged.clone(), failures.clone());
            move || {
                let mut n = first;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w:{n}");
                    let set: redis::RedisResult<()> =
                        redis::cmd("SET").arg(&key).arg(n).query(&mut connection);
                    let set = set.and_then(|()| {
                        if replicated {
                            wait_for_a_replica(&mut connection, &key)
                        } else {
                            Ok(())
                        }
                    });
                    match set {
                        Ok(()) => {
                            acknowledged.lock().unwrap().push(n);
                            n += 1;
                        }
                        Err(e) => {
                            if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                                println!("first failed write: {e}");
                            }
                            std::thread::sleep(Duration::from_millis(50));
                            if let Ok(fresh) = client.get_connection() {
                                connection = fresh;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self {
            stop,
            acknowledged,
            failures,
            thread: Some(thread),
        }
    }

    /// How many writes were acknowledged so far.
    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// The writes acknowledged so far (it goes on writing).
    fn acknowledged_so_far(&self) -> Vec<u64> {
        self.acknowledged.lock().unwrap().clone()
    }

    /// Stops writing; the acknowledged writes and the failed tries.
    fn finish(mut self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        (acknowledged, self.failures.load(Ordering::Relaxed))
    }
}

/// `WAIT 1` on the master that took the last write of `key` (WAIT has no key: it goes to the
/// node serving the key's slot); an error unless a replica has the write.
fn wait_for_a_replica(
    connection: &mut redis::cluster::ClusterConnection,
    key: &str,
) -> redis::RedisResult<()> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let mut wait = redis::cmd("WAIT");
    wait.arg(1).arg(1000);
    let master = Route::with_key(key, SlotAddr::Master);
    let answer = connection.route_command(
        &wait,
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(master)),
    )?;
    match redis::from_redis_value::<i64>(answer)? {
        0 => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "no replica acknowledged the write",
        ))),
        _ => Ok(()),
    }
}

/// Every one of the 10,000 keys and of the acknowledged writes, read back; names what is missing.
fn check_keys(
    connection: &mut redis::cluster::ClusterConnection,
    written: &[u64],
) -> Result<(), String> {
    let mut missing = Vec::new();
    for i in 0..KEYS {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query(connection)
            .map_err(|e| format!("GET key:{i}: {e}"))?;
        if value.as_deref() != Some(format!("value-{i}").as_str()) {
            missing.push(format!("key:{i}={value:?}"));
        }
    }
    for n in written {
        let value: Option<u64> = redis::cmd("GET")
            .arg(format!("w:{n}"))
            .query(connection)
            .map_err(|e| format!("GET w:{n}: {e}"))?;
        if value != Some(*n) {
            missing.push(format!("w:{n}={value:?}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} keys lost or wrong: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ))
    }
}

async fn agents(env: &Env) -> String {
    env.nodes("kv")
        .await
        .into_iter()
        .map(|n| {
            let agent = n.status.and_then(|s| s.agent).unwrap_or_default();
            format!(
                "{:?}: {:?} routesTo={:?} drain={:?}\n",
                n.metadata.name, agent.message, agent.routes_to, n.spec.drain
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_survive_scaling_while_written_and_a_stop() {
    let env = env("kvstore-e2e", 65).await;
    env.apply_cloud_and_app().await;
    apply(&env, kvstore(3, "Running")).await.unwrap();
    env.wait_ready("kv", "node 3/3").await;
    let password = password(&env).await;
    assert_eq!(password.len(), 32, "a random password");
    let seeds = endpoint(&env).await;
    assert_eq!(seeds.split(',').count(), 3, "three seeds: {seeds}");

    // Too few masters for Redis Cluster: refused (the role's minimum).
    let refused = apply(&env, kvstore(2, "Running")).await.unwrap_err();
    assert!(refused.to_string().contains("spec.replicas"), "{refused}");

    let client = cluster_client(&seeds, &password);
    let mut connection = client.get_connection().unwrap();
    let started = Instant::now();
    write_keys(&mut connection);
    println!(
        "{KEYS} keys written one by one through the cluster of 3 masters: {:.0} writes/s",
        KEYS as f64 / started.elapsed().as_secs_f64()
    );
    let addresses: Vec<String> = env
        .nodes("kv")
        .await
        .iter()
        .filter_map(|n| n.status.as_ref()?.address.clone())
        .collect();
    let spread: Vec<u64> = addresses.iter().map(|a| keys_on(a, &password)).collect();
    assert!(
        spread.iter().all(|k| *k > 2000),
        "the keys spread over the 3 masters: {spread:?}"
    );
    // The AOF is on each node's volume.
    for node in env.nodes("kv").await {
        let vm = env.state.path().join("vms").join(&node.spec.token);
        assert_eq!(
            std::fs::read_link(vm.join("work/redis/data")).unwrap(),
            vm.join("work/volume/redis"),
            "the data is on the node's volume"
        );
        assert!(vm.join("work/volume/redis/appendonlydir").is_dir());
    }

    // 3 -> 5 -> 3 while a client keeps writing.
    let writer = Writer::start(client.clone(), 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    apply(&env, kvstore(5, "Running")).await.unwrap();
    env.wait_ready("kv", "node 5/5").await;
    println!(
        "3 -> 5 nodes, slots moved onto the new masters: {:.1}s",
        asked.elapsed().as_secs_f64()
    );
    let nodes = env.nodes("kv").await;
    for node in nodes.iter().filter(|n| {
        n.metadata
            .name
            .as_deref()
            .is_some_and(|m| m.ends_with("-3") || m.ends_with("-4"))
    }) {
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.address.clone())
            .unwrap();
        assert!(
            keys_on(&address, &password) > 0,
            "the new master {address} holds keys"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    apply(&env, kvstore(3, "Running")).await.unwrap();
    let result = wait::until("3 kvstore nodes", Duration::from_secs(300), || async {
        Ok(env.nodes("kv").await.len() == 3)
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n--- agents ---\n{}", agents(&env).await);
    }
    println!(
        "5 -> 3 nodes, the leaving masters' slots moved off first: {:.1}s",
        asked.elapsed().as_secs_f64()
    );
    env.wait_ready("kv", "node 3/3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (written, failures) = writer.finish();
    println!(
        "{} writes acknowledged during the scaling, {failures} tries failed and were repeated",
        written.len()
    );
    assert!(written.len() > 100, "the writer kept writing");
    check_keys(&mut connection, &written).unwrap();

    // A php Service linked to the kvstore keeps its sessions in it.
    create_config_map(
        &env,
        "site-code",
        "code.tar",
        tar_of(&[("counter.php", COUNTER)], 0o644),
    )
    .await;
    apply(&env, site()).await.unwrap();
    env.wait_ready("site", "proxy 1/1, web 0/0, backend 1/1")
        .await;
    let proxy = env.url_host("site").await;
    let (status, first, headers) = http_send(&proxy, "GET", "/counter.php", &[]).await.unwrap();
    let cookie = headers
        .get("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("a session cookie: {status} {first}"))
        .to_string();
    let (_, second, _) = http_send(&proxy, "GET", "/counter.php", &[("cookie", &cookie)])
        .await
        .unwrap();
    let words: Vec<&str> = second.split(' ').collect();
    assert!(first.starts_with("1 "), "{first}");
    assert_eq!((words[0], words[2]), ("2", "hosts"), "{second}");
    let session: Option<String> = redis::cmd("GET")
        .arg(format!("PHPREDIS_CLUSTER_SESSION:{}", words[1]))
        .query(&mut connection)
        .unwrap();
    assert!(
        session.as_deref().is_some_and(|s| s.contains("n|i:2;")),
        "the session is kept in the kvstore: {session:?}"
    );

    // Stop while a client goes on writing: every key is dumped, and no write is acknowledged
    // after the dump (the writes stay paused until the nodes are gone); Start: they are back
    // in a new cluster.
    let late = Writer::start(client.clone(), written.last().map_or(0, |n| n + 1));
    apply(&env, kvstore(3, "Stopped")).await.unwrap();
    env.wait_service("kv", "kv stopped with its data saved", |s| {
        s.status.as_ref().is_some_and(|s| s.saved_data.is_some())
    })
    .await;
    wait::until("no kvstore node left", LIMIT, || async {
        Ok(env.nodes("kv").await.is_empty())
    })
    .await
    .unwrap();
    let (late, _) = late.finish();
    println!("{} writes acknowledged during the stop", late.len());
    assert!(!late.is_empty(), "the client wrote until the fence");
    apply(&env, kvstore(3, "Running")).await.unwrap();
    env.wait_ready("kv", "node 3/3").await;
    let client = cluster_client(&endpoint(&env).await, &password);
    let mut connection = client.get_connection().unwrap();
    let mut every = written.clone();
    every.extend(&late);
    check_keys(&mut connection, &every).unwrap();

    delete_and_expect_nothing_running(&env, &["site", "kv"]).await;
}

/// Each node's agent crashes in turn and its VM's init starts it again while its redis-server
/// runs on: waits until the new agent's redis-server serves (the old one stopped) and the
/// Service is Ready with `ready` again.
async fn restart_every_agent(env: &Env, ready: &str) {
    let cloud = env.controller.local_cloud();
    for node in env.nodes("kv").await {
        let vm = node.spec.token.clone();
        let before = redis_of(&vm).expect("the node's redis-server");
        cloud.restart_agent(&vm).await.unwrap();
        wait::until("a new redis-server serving", LIMIT, || async {
            let after = redis_of(&vm);
            let address = node
                .status
                .as_ref()
                .and_then(|s| s.address.clone())
                .unwrap();
            Ok(after.is_some_and(|p| p != before)
                && !alive(before)
                && std::net::TcpStream::connect((address.as_str(), 6379)).is_ok())
        })
        .await
        .unwrap_or_else(|e| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(before),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{e}\n{}", vm_logs(env.state.path()))
        });
        env.wait_ready("kv", ready).await;
    }
}

/// The redis-server of the local VM `vm`: redis rewrites its command line, but works in the
/// VM's data folder.
fn redis_of(vm: &str) -> Option<i32> {
    conpaas_cloud::local::find_by_cmdline("redis-server")
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd.to_string_lossy().contains(&format!("/{vm}/")))
        })
}

/// Three masters without replicas (each slot's only copy on one node) under a writing client,
/// through the faults of node 0's agent and VM in turn: every agent killed and started again
/// while its redis-server runs; node 0's agent frozen past three heartbeat timeouts (redis
/// serves on), then thawed; node 0's VM powered off (its slots down), then on again. The node
/// is never replaced (its data has no other copy: `DataAtRisk` names it meanwhile), and after
/// each fault every key and acknowledged write is read back.
#[tokio::test(flavor = "multi_thread")]
async fn keys_without_replicas_survive_agent_crashes_a_frozen_agent_and_a_vm_powered_off() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let env = env("kvstore-restart-e2e", 136).await;
    env.apply_cloud_and_app().await;
    let mut service = kvstore(3, "Running");
    apply(&env, service.clone()).await.unwrap();
    env.wait_ready("kv", "node 3/3").await;
    // A short heartbeat timeout once the nodes run, so that the faults below outlast three.
    service["spec"]["health"] = json!({"heartbeatTimeoutSeconds": 5});
    apply(&env, service).await.unwrap();
    let password = password(&env).await;
    let client = cluster_client(&endpoint(&env).await, &password);
    write_keys(&mut connected(&client));
    let writer = Writer::start(client.clone(), 0);
    let mut cells = Vec::new();
    let check = async |cell: &str| {
        let now = cluster_client(&endpoint(&env).await, &password);
        check_keys(&mut connected(&now), &writer.acknowledged_so_far())
            .unwrap_or_else(|e| panic!("after {cell}: {e}"));
    };

    // Each node's agent crashes in turn and its VM's init starts it again; redis-server (the
    // only copy of its slots) ran on meanwhile.
    let started = Instant::now();
    restart_every_agent(&env, "node 3/3").await;
    let cell = "every agent SIGKILLed while redis ran";
    check(cell).await;
    cells.push((cell, started.elapsed()));

    let first = env
        .nodes("kv")
        .await
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("kv-node-0"))
        .expect("node 0");
    let kept_at_risk = async |what: &str| {
        env.wait_service("kv", what, |s| {
            let (reason, message) = degraded(s);
            reason == "DataAtRisk" && message.contains("kv-node-0")
        })
        .await;
        // Three heartbeat timeouts and more: the node is still the same one.
        tokio::time::sleep(Duration::from_secs(16)).await;
        let now = env.nodes("kv").await;
        assert_eq!(now.len(), 3, "{what}: no node added or removed");
        assert!(
            now.iter().any(|n| n.metadata.uid == first.metadata.uid),
            "{what}: node 0 kept, not replaced\n{}",
            agents(&env).await
        );
    };

    let started = Instant::now();
    let agent = env.agent_of(&first.spec.token).expect("node 0's agent");
    kill(Pid::from_raw(agent), Signal::SIGSTOP).unwrap();
    kept_at_risk("node 0's agent frozen").await;
    kill(Pid::from_raw(agent), Signal::SIGCONT).unwrap();
    env.wait_ready("kv", "node 3/3").await;
    let cell = "node 0's agent SIGSTOPped past 3 timeouts";
    check(cell).await;
    cells.push((cell, started.elapsed()));

    let started = Instant::now();
    let cloud = env.controller.local_cloud();
    cloud.power_off(&first.spec.token).await.unwrap();
    kept_at_risk("node 0's VM off").await;
    // Powered on again: its agent boots on the same disk and redis loads its AOF.
    cloud.power_cycle(&first.spec.token).await.unwrap();
    env.wait_ready("kv", "node 3/3").await;
    let cell = "node 0's VM powered off, then on";
    check(cell).await;
    cells.push((cell, started.elapsed()));

    let (written, failures) = writer.finish();
    assert!(written.len() > 100, "the client kept writing");
    check_keys(
        &mut connected(&cluster_client(&endpoint(&env).await, &password)),
        &written,
    )
    .unwrap();
    for (cell, took) in cells {
        println!(
            "kvstore, 3 masters without replicas, {cell}: no acknowledged write lost, {:.1}s",
            took.as_secs_f64()
        );
    }
    println!(
        "{} writes acknowledged, none lost, {failures} failed tries",
        written.len()
    );
    delete_and_expect_nothing_running(&env, &["kv"]).await;
}

/// Three masters with a replica each: a master's VM powered off while a client writes. Its
/// replica takes over its slots, the node is replaced only then (its data has another copy),
/// and the new node joins as the replica of its group. Every key and every write a replica
/// acknowledged (`WAIT 1`) is read back.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_powered_off_fails_over_to_its_replica_without_a_replicated_write_lost() {
    let env = env("kvstore-failover-e2e", 140).await;
    env.apply_cloud_and_app().await;
    let mut service = replicated(&env).await;
    // A failed VM counts after a heartbeat timeout (it may come back with its disk): a short
    // one, once the nodes run (six VMs starting at once on this machine take longer).
    service["spec"]["health"] = json!({"heartbeatTimeoutSeconds": 10});
    apply(&env, service).await.unwrap();
    let password = password(&env).await;
    let client = cluster_client(&endpoint(&env).await, &password);
    let mut connection = client.get_connection().unwrap();
    write_keys(&mut connection);
    let nodes = env.nodes("kv").await;
    let address = |n: &conpaas_crds::v1alpha1::ServiceNode| {
        n.status.as_ref().and_then(|s| s.address.clone()).unwrap()
    };
    // Every key on its master and its replica before the fault.
    let replicated = wait::until("every key replicated", LIMIT, || async {
        Ok(nodes
            .iter()
            .map(|n| keys_on(&address(n), &password))
            .sum::<u64>()
            == 2 * KEYS as u64)
    })
    .await;
    if let Err(e) = replicated {
        let counts: Vec<u64> = nodes
            .iter()
            .map(|n| keys_on(&address(n), &password))
            .collect();
        panic!("{e}: keys per node {counts:?}\n{}", agents(&env).await);
    }

    let writer = Writer::start_replicated(client.clone(), 0);
    let first = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("kv-node-0"))
        .unwrap();
    let started = Instant::now();
    env.controller
        .local_cloud()
        .power_off(&first.spec.token)
        .await
        .unwrap();
    if let Err(e) = env.wait_replaced("kv", first, 6).await {
        panic!("{e}\n{}", agents(&env).await);
    }
    env.wait_ready("kv", "node 6/6").await;
    let took = started.elapsed();
    // Writes to the promoted master count again once the new node replicates it.
    let before = writer.acknowledged();
    wait::until("replicated writes after the failover", LIMIT, || async {
        Ok(writer.acknowledged() > before + 20)
    })
    .await
    .unwrap();
    let (written, failures) = writer.finish();
    assert!(!written.is_empty(), "the client wrote through the failover");
    let mut connection = client.get_connection().unwrap();
    check_keys(&mut connection, &written).unwrap();
    // The new node holds a copy: every key is on two nodes again.
    let now = env.nodes("kv").await;
    wait::until("every key on two nodes again", LIMIT, || async {
        let total: u64 = now.iter().map(|n| keys_on(&address(n), &password)).sum();
        Ok(total == 2 * (KEYS + written.len()) as u64)
    })
    .await
    .unwrap();
    println!(
        "kvstore, 3 masters with a replica each, a master's VM powered off: replaced in {:.1}s, {} replicated writes acknowledged, none lost, {failures} failed tries",
        took.as_secs_f64(),
        written.len()
    );
    delete_and_expect_nothing_running(&env, &["kv"]).await;
}

/// Three masters with a replica each: master 0's agent frozen for three heartbeat timeouts
/// and more while a client writes (its redis-server serves on), then thawed. Whether the node
/// is kept or replaced (its data has a copy on its replica), every key and every write a replica
/// acknowledged (`WAIT 1`) is read back, and every key is on two nodes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_master_agent_with_a_replica_loses_no_replicated_write() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let env = env("kvstore-frozen-e2e", 148).await;
    env.apply_cloud_and_app().await;
    let mut service = replicated(&env).await;
    service["spec"]["health"] = json!({"heartbeatTimeoutSeconds": 10});
    apply(&env, service).await.unwrap();
    let password = password(&env).await;
    let client = cluster_client(&endpoint(&env).await, &password);
    write_keys(&mut client.get_connection().unwrap());
    let address = |n: &conpaas_crds::v1alpha1::ServiceNode| {
        n.status.as_ref().and_then(|s| s.address.clone()).unwrap()
    };
    let nodes = env.nodes("kv").await;
    wait::until("every key replicated", LIMIT, || async {
        Ok(nodes
            .iter()
            .map(|n| keys_on(&address(n), &password))
            .sum::<u64>()
            == 2 * KEYS as u64)
    })
    .await
    .unwrap();

    let first = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("kv-node-0"))
        .unwrap();
    let agent = env.agent_of(&first.spec.token).expect("node 0's agent");
    let writer = Writer::start_replicated(client.clone(), 0);
    kill(Pid::from_raw(agent), Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(35)).await;
    let _ = kill(Pid::from_raw(agent), Signal::SIGCONT);
    env.wait_ready("kv", "node 6/6").await;
    let before = writer.acknowledged();
    wait::until("replicated writes after the thaw", LIMIT, || async {
        Ok(writer.acknowledged() > before + 20)
    })
    .await
    .unwrap();
    let (written, failures) = writer.finish();
    assert!(!written.is_empty(), "the client wrote through the freeze");
    check_keys(&mut client.get_connection().unwrap(), &written).unwrap();
    let now = env.nodes("kv").await;
    let copies = wait::until("every key on two nodes again", LIMIT, || async {
        let total: u64 = now.iter().map(|n| keys_on(&address(n), &password)).sum();
        Ok(total == 2 * (KEYS + written.len()) as u64)
    })
    .await;
    if let Err(e) = copies {
        panic!("{e}\n{}", agents(&env).await);
    }
    let replaced = now.iter().all(|n| n.metadata.uid != first.metadata.uid);
    println!(
        "kvstore, 3 masters with a replica each, master 0's agent frozen 35s: {}, {} replicated writes acknowledged, none lost, {failures} failed tries",
        if replaced { "replaced" } else { "kept" },
        written.len()
    );
    delete_and_expect_nothing_running(&env, &["kv"]).await;
}

/// Three masters with a replica each, under a client whose writes count once a replica has
/// them (`WAIT 1`), through four faults in turn: every agent killed and started again while
/// its redis-server runs; the data volume grown from 1 to 2 GiB, then a larger instance type
/// (each time the nodes replaced one at a time, each new one in sync before an old one
/// leaves); a Stop while the client writes, then a Start. After each, every key and every replicated write is read back; at the end every
/// key is on two nodes again.
#[tokio::test(flavor = "multi_thread")]
async fn replicated_masters_lose_no_write_through_agent_kills_two_moves_and_a_stop() {
    let env = env("kvstore-replicated-e2e", 150).await;
    env.apply_cloud_and_app().await;
    let mut service = replicated(&env).await;
    let password = password(&env).await;
    let client = cluster_client(&endpoint(&env).await, &password);
    write_keys(&mut connected(&client));
    let writer = Writer::start_replicated(client.clone(), 0);
    let mut cells = Vec::new();
    // Read through the Service's endpoint as it is after each fault, not the writer's view.
    let check = async |written: &[u64], cell: &str| {
        let now = cluster_client(&endpoint(&env).await, &password);
        check_keys(&mut connected(&now), written).unwrap_or_else(|e| panic!("after {cell}: {e}"));
    };

    let started = Instant::now();
    restart_every_agent(&env, "node 6/6").await;
    let cell = "every agent SIGKILLed while redis ran";
    check(&writer.acknowledged_so_far(), cell).await;
    cells.push((cell, started.elapsed()));

    // The data volume grown, then a larger instance type: each moves the nodes one at a time.
    for (gib, instance_type, cell) in [
        (2, "small", "volume 1 -> 2 GiB"),
        (2, "large", "instance type small -> large"),
    ] {
        let started = Instant::now();
        let old: Vec<String> = env
            .nodes("kv")
            .await
            .iter()
            .filter_map(|n| n.metadata.uid.clone())
            .collect();
        service["spec"]["roles"][0]["volume"]["sizeGiB"] = json!(gib);
        service["spec"]["roles"][0]["instanceType"] = json!(instance_type);
        apply(&env, service.clone()).await.unwrap();
        let moved = wait::until(
            &format!("every node on a {gib} GiB {instance_type} VM"),
            4 * LIMIT,
            || async {
                let nodes = env.nodes("kv").await;
                Ok(nodes.len() == 6
                    && nodes.iter().all(|n| {
                        n.metadata
                            .uid
                            .as_ref()
                            .is_some_and(|uid| !old.contains(uid))
                            && n.spec.instance_type.as_deref() == Some(instance_type)
                    }))
            },
        )
        .await;
        if let Err(e) = moved {
            panic!("{e}\n{}", agents(&env).await);
        }
        env.wait_ready("kv", "node 6/6").await;
        check(&writer.acknowledged_so_far(), cell).await;
        cells.push((cell, started.elapsed()));
    }

    let started = Instant::now();
    let mut stopped = service.clone();
    stopped["spec"]["state"] = json!("Stopped");
    apply(&env, stopped).await.unwrap();
    env.wait_service("kv", "kv stopped with its data saved", |s| {
        s.status.as_ref().is_some_and(|s| s.saved_data.is_some())
    })
    .await;
    wait::until("no kvstore node left", LIMIT, || async {
        Ok(env.nodes("kv").await.is_empty())
    })
    .await
    .unwrap();
    let (written, failures) = writer.finish();
    apply(&env, service).await.unwrap();
    env.wait_ready("kv", "node 6/6").await;
    let client = cluster_client(&endpoint(&env).await, &password);
    let cell = "Stop while written, then Start";
    check_keys(&mut connected(&client), &written).unwrap_or_else(|e| panic!("after {cell}: {e}"));
    cells.push((cell, started.elapsed()));

    let now = env.nodes("kv").await;
    let address = |n: &conpaas_crds::v1alpha1::ServiceNode| {
        n.status.as_ref().and_then(|s| s.address.clone()).unwrap()
    };
    // Writes whose replica acknowledgement timed out may be there too: every key the masters
    // hold must be on a replica as well.
    let copies = || -> redis::RedisResult<(u64, u64)> {
        let (mut on_masters, mut on_replicas) = (0, 0);
        for n in &now {
            let (master, keys) = role_and_keys(&address(n), &password)?;
            if master {
                on_masters += keys;
            } else {
                on_replicas += keys;
            }
        }
        Ok((on_masters, on_replicas))
    };
    let twice = wait::until("every key on two nodes again", LIMIT, || async {
        // A node that does not answer for a moment is asked again.
        Ok(copies().is_ok_and(|(on_masters, on_replicas)| {
            on_masters >= (KEYS + written.len()) as u64 && on_replicas == on_masters
        }))
    })
    .await;
    if let Err(e) = twice {
        panic!("{e}: (keys on masters, on replicas) = {:?}", copies());
    }
    for (cell, took) in cells {
        println!(
            "kvstore, 3 masters with a replica each, {cell}: no replicated write lost, {:.1}s",
            took.as_secs_f64()
        );
    }
    println!(
        "{} replicated writes acknowledged, {failures} failed tries; every key on two nodes",
        written.len()
    );
    delete_and_expect_nothing_running(&env, &["kv"]).await;
}

/// Three masters without replicas (the only copy of each slot on one node) under a writing
/// client: the data volume grown from 1 to 2 GiB, then a larger instance type. Each moves the
/// nodes one at a time (a new master takes slots before an old one gives its slots up and
/// leaves); every key and every acknowledged write is read back after each.
#[tokio::test(flavor = "multi_thread")]
async fn keys_survive_a_volume_then_an_instance_type_change_while_written() {
    let env = env("kvstore-placement-e2e", 153).await;
    env.apply_cloud_and_app().await;
    let placed = |gib: i32, instance_type: &str| {
        let mut service = kvstore(3, "Running");
        service["spec"]["roles"] = json!([{
            "name": "node", "instanceType": instance_type, "volume": {"sizeGiB": gib}
        }]);
        service
    };
    apply(&env, placed(1, "small")).await.unwrap();
    env.wait_ready("kv", "node 3/3").await;
    let password = password(&env).await;
    let client = cluster_client(&endpoint(&env).await, &password);
    write_keys(&mut connected(&client));
    let writer = Writer::start(client.clone(), 0);
    for (gib, instance_type) in [(2, "small"), (2, "large")] {
        let started = Instant::now();
        let old: Vec<String> = env
            .nodes("kv")
            .await
            .iter()
            .filter_map(|n| n.metadata.uid.clone())
            .collect();
        apply(&env, placed(gib, instance_type)).await.unwrap();
        let moved = wait::until(
            &format!("every node on a {gib} GiB {instance_type} VM"),
            4 * LIMIT,
            || async {
                let nodes = env.nodes("kv").await;
                Ok(nodes.len() == 3
                    && nodes.iter().all(|n| {
                        n.metadata
                            .uid
                            .as_ref()
                            .is_some_and(|uid| !old.contains(uid))
                            && n.spec.instance_type.as_deref() == Some(instance_type)
                    }))
            },
        )
        .await;
        if let Err(e) = moved {
            panic!("{e}\n{}", agents(&env).await);
        }
        env.wait_ready("kv", "node 3/3").await;
        // Read through the Service's endpoint as it is now, not the writer's view.
        let now = cluster_client(&endpoint(&env).await, &password);
        check_keys(&mut connected(&now), &writer.acknowledged_so_far())
            .unwrap_or_else(|e| panic!("after the move to {gib} GiB {instance_type}: {e}"));
        println!(
            "kvstore, 3 masters without replicas, moved to {gib} GiB {instance_type} VMs under writes: {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let (written, failures) = writer.finish();
    assert!(written.len() > 100, "the client kept writing");
    let now = cluster_client(&endpoint(&env).await, &password);
    check_keys(&mut connected(&now), &written).unwrap();
    println!(
        "{} writes acknowledged, none lost, {failures} failed tries",
        written.len()
    );
    delete_and_expect_nothing_running(&env, &["kv"]).await;
}

/// Three masters with `replicas` replicas each, holding 200 MiB that compress about a
/// thousandfold besides the 10,000 keys, under a writing client: a Stop whose save the store
/// refuses (it takes no archive over 64 bytes) keeps every node (`SaveFailed` with the store's
/// 413, nothing saved) until the store takes archives again; Start brings every byte, key and
/// acknowledged write back; started again and stopped while the manager still loads the save,
/// the Stop waits for the load, and the next Start has everything again.
async fn stop_cells(ns: &str, subnet: u8, replicas: usize) {
    let mut env = env_with(ns, subnet, &[("CONPAAS_MAX_ARCHIVE_BYTES", "64")]).await;
    env.apply_cloud_and_app().await;
    let count = 3 * (1 + replicas);
    let ready = format!("node {count}/{count}");
    let service = |state: &str| {
        let mut service = kvstore(count as i32, state);
        service["spec"]["settings"] = json!({"replicas": replicas.to_string()});
        service
    };
    apply(&env, service("Running")).await.unwrap();
    env.wait_ready("kv", &ready).await;
    let password = password(&env).await;
    let client = cluster_client(&endpoint(&env).await, &password);
    let mut connection = connected(&client);
    write_keys(&mut connection);
    for i in 0..LARGE_VALUES {
        redis::cmd("SET")
            .arg(format!("large:{i}"))
            .arg(large(i))
            .query::<()>(&mut connection)
            .unwrap();
    }
    let writer = if replicas > 0 {
        Writer::start_replicated(client.clone(), 0)
    } else {
        Writer::start(client.clone(), 0)
    };
    wait::until("writes acknowledged", LIMIT, || async {
        Ok(writer.acknowledged() > 20)
    })
    .await
    .unwrap();
    let mut cells = Vec::new();

    let started = Instant::now();
    let mut before: Vec<_> = env
        .nodes("kv")
        .await
        .into_iter()
        .map(|n| n.metadata.uid)
        .collect();
    before.sort();
    apply(&env, service("Stopped")).await.unwrap();
    env.wait_service("kv", "SaveFailed with the store's refusal", |s| {
        let (reason, message) = degraded(s);
        reason == "SaveFailed" && message.contains("413")
    })
    .await;
    let kept = env.nodes("kv").await;
    let mut after: Vec<_> = kept.iter().map(|n| n.metadata.uid.clone()).collect();
    after.sort();
    assert_eq!(after, before, "every node is kept");
    assert!(kept.iter().all(|n| n.metadata.deletion_timestamp.is_none()));
    let saved = env.services().get("kv").await.unwrap().status;
    assert!(saved.and_then(|s| s.saved_data).is_none(), "nothing saved");
    // The store takes archives again: the nodes' next try is stored, then they go.
    env.controller.kill();
    env.controller
        .set_env("CONPAAS_MAX_ARCHIVE_BYTES", &(1u64 << 30).to_string());
    env.controller.restart().unwrap();
    stopped(&env, "kv stopped with its data saved").await;
    let (written, failures) = writer.finish();
    apply(&env, service("Running")).await.unwrap();
    let cell = "Stop with the store refusing, then taking the 200 MiB save; Start";
    everything_back(&env, &ready, &password, &written, cell).await;
    cells.push((cell, started.elapsed()));

    let started = Instant::now();
    apply(&env, service("Stopped")).await.unwrap();
    stopped(&env, "kv stopped again").await;
    apply(&env, service("Running")).await.unwrap();
    env.wait_agent_saying("the manager loading the save", |m| {
        m == "loading the keys saved at the last stop"
    })
    .await;
    apply(&env, service("Stopped")).await.unwrap();
    stopped(&env, "kv stopped during its restore").await;
    apply(&env, service("Running")).await.unwrap();
    let cell = "Stop during the restore, then Start";
    everything_back(&env, &ready, &password, &written, cell).await;
    cells.push((cell, started.elapsed()));

    for (cell, took) in cells {
        println!(
            "kvstore, 3 masters with {replicas} replicas each, 200 MiB compressible, {cell}: \
             every byte, key and acknowledged write back, {:.1}s",
            took.as_secs_f64()
        );
    }
    println!(
        "{} writes acknowledged, {failures} failed tries",
        written.len()
    );
    delete_and_expect_nothing_running(&env, &["kv"]).await;
}

/// The large values of [`stop_cells`]: 200 of 1 MiB, each its number repeated.
const LARGE_VALUES: usize = 200;
const LARGE_VALUE: usize = 1 << 20;

fn large(i: usize) -> String {
    format!("{i:08}").repeat(LARGE_VALUE / 8)
}

/// Waits until the Service says its data is saved (and nothing else is wrong), then until its
/// nodes are gone.
async fn stopped(env: &Env, what: &str) {
    env.wait_service("kv", what, |s| {
        s.status.as_ref().is_some_and(|st| st.saved_data.is_some()) && degraded(s).0.is_empty()
    })
    .await;
    wait::until("no kvstore node left", 2 * LIMIT, || async {
        Ok(env.nodes("kv").await.is_empty())
    })
    .await
    .unwrap();
}

/// Once the Service is Ready with `ready`, every key, acknowledged write and large value read
/// back through its endpoint.
async fn everything_back(env: &Env, ready: &str, password: &str, written: &[u64], cell: &str) {
    env.wait_ready("kv", ready).await;
    let client = cluster_client(&endpoint(env).await, password);
    let mut connection = connected(&client);
    check_keys(&mut connection, written).unwrap_or_else(|e| panic!("after {cell}: {e}"));
    for i in 0..LARGE_VALUES {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("large:{i}"))
            .query(&mut connection)
            .unwrap();
        assert!(
            value.as_deref() == Some(large(i).as_str()),
            "after {cell}: large:{i} lost or changed ({} bytes)",
            value.map_or(0, |v| v.len())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_replicas_a_refused_stop_a_large_save_and_a_stop_during_the_restore_lose_nothing() {
    stop_cells("kvstore-refused-e2e", 144, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_replicas_a_refused_stop_a_large_save_and_a_stop_during_the_restore_lose_nothing() {
    stop_cells("kvstore-stops-replicated-e2e", 154, 1).await;
}
