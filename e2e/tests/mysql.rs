//! mysql on Debian's MariaDB with Galera behind a glb (haproxy), linked to a php Service: the
//! credentials Secret is made once, the link follows the endpoint to the glb, the php backends
//! see the link's environment, a PHP application writes and reads rows through it, the rows
//! outlive a scale of the php tier and of the database (through the glb), the password rotates
//! under writes without a failed request, and deleting both leaves nothing running.

mod common;

use common::*;
use conpaas_e2e::tools::{cpsctl, run};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const ROWS: &str = r#"<?php
$db = new mysqli(getenv('DB_HOST'), getenv('DB_USER'), getenv('DB_PASSWORD'), getenv('DB_DATABASE'), (int) getenv('DB_PORT'));
// Made once: in Galera a DDL statement (even a CREATE TABLE IF NOT EXISTS of a table that
// exists) aborts the transactions it meets, so one per request fails concurrent INSERTs with
// "Deadlock found".
if (!$db->query("SHOW TABLES LIKE 'notes'")->num_rows) {
    $db->query('CREATE TABLE IF NOT EXISTS notes (id INT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(64))');
}
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $db->query("INSERT INTO notes (text) VALUES ('" . $db->real_escape_string($_GET['text'] ?? '') . "')");
}
echo $db->query('SELECT COUNT(*) FROM notes')->fetch_row()[0];
"#;
static WRITES_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const URL: &str = "<?php echo preg_replace('/:[^:@]*@/', ':***@', getenv('DB_URL'));\n";

fn archive() -> Vec<u8> {
    tar_of(&[("rows.php", ROWS), ("url.php", URL)], 0o644)
}

fn site(backends: i32) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "site"},
        "spec": {
            "application": "demo", "type": "php",
            "roles": [{"name": "proxy", "count": 1}, {"name": "backend", "count": backends}],
            "links": [{"service": "db", "as": "DB"}],
            // A failed request shows PHP's message.
            "settings": {"display_errors": "On"},
            "code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "site-code", "key": "code.tar"}}]}
        }
    })
}

/// The database's settings: the previous user works for 10 s after a rotation.
fn db_settings() -> serde_json::Value {
    json!({"database": "shop", "previous_user_seconds": "10"})
}

/// What a failed request says, shortened: PHP's exception message, else the status.
fn failure_kind(status: u16, body: &str) -> String {
    match body.split_once("Uncaught ") {
        Some((_, rest)) => rest.split(" in ").next().unwrap_or(rest).to_string(),
        None => format!(
            "HTTP {status}: {}",
            body.chars().take(120).collect::<String>()
        ),
    }
}

/// A request on a fresh connection to the proxy: the status and body (status 0 and the error
/// when the connection failed).
/// A generic Service linked to the database as `DB` gets the same variables as php (a link's
/// environment is built in one place for every type that runs user code): its init.sh logs in
/// with them and asks for the database, and its `DB_URL` names the glb.
async fn generic_reaches_the_database_through_its_link(env: &Env, endpoint: &str) {
    let init = "mariadb -h \"$DB_HOST\" -P \"$DB_PORT\" -u \"$DB_USER\" -p\"$DB_PASSWORD\" -N -e 'SELECT DATABASE()' \"$DB_DATABASE\" > ../../db.txt 2>&1\n\
                echo \"$DB_URL\" | sed 's/:[^:@]*@/:***@/' > ../../url.txt\n";
    create_config_map(
        env,
        "job-code",
        "code.tar",
        tar_of(&[("init.sh", init)], 0o755),
    )
    .await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: job}\nspec: {application: demo, type: generic, links: [{service: db, as: DB}], code: {active: v1, versions: [{name: v1, configMap: {name: job-code, key: code.tar}}]}}\n")
        .await;
    env.wait_ready("job", "master 1/1, node 0/0").await;
    let token = env.nodes("job").await[0].spec.token.clone();
    let work = env.state.path().join("vms").join(token).join("work");
    conpaas_e2e::wait::until("init.sh asked the linked database", LIMIT, || {
        let work = work.clone();
        async move {
            let db = std::fs::read_to_string(work.join("db.txt")).unwrap_or_default();
            let url = std::fs::read_to_string(work.join("url.txt")).unwrap_or_default();
            Ok(db.trim() == "shop" && !url.is_empty())
        }
    })
    .await
    .unwrap_or_else(|e| {
        let db = std::fs::read_to_string(work.join("db.txt")).unwrap_or_default();
        panic!("{e}: init.sh wrote {db:?}")
    });
    let url = std::fs::read_to_string(work.join("url.txt")).unwrap();
    assert_eq!(url.trim(), format!("mysql://conpaas:***@{endpoint}/shop"));
    env.services()
        .delete("job", &Default::default())
        .await
        .unwrap();
}

