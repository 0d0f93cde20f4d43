//! php on Debian's nginx and php-fpm: the proxy balances over the backends, settings reach PHP,
//! the client's Host (port included) reaches the application, sessions survive the backend that
//! made them and their redis answers only the Service's password, and backends go 1 -> 3 -> 1
//! under a steady load without one failed request.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use conpaas_crds::v1alpha1::AgentState;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const INDEX: &str = "<?php echo 'v1 served by ', $_SERVER['SERVER_ADDR'];\n";
const INFO: &str = "<?php echo $_SERVER['HTTP_HOST'], ' ', ini_get('memory_limit'), ' ', getenv('CONPAAS_VM_ADDRESS') === false ? 'clean-env' : 'leaky-env';\n";
const COUNTER: &str =
    "<?php session_start(); $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1; echo $_SESSION['n'];\n";
const SLOW: &str = "<?php sleep(2); echo 'slow done';\n";

fn archive() -> Vec<u8> {
    let files = [
        ("index.php", INDEX),
        ("info.php", INFO),
        ("counter.php", COUNTER),
        ("slow.php", SLOW),
        ("hello.txt", "static hello\n"),
    ];
    tar_of(&files, 0o644)
}

fn service(backends: i32) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "site"},
        "spec": {
            "application": "demo", "type": "php",
            "roles": [{"name": "proxy", "count": 1}, {"name": "web", "count": 1}, {"name": "backend", "count": backends}],
            "settings": {"memory_limit": "256M"},
            "drainSeconds": 3,
            "code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "site-code", "key": "code.tar"}}]}
        }
    })
}

/// One HTTP/1.1 GET on a fresh connection: the status, body and headers.
async fn request(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, BTreeMap<String, String>)> {
    http_send(address, "GET", path, headers).await
}

/// The tail of every node's nginx error log, to show with a failure.
fn nginx_errors(env: &Env) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(env.state.path().join("vms"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let log = entry.path().join("work/logs/nginx-error.log");
        if let Ok(text) = std::fs::read_to_string(&log) {
            out.push_str(&format!("--- {} ---\n{}\n", log.display(), tail(&text, 10)));
        }
    }
    out
}

async fn create_code(env: &Env) {
    create_config_map(env, "site-code", "code.tar", archive()).await;
}

/// The site with one backend, Ready.
async fn start_site(env: &Env) {
    env.apply_cloud_and_app().await;
    create_code(env).await;
    env.apply(&serde_yaml::to_string(&service(1)).unwrap())
        .await;
    env.wait_ready("site", "proxy 1/1, web 1/1, backend 1/1")
        .await;
}

async fn scale(env: &Env, backends: i32) {
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch("site", &pp, &Patch::Apply(service(backends)))
        .await
        .unwrap();
}

