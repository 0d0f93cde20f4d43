//! A mysql Service's code is an SQL dump (ConPaaS' `Dump`): loaded once into the database when
//! activated, on a two-node cluster, and a later one rolled out over it; `cpsctl mysql dump`
//! writes the database back out, and that
//! dump, uploaded to another Service, restores it there; a dump MariaDB refuses leaves its
//! Service not Ready with MariaDB's own message; a stop keeps the data (every row a client
//! wrote through another node until the nodes were gone) and a start restores it.

mod common;

use common::*;
use conpaas_crds::v1alpha1::is_condition_true;
use conpaas_e2e::tools::{cpsctl, run};

const NS: &str = "mysql-dump-e2e";
const DUMP: &str = "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(32)) ENGINE=InnoDB;
INSERT INTO products VALUES (1, 'tea'), (2, 'coffee'), (3, 'cocoa');
";

fn service(name: &str, replicas: i32, dump_config_map: &str) -> String {
    format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{application: demo, type: mysql, replicas: {replicas}, settings: {{database: shop}}, code: {{active: v1, versions: [{{name: v1, configMap: {{name: {dump_config_map}, key: dump.sql}}}}]}}}}\n"
    )
}

/// `SELECT ...` on a node, as the Service's user.
async fn query(env: &Env, service: &str, address: &str, sql: &str) -> String {
    try_query(env, service, address, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql} on {address}: {e}"))
}

async fn try_query(env: &Env, service: &str, address: &str, sql: &str) -> Result<String, String> {
    let (_, password) = mysql_credentials(env, service).await;
    mariadb_query(address, "conpaas", &password, sql)
}

