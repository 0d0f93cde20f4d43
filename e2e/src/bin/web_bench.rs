//! `conpaas-web-bench`: the web hosting numbers on the local cloud against a real control plane.
//! Not a test: it measures and prints.
//! - requests/s of a PHP page through a php Service's proxy with 1 and 3 backends, against
//!   nginx -> php-fpm configured by hand on the same machine (the ratio is what matters);
//! - time from scaling 1 -> 3 to the first request a new backend answers, and the requests that
//!   failed during 1 -> 3 and 3 -> 1;
//! - how long a mysql node takes to join a cluster holding a 100 MB database.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use conpaas_crds::v1alpha1::{Service, is_condition_true};
use conpaas_e2e::{ControlPlane, Controller, manifest, wait};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE: &str = "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: local}\nspec: {local: {}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: bench}\nspec: {cloud: local}\n";
/// A page with a little work in it, the same for both setups.
const PAGE: &str = "<?php $s = ''; for ($i = 0; $i < 2000; $i++) { $s .= md5((string) $i); } echo 'served by ', $_SERVER['SERVER_ADDR'], ' ', strlen($s);\n";
const CONNECTIONS: usize = 8;
const MEASURE: Duration = Duration::from_secs(15);
const LIMIT: Duration = Duration::from_secs(300);

/// Requests on fresh connections (as `ab` without keep-alive), counted until stopped.
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    responders: Mutex<BTreeSet<String>>,
}

impl Load {
    fn start(address: &str, port: u16) -> Arc<Load> {
        let load = Arc::new(Load {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            responders: Mutex::default(),
        });
        for _ in 0..CONNECTIONS {
            let (load, address) = (load.clone(), address.to_string());
            tokio::spawn(async move {
                while !load.stop.load(Ordering::Relaxed) {
                    match get(&address, port, "/index.php").await {
                        Ok(body) if body.contains("served by ") => {
                            load.ok.fetch_add(1, Ordering::Relaxed);
                            if let Some(by) = body.split("served by ").nth(1) {
                                let by = by.split(' ').next().unwrap_or_default().to_string();
                                load.responders.lock().unwrap().insert(by);
                            }
                        }
                        _ => {
                            load.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        load
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

async fn get(address: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect((address, port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        bail!("{}", text.lines().next().unwrap_or_default());
    }
    Ok(text)
}

/// Requests/s over [`MEASURE`].
async fn rate(address: &str, port: u16) -> (f64, u64) {
    let load = Load::start(address, port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok0, failed0) = load.counts();
    tokio::time::sleep(MEASURE).await;
    let (ok1, failed1) = load.counts();
    load.stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        (ok1 - ok0) as f64 / MEASURE.as_secs_f64(),
        failed1 - failed0,
    )
}

/// nginx -> php-fpm as one would configure them by hand, on 127.250.0.100:80.
async fn by_hand(dir: &Path) -> anyhow::Result<(f64, u64)> {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::write(dir.join("www/index.php"), PAGE)?;
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "user root;\ndaemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  server {{\n    listen 127.250.0.100:80;\n    root {d}/www;\n    location ~ \\.php$ {{\n      include /etc/nginx/fastcgi_params;\n      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n      fastcgi_pass unix:{d}/fpm.sock;\n    }}\n  }}\n}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("php-fpm.conf"),
        format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n[www]\nlisten = {d}/fpm.sock\nlisten.mode = 0666\npm = dynamic\npm.max_children = 16\npm.start_servers = 4\npm.min_spare_servers = 2\npm.max_spare_servers = 6\n"
        ),
    )?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    let fpm = std::fs::read_dir("/usr/sbin")?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("php-fpm"))
        })
        .context("php-fpm not installed")?;
    let mut fpm = tokio::process::Command::new(fpm)
        .args(["--nodaemonize", "--allow-to-run-as-root", "--fpm-config"])
        .arg(dir.join("php-fpm.conf"))
        .kill_on_drop(true)
        .spawn()?;
    let mut nginx = tokio::process::Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .kill_on_drop(true)
        .spawn()?;
    wait::until("nginx by hand", Duration::from_secs(20), || async {
        Ok(get("127.250.0.100", 80, "/index.php").await.is_ok())
    })
    .await?;
    let measured = rate("127.250.0.100", 80).await;
    // Both masters stop their workers on SIGQUIT.
    for child in [&mut nginx, &mut fpm] {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    Ok(measured)
}

fn php_service(backends: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "site"},
        "spec": {
            "application": "bench", "type": "php", "replicas": backends,
            "roles": [{"name": "proxy", "count": 1}],
            "drainSeconds": 3,
            "code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "site-code", "key": "code.tar"}}]}
        }
    })
}

async fn wait_ready(client: &kube::Client, name: &str, ready: &str) -> anyhow::Result<Service> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    wait::until(&format!("{name}: {ready}"), LIMIT, || {
        let api = api.clone();
        async move {
            let st = api.get(name).await?.status.unwrap_or_default();
            Ok(is_condition_true(&st.conditions, "Ready") && st.ready.as_deref() == Some(ready))
        }
    })
    .await?;
    Ok(api.get(name).await?)
}