/// The sessions' redis beside the proxy answers only those who give the password of the Secret
/// `<service>-php` (the Service's own nodes): anyone else who reaches its address could read
/// and forge every session.
async fn sessions_need_the_services_password(env: &Env, proxy: &str) {
    let address = proxy.rsplit_once(':').map_or(proxy, |(host, _)| host);
    let mut outsider = redis::Client::open(format!("redis://{address}:6379/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let refused = redis::cmd("KEYS")
        .arg("*")
        .query::<Vec<String>>(&mut outsider)
        .unwrap_err();
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let data = secrets
        .get(&conpaas_crds::types::php::secret_name("site"))
        .await
        .unwrap()
        .data
        .unwrap();
    let password = String::from_utf8(data["password"].0.clone()).unwrap();
    assert_eq!(password.len(), 32, "a random password");
    let mut node = redis::Client::open(format!("redis://:{password}@{address}:6379/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let sessions: Vec<String> = redis::cmd("KEYS")
        .arg("PHPREDIS_SESSION:*")
        .query(&mut node)
        .unwrap();
    assert_eq!(sessions.len(), 1, "the session made above: {sessions:?}");
}

/// The backends the proxy reports it routes to.
async fn routed(env: &Env) -> Vec<String> {
    env.nodes("site")
        .await
        .into_iter()
        .find(|n| n.spec.role == "proxy")
        .and_then(|n| n.status?.agent?.routes_to)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn php_scales_its_backends_under_load_without_a_failed_request() {
    // VMs are powered off as EC2 terminates them: only the drain protects requests in flight.
    let env = env_with("php-e2e", 60, &[("CONPAAS_LOCAL_STOP_GRACE_SECONDS", "0")]).await;
    start_site(&env).await;

    let proxy = env.url_host("site").await;
    let (status, body, _) = request(&proxy, "/index.php", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v1 served by "), "{body}");
    let (_, body, _) = request(&proxy, "/hello.txt", &[]).await.unwrap();
    assert_eq!(body, "static hello\n");
    // The web node serves the static files, never a PHP source.
    let web = env
        .nodes("site")
        .await
        .into_iter()
        .find(|n| n.spec.role == "web")
        .and_then(|n| n.status?.address)
        .expect("the web node's address");
    assert_eq!(
        http_get_path(&web, 8080, "/hello.txt").await.unwrap(),
        "static hello\n"
    );
    assert!(
        !http_get_path(&web, 8080, "/index.php")
            .await
            .unwrap()
            .contains("<?php"),
        "a web node never serves PHP sources"
    );
    let (status, _, _) = request(&proxy, "/missing.php", &[]).await.unwrap();
    assert_eq!(status, 404);
    // The Host the client used, port included; the memory_limit setting; no agent environment.
    let (_, body, _) = request(&proxy, "/info.php", &[("host", "shop.example:8081")])
        .await
        .unwrap();
    assert_eq!(body, "shop.example:8081 256M clean-env");

    // A session, kept in the redis beside the proxy.
    let (_, first, headers) = request(&proxy, "/counter.php", &[]).await.unwrap();
    assert_eq!(first, "1");
    let cookie = headers
        .get("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let (_, second, _) = request(&proxy, "/counter.php", &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(second, "2");
    sessions_need_the_services_password(&env, &proxy).await;

    let load = Load::start(proxy.clone(), 4, &["/index.php", "/slow.php"]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1 -> 3: the new backends take requests once ready.
    let asked = Instant::now();
    scale(&env, 3).await;
    conpaas_e2e::wait::until("3 backends answering", LIMIT, || {
        let load = load.clone();
        async move { Ok(load.responders().len() == 3) }
    })
    .await
    .unwrap();
    println!(
        "scale 1 -> 3: new backends took requests {:.1}s after the patch",
        asked.elapsed().as_secs_f64()
    );
    env.wait_ready("site", "proxy 1/1, web 1/1, backend 3/3")
        .await;
    assert_eq!(routed(&env).await.len(), 4);

    // 3 -> 1: two backends drain and go; requests in flight finish.
    let asked = Instant::now();
    scale(&env, 1).await;
    env.wait_role_count("site", "backend", 1).await;
    println!(
        "scale 3 -> 1: drained and deleted {:.1}s after the patch",
        asked.elapsed().as_secs_f64()
    );
    env.wait_ready("site", "proxy 1/1, web 1/1, backend 1/1")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish_without_failures("under load", 50, &nginx_errors(&env))
        .await;

    // The session outlives the backends that served it.
    let (_, third, _) = request(&proxy, "/counter.php", &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(third, "3");

    // The tenant changes the sessions' password: the redis asks for the new one and the
    // backends give it (the sessions kept under the old one are gone with it).
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let rotated = "a-new-sessions-password-0123456789";
    secrets
        .patch(
            &conpaas_crds::types::php::secret_name("site"),
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": rotated}})),
        )
        .await
        .unwrap();
    let address = proxy
        .rsplit_once(':')
        .map_or(proxy.as_str(), |(host, _)| host);
    conpaas_e2e::wait::until("the redis asking for the new password", LIMIT, || async {
        Ok(
            redis::Client::open(format!("redis://:{rotated}@{address}:6379/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok(),
        )
    })
    .await
    .unwrap();
    conpaas_e2e::wait::until("a session kept under the new password", LIMIT, || async {
        let Ok((_, first, headers)) = request(&proxy, "/counter.php", &[]).await else {
            return Ok(false);
        };
        let Some(cookie) = headers
            .get("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
        else {
            return Ok(false);
        };
        let second = request(&proxy, "/counter.php", &[("cookie", &cookie)]).await;
        Ok(first == "1" && second.is_ok_and(|(_, body, _)| body == "2"))
    })
    .await
    .unwrap();

    // The nodes left all serve.
    let left = env.nodes("site").await;
    assert!(left.iter().all(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.agent.as_ref())
            .and_then(|a| a.state)
            == Some(AgentState::Ready)
    }));

    // Deleting the Service stops every daemon.
    delete_and_expect_nothing_running(&env, &["site"]).await;
}

/// With the local cloud's state folder under a parent only root may enter (root's home, any
/// `mktemp -d`), www-data cannot reach the code: the workers run as the agent's own user and
/// every page is served. The nodes were Ready only once their nginx served the active version.
#[tokio::test(flavor = "multi_thread")]
async fn php_serves_its_code_from_a_folder_only_root_may_enter() {
    use std::os::unix::fs::PermissionsExt;
    let env = env("php-closed-e2e", 41).await;
    std::fs::set_permissions(env.state.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    start_site(&env).await;
    let proxy = env.url_host("site").await;
    for path in ["/", "/index.php"] {
        let (status, body, _) = request(&proxy, path, &[]).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}\n{}", nginx_errors(&env));
        assert!(body.starts_with("v1 served by "), "{path}: {body}");
    }
    let (status, body, _) = request(&proxy, "/hello.txt", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "static hello\n"));
    delete_and_expect_nothing_running(&env, &["site"]).await;
}