async fn call(proxy: &str, method: &str, path: &str) -> (u16, String) {
    match http_send(proxy, method, path, &[]).await {
        Ok((status, body, _)) => (status, body),
        Err(e) => (0, format!("{e:#}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn php_writes_and_reads_rows_through_a_link_to_mysql() {
    let env = env("mysql-e2e", 61).await;
    env.apply_cloud_and_app().await;
    create_config_map(&env, "site-code", "code.tar", archive()).await;

    // The php Service first: it waits for the database's endpoint rather than failing.
    env.apply(&serde_yaml::to_string(&site(1)).unwrap()).await;
    env.wait_service("site", "site waiting for its link", |s| {
        let status = s.status.clone().unwrap_or_default();
        !conpaas_crds::v1alpha1::is_condition_true(&status.conditions, "Ready")
            && !conpaas_crds::v1alpha1::is_condition_true(&status.conditions, "Stalled")
    })
    .await;
    // With a glb: clients connect through haproxy.
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: db}\nspec: {application: demo, type: mysql, roles: [{name: glb, count: 1}], settings: {database: shop, previous_user_seconds: \"10\"}}\n")
        .await;
    env.wait_ready("db", "mysql 1/1, glb 1/1").await;
    let glb = env
        .nodes("db")
        .await
        .into_iter()
        .find(|n| n.spec.role == "glb")
        .and_then(|n| n.status?.address)
        .expect("the glb's address");
    let endpoint = format!("{glb}:3306");
    conpaas_e2e::wait::until("the endpoint on the glb", LIMIT, || {
        let (env, endpoint) = (&env, &endpoint);
        async move {
            let db = env.services().get("db").await?;
            Ok(db.status.and_then(|s| s.endpoint).as_ref() == Some(endpoint))
        }
    })
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret = secrets
        .get("db-mysql")
        .await
        .expect("the credentials Secret");
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("username").map(|v| v.0.as_slice()),
        Some(&b"conpaas"[..])
    );
    assert!(data.get("password").is_some_and(|v| v.0.len() >= 16));

    env.wait_ready("site", "proxy 1/1, web 0/0, backend 1/1")
        .await;
    generic_reaches_the_database_through_its_link(&env, &endpoint).await;
    let proxy = env.url_host("site").await;
    conpaas_e2e::wait::until("the link's URL on the glb", LIMIT, || {
        let (proxy, endpoint) = (&proxy, &endpoint);
        async move {
            let (_, url) = call(proxy, "GET", "/url.php").await;
            Ok(url == format!("mysql://conpaas:***@{endpoint}/shop"))
        }
    })
    .await
    .unwrap();

    // Rows written through the link are there, also after the php tier scaled.
    for i in 1..=10 {
        let (status, count) = call(&proxy, "POST", &format!("/rows.php?text=note{i}")).await;
        assert_eq!((status, count), (200, i.to_string()));
    }
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch("site", &pp, &Patch::Apply(site(2)))
        .await
        .unwrap();
    env.wait_ready("site", "proxy 1/1, web 0/0, backend 2/2")
        .await;
    for _ in 0..4 {
        assert_eq!(call(&proxy, "GET", "/rows.php").await, (200, "10".into()));
    }

    // The database grows to three Galera nodes and back to two under writes: the joiners get
    // the data by state transfer, the leaver goes cleanly, no write fails or is lost.
    let writer = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let (mut acknowledged, mut unanswered) = (10u64, 0u64);
            // Each kind of failure: how often, first and last second after the start.
            let mut failures = std::collections::BTreeMap::<String, (u64, u64, u64)>::new();
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(600) {
                let (status, count) = call(&proxy, "POST", "/rows.php?text=more").await;
                if status == 200 && count.parse::<u64>().is_ok() {
                    acknowledged += 1;
                } else {
                    unanswered += 1;
                    let kind = failure_kind(status, &count);
                    let at = start.elapsed().as_secs();
                    let entry = failures.entry(kind).or_insert((0, at, at));
                    entry.0 += 1;
                    entry.2 = at;
                }
                if WRITES_DONE.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            for (kind, (count, first, last)) in failures {
                println!("failed writes: {count} x {kind} (from {first}s to {last}s)");
            }
            (acknowledged, unanswered)
        })
    };
    let scale_db = |count: i32| {
        json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"application": "demo", "type": "mysql", "replicas": count, "roles": [{"name": "glb", "count": 1}], "settings": db_settings()}})
    };
    let joined = std::time::Instant::now();
    env.services()
        .patch("db", &pp, &Patch::Apply(scale_db(3)))
        .await
        .unwrap();
    env.wait_ready("db", "mysql 3/3, glb 1/1").await;
    println!(
        "mysql 1 -> 3 under writes: {:.1}s",
        joined.elapsed().as_secs_f64()
    );
    env.services()
        .patch("db", &pp, &Patch::Apply(scale_db(2)))
        .await
        .unwrap();
    env.wait_ready("db", "mysql 2/2, glb 1/1").await;
    conpaas_e2e::wait::until("the third node gone", LIMIT, || {
        let env = &env;
        async move {
            let nodes = env.nodes("db").await;
            Ok(nodes.iter().filter(|n| n.spec.role == "mysql").count() == 2)
        }
    })
    .await
    .unwrap();
    WRITES_DONE.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, unanswered) = writer.await.unwrap();
    let (_, count) = call(&proxy, "GET", "/rows.php").await;
    println!("rows acknowledged {acknowledged}, unanswered {unanswered}, in the database {count}");
    // The donor keeps serving through the glb while a node joins, and a leaver leaves the glb
    // before it shuts down: no write fails, and every one is there.
    assert_eq!(unanswered, 0, "failed writes while the database scaled");
    assert_eq!(
        count,
        acknowledged.to_string(),
        "every acknowledged row is there"
    );
    // The joiner has them too.
    let (user, password) = mysql_credentials(&env, "db").await;
    let mysql_nodes: Vec<String> = env
        .nodes("db")
        .await
        .into_iter()
        .filter(|n| n.spec.role == "mysql")
        .filter_map(|n| n.status?.address)
        .collect();
    for address in &mysql_nodes {
        let rows = mariadb_query(address, &user, &password, "SELECT COUNT(*) FROM notes");
        assert_eq!(rows.as_deref(), Ok(count.as_str()), "rows on {address}");
    }

    // The password rotates under writes (ConPaaS' set_password): the nodes take the new user,
    // the php backends switch to it, the previous one is locked 10 s later, and no request
    // fails on the way.
    let row_count = |body: &str| body.parse::<u64>().is_ok();
    let load = Load::start_checked(proxy.clone(), 4, &["/rows.php?text=rotating"], row_count);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let rotated = std::time::Instant::now();
    let kubeconfig = &env.cp.kubeconfig;
    let args = ["-n", env.ns.as_str(), "mysql", "password", "db", "--wait"];
    run(&cpsctl(), &args, kubeconfig, None)
        .expect("cpsctl")
        .ok();
    println!(
        "password rotation: every mysql node accepts it after {:.1}s",
        rotated.elapsed().as_secs_f64()
    );
    let (new_user, new_password) = mysql_credentials(&env, "db").await;
    assert_eq!(new_user, "conpaas_2");
    assert_ne!(new_password, password);
    conpaas_e2e::wait::until("the backends on the new user", LIMIT, || {
        let (proxy, endpoint) = (&proxy, &endpoint);
        async move {
            let (_, url) = call(proxy, "GET", "/url.php").await;
            Ok(url == format!("mysql://conpaas_2:***@{endpoint}/shop"))
        }
    })
    .await
    .unwrap();
    println!(
        "password rotation: the backends use it after {:.1}s",
        rotated.elapsed().as_secs_f64()
    );
    // The previous user is locked on every node once its 10 s are over (the backends switched
    // well before), and no write failed on the way.
    for address in &mysql_nodes {
        let locked = conpaas_e2e::wait::until("the previous user locked", LIMIT, || async {
            let old = mariadb_query(address, &user, &password, "SELECT 1");
            Ok(old.as_ref().is_err_and(|e| e.contains("locked")))
        })
        .await;
        let old = mariadb_query(address, &user, &password, "SELECT 1");
        assert!(locked.is_ok(), "the previous user on {address}: {old:?}");
    }
    let locked_after = rotated.elapsed();
    load.finish_without_failures("writes while the password rotated", 20, "")
        .await;
    assert!(
        locked_after >= std::time::Duration::from_secs(10),
        "the previous user worked for its 10 s ({locked_after:?})"
    );
    for address in &mysql_nodes {
        let new = mariadb_query(
            address,
            &new_user,
            &new_password,
            "SELECT COUNT(*) > 10 FROM notes",
        );
        assert_eq!(new.as_deref(), Ok("1"), "the new user on {address}");
    }

    // Deleting both leaves no daemon running.
    delete_and_expect_nothing_running(&env, &["site", "db"]).await;
}