async fn apply(client: &kube::Client, value: &serde_json::Value) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply("web-bench").force(),
        &Patch::Apply(value),
    )
    .await?;
    Ok(())
}

async fn through_conpaas(client: &kube::Client) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(PAGE.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "index.php", PAGE.as_bytes())?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("site-code".into()),
            ..Default::default()
        },
        binary_data: Some([("code.tar".to_string(), ByteString(tar.into_inner()?))].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await?;
    apply(client, &php_service(1)).await?;
    let site = wait_ready(client, "site", "proxy 1/1, web 0/0, backend 1/1").await?;
    let url = site.status.and_then(|s| s.url).context("status.url")?;
    let proxy = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (one, failed) = rate(&proxy, 80).await;
    println!("through the proxy, 1 backend: {one:.0} requests/s ({failed} failed)");

    let load = Load::start(&proxy, 80);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    apply(client, &php_service(3)).await?;
    let mut first_new = None;
    wait::until("3 backends answering", LIMIT, || {
        let load = load.clone();
        let seen = load.responders.lock().unwrap().len();
        if seen > 1 && first_new.is_none() {
            first_new = Some(asked.elapsed());
        }
        async move { Ok(seen == 3) }
    })
    .await?;
    wait_ready(client, "site", "proxy 1/1, web 0/0, backend 3/3").await?;
    let (_, failed_up) = load.counts();
    println!(
        "scale 1 -> 3: first request on a new backend {:.1}s after the patch, all 3 answering {:.1}s after; {failed_up} requests failed",
        first_new.unwrap_or_default().as_secs_f64(),
        asked.elapsed().as_secs_f64()
    );
    load.stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (three, failed) = rate(&proxy, 80).await;
    println!("through the proxy, 3 backends: {three:.0} requests/s ({failed} failed)");

    let load = Load::start(&proxy, 80);
    let asked = Instant::now();
    apply(client, &php_service(1)).await?;
    let nodes: Api<conpaas_crds::v1alpha1::ServiceNode> =
        Api::namespaced(client.clone(), "default");
    wait::until("two backends gone", LIMIT, || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&Default::default()).await?.items;
            Ok(list.iter().filter(|n| n.spec.role == "backend").count() == 1)
        }
    })
    .await?;
    load.stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed_down) = load.counts();
    println!(
        "scale 3 -> 1: drained and deleted {:.1}s after the patch; {ok} requests answered, {failed_down} failed",
        asked.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fills a one-node mysql Service with 100 MB, then adds a node and times its join.
async fn galera_join(client: &kube::Client) -> anyhow::Result<()> {
    let mysql = |nodes: i32| {
        serde_json::json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"application": "bench", "type": "mysql", "replicas": nodes}})
    };
    apply(client, &mysql(1)).await?;
    let db = wait_ready(client, "db", "mysql 1/1, glb 0/0").await?;
    let endpoint = db.status.and_then(|s| s.endpoint).context("endpoint")?;
    let (host, port) = endpoint.rsplit_once(':').context("host:port")?;
    let secret = Api::<Secret>::namespaced(client.clone(), "default")
        .get("db-mysql")
        .await?;
    let password = String::from_utf8(secret.data.context("data")?["password"].0.clone())?;
    let filled = Instant::now();
    // 100 rows of 1 MiB, one transaction each.
    let mut sql = String::from(
        "CREATE TABLE blobs (id INT AUTO_INCREMENT PRIMARY KEY, pad LONGBLOB) ENGINE=InnoDB;\n",
    );
    for _ in 0..100 {
        sql.push_str("INSERT INTO blobs (pad) VALUES (REPEAT('x', 1048576));\n");
    }
    let out = std::process::Command::new("mariadb")
        .args(["-h", host, "-P", port, "-uconpaas", "conpaas", "-e", &sql])
        .env("MYSQL_PWD", &password)
        .output()?;
    if !out.status.success() {
        bail!("fill: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "mysql: 100 MB written in {:.1}s",
        filled.elapsed().as_secs_f64()
    );
    let asked = Instant::now();
    apply(client, &mysql(2)).await?;
    wait_ready(client, "db", "mysql 2/2, glb 0/0").await?;
    println!(
        "mysql: a node joined a 100 MB cluster (mariabackup SST) {:.1}s after the patch",
        asked.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let hand = tempfile::tempdir()?;
    let (hand_rate, hand_failed) = by_hand(hand.path()).await?;
    println!("nginx -> php-fpm by hand: {hand_rate:.0} requests/s ({hand_failed} failed)");

    let cp = ControlPlane::start().await?;
    let state = tempfile::tempdir()?;
    let _controller = Controller::start(&cp, state.path(), 66)?;
    let client = cp.client().await?;
    manifest::apply(&client, BASE, "default").await?;
    through_conpaas(&client).await?;
    galera_join(&client).await?;
    Ok(())
}