/// Waits until `SELECT COUNT(*) FROM products` on `address` says `rows`.
async fn wait_rows(env: &Env, service: &str, address: &str, rows: &str, what: &str) {
    conpaas_e2e::wait::until(what, LIMIT, || async move {
        let count = try_query(env, service, address, "SELECT COUNT(*) FROM products").await;
        Ok(count.as_deref() == Ok(rows))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_loads_once_dumps_back_out_restores_elsewhere_and_a_bad_one_is_reported() {
    let env = env(NS, 64).await;
    env.apply_cloud_and_app().await;
    create_config_map(&env, "shop-dump", "dump.sql", DUMP.as_bytes().to_vec()).await;
    create_config_map(
        &env,
        "bad-dump",
        "dump.sql",
        b"INSERT INTO missing_table VALUES (1);\n".to_vec(),
    )
    .await;
    env.apply(&service("db", 2, "shop-dump")).await;
    env.apply(&service("broken", 1, "bad-dump")).await;

    // Loaded once for the cluster, on every node.
    env.wait_ready("db", "mysql 2/2, glb 0/0").await;
    for node in env.nodes("db").await {
        let address = node.status.and_then(|s| s.address).unwrap();
        assert_eq!(
            query(
                &env,
                "db",
                &address,
                "SELECT GROUP_CONCAT(name ORDER BY id) FROM products"
            )
            .await,
            "tea,coffee,cocoa",
            "on {address}"
        );
    }

    // A later dump (a migration) rolls out over both nodes and is loaded once, by the first.
    create_config_map(
        &env,
        "shop-more",
        "dump.sql",
        b"INSERT INTO products VALUES (4, 'mate');\n".to_vec(),
    )
    .await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: db}\nspec: {application: demo, type: mysql, replicas: 2, settings: {database: shop}, code: {active: v2, versions: [{name: v1, configMap: {name: shop-dump, key: dump.sql}}, {name: v2, configMap: {name: shop-more, key: dump.sql}}]}}\n")
        .await;
    env.wait_service("db", "v2 on every node", |s| {
        let status = s.status.clone().unwrap_or_default();
        is_condition_true(&status.conditions, "Ready")
            && status.roles.iter().all(|r| r.updated == r.desired)
            && status.active_code_version.as_deref() == Some("v2")
    })
    .await;
    for node in env.nodes("db").await {
        let address = node.status.and_then(|s| s.address).unwrap();
        wait_rows(&env, "db", &address, "4", "the fourth row").await;
    }

    // A node joining later gets the data, and the note of what is loaded, by state transfer.
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: db}\nspec: {application: demo, type: mysql, replicas: 3, settings: {database: shop}, code: {active: v2, versions: [{name: v1, configMap: {name: shop-dump, key: dump.sql}}, {name: v2, configMap: {name: shop-more, key: dump.sql}}]}}\n")
        .await;
    env.wait_ready("db", "mysql 3/3, glb 0/0").await;
    let joiner = env
        .nodes("db")
        .await
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("db-mysql-2"))
        .and_then(|n| n.status?.address)
        .expect("the third node's address");
    assert_eq!(
        query(&env, "db", &joiner, "SELECT COUNT(*) FROM products").await,
        "4"
    );

    // Stopping keeps the data (ConPaaS lost it): a row a client wrote after the dumps is still
    // there once the Service ran again with no node left in between, and neither dump loaded
    // twice (the second time, their CREATE TABLE would fail).
    query(
        &env,
        "db",
        &joiner,
        "INSERT INTO products VALUES (5, 'chai')",
    )
    .await;
    let db = |state: &str| {
        format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: db}}\nspec: {{application: demo, type: mysql, state: {state}, replicas: 3, settings: {{database: shop}}, code: {{active: v2, versions: [{{name: v1, configMap: {{name: shop-dump, key: dump.sql}}}}, {{name: v2, configMap: {{name: shop-more, key: dump.sql}}}}]}}}}\n"
        )
    };
    // A client goes on inserting through a node that does not save: no row is acknowledged
    // after the save's dump (every member turns read-only first).
    let (_, password) = mysql_credentials(&env, "db").await;
    let writer = RowWriter::start(joiner.clone(), password);
    let stopping = std::time::Instant::now();
    env.apply(&db("Stopped")).await;
    env.wait_service("db", "stopped with its data saved", |s| {
        let status = s.status.clone().unwrap_or_default();
        status.phase == conpaas_crds::v1alpha1::Phase::Stopped && status.saved_data.is_some()
    })
    .await;
    conpaas_e2e::wait::until("no mysql node left", LIMIT, || async {
        Ok(env.nodes("db").await.is_empty())
    })
    .await
    .unwrap();
    let late = writer.finish();
    println!("{} rows acknowledged during the stop", late.len());
    assert!(!late.is_empty(), "the client wrote until the fence");
    println!(
        "mysql stop with the data saved: {:.1}s",
        stopping.elapsed().as_secs_f64()
    );
    let starting = std::time::Instant::now();
    env.apply(&db("Running")).await;
    env.wait_ready("db", "mysql 3/3, glb 0/0").await;
    println!(
        "mysql start with the data restored: {:.1}s",
        starting.elapsed().as_secs_f64()
    );
    for node in env.nodes("db").await {
        let address = node.status.and_then(|s| s.address).unwrap();
        assert_eq!(
            query(
                &env,
                "db",
                &address,
                "SELECT GROUP_CONCAT(name ORDER BY id) FROM products WHERE id < 1000"
            )
            .await,
            "tea,coffee,cocoa,mate,chai",
            "on {address} after the stop"
        );
        let back = query(
            &env,
            "db",
            &address,
            "SELECT id FROM products WHERE id >= 1000 ORDER BY id",
        )
        .await;
        let back: std::collections::BTreeSet<u64> =
            back.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let lost: Vec<&u64> = late.iter().filter(|id| !back.contains(id)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} rows acknowledged during the stop are gone on {address}: {:?}",
            lost.len(),
            late.len(),
            &lost[..lost.len().min(5)]
        );
    }
    let any = env
        .nodes("db")
        .await
        .remove(0)
        .status
        .and_then(|s| s.address)
        .unwrap();
    query(&env, "db", &any, "DELETE FROM products WHERE id >= 1000").await;

    // A refused dump: the Service says so in MariaDB's words, and is not Ready.
    env.wait_service("broken", "MariaDB's refusal on the Service", |s| {
        let status = s.status.clone().unwrap_or_default();
        status
            .conditions
            .iter()
            .any(|c| c.message.contains("missing_table") && c.message.contains("doesn't exist"))
    })
    .await;
    let broken = env.services().get("broken").await.unwrap();
    let conditions = broken.status.unwrap_or_default().conditions;
    assert!(!is_condition_true(&conditions, "Ready"), "{conditions:?}");

    // Dumped back out, then restored into another Service from that file.
    let out = run(
        &cpsctl(),
        &["-n", NS, "mysql", "dump", "db"],
        &env.cp.kubeconfig,
        None,
    )
    .expect("cpsctl")
    .ok();
    assert!(
        out.stdout.contains("INSERT INTO `products`") && out.stdout.contains("cocoa"),
        "{}",
        tail(&out.stdout, 20)
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &out.stdout).unwrap();
    // The copy keeps its database on a data volume of its own.
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: copy}\nspec: {application: demo, type: mysql, roles: [{name: mysql, volume: {sizeGiB: 1}}], settings: {database: shop}}\n")
        .await;
    env.wait_ready("copy", "mysql 1/1, glb 0/0").await;
    env.wait_code_api().await;
    run(
        &cpsctl(),
        &[
            "-n",
            NS,
            "code",
            "upload",
            "copy",
            file.path().to_str().unwrap(),
            "--version",
            "restore",
            "--activate",
        ],
        &env.cp.kubeconfig,
        None,
    )
    .expect("cpsctl")
    .ok();
    let node = env.nodes("copy").await.remove(0);
    let vm = env.state.path().join("vms").join(&node.spec.token);
    assert!(
        vm.join("work/volume/mysql/mysql").is_dir(),
        "the database is on the node's data volume"
    );
    let address = node.status.and_then(|s| s.address).unwrap();
    wait_rows(&env, "copy", &address, "5", "the restored rows").await;
    env.wait_ready("copy", "mysql 1/1, glb 0/0").await;

    delete_and_expect_nothing_running(&env, &["db", "broken", "copy"]).await;
}

/// Inserts rows `(1000 + N, 'late')` through one node until finished.
struct RowWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl RowWriter {
    fn start(address: String, password: String) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut acknowledged = Vec::new();
                let mut id = 1000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let insert = format!("INSERT INTO products VALUES ({id}, 'late')");
                    if mariadb_query(&address, "conpaas", &password, &insert).is_ok() {
                        acknowledged.push(id);
                        id += 1;
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
                acknowledged
            }
        });
        Self { stop, thread }
    }

    /// Stops inserting; the ids of the rows acknowledged.
    fn finish(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
