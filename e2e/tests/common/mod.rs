//! What every scenario needs: a control plane, a controller, a namespace, and readers of the
//! resources that tests assert on.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use conpaas_crds::v1alpha1::{Service, ServiceNode, is_condition_true};
use conpaas_e2e::{ControlPlane, Controller, wait};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// The helloworld example, read when the tests run (cargo runs them in the package folder) so a
/// test binary compiled in another checkout never applies that checkout's copy.
pub static EXAMPLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::fs::read_to_string("../manifests/examples/helloworld.yaml")
        .expect("manifests/examples/helloworld.yaml")
});
pub const LIMIT: Duration = Duration::from_secs(120);

pub struct Env {
    pub client: Client,
    pub ns: String,
    pub controller: Controller,
    pub state: tempfile::TempDir,
    pub cp: ControlPlane,
}

/// A control plane, a controller with local cloud subnet `subnet`, and namespace `ns`.
pub async fn env(ns: &str, subnet: u8) -> Env {
    env_with(ns, subnet, &[]).await
}

/// Like [`env`], with extra controller environment variables.
pub async fn env_with(ns: &str, subnet: u8, vars: &[(&str, &str)]) -> Env {
    env_with_apiserver(ns, subnet, vars, &[]).await
}

/// Like [`env_with`], with extra kube-apiserver flags.
pub async fn env_with_apiserver(
    ns: &str,
    subnet: u8,
    vars: &[(&str, &str)],
    apiserver_flags: &[String],
) -> Env {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let cp = ControlPlane::start_with(apiserver_flags)
        .await
        .expect("control plane");
    let state = tempfile::tempdir().expect("state folder");
    let controller = Controller::start_with(&cp, state.path(), subnet, vars).expect("controller");
    let client = cp.client().await.expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    Env {
        client,
        ns: ns.into(),
        controller,
        state,
        cp,
    }
}

impl Env {
    /// Reconciles the controller finished so far, by kind, from its `/metrics`.
    pub async fn reconciles(&self) -> std::collections::BTreeMap<String, u64> {
        let address = self.controller.http_address;
        let text = http_get_path(&address.ip().to_string(), address.port(), "/metrics")
            .await
            .expect("the controller's /metrics");
        text.lines()
            .filter_map(|l| l.strip_prefix("conpaas_reconciles_total{kind=\""))
            .filter_map(|l| {
                let (kind, rest) = l.split_once("\"}")?;
                Some((kind.to_string(), rest.trim().parse().ok()?))
            })
            .collect()
    }

    /// Touches an annotation of `object` and waits until the controller finished a reconcile
    /// of its kind after that: the observed event a "nothing happens" assertion follows.
    pub async fn poke_and_wait_reconciled<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let kind = K::kind(&()).to_string();
        let before = self.reconciles().await.get(&kind).copied().unwrap_or(0);
        let poke =
            serde_json::json!({"metadata": {"annotations": {"e2e.conpaas.io/poke": next_poke()}}});
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&poke),
        )
        .await
        .expect("poke");
        wait::until(
            &format!("{kind} {name} reconciled after a poke"),
            LIMIT,
            || async { Ok(self.reconciles().await.get(&kind).copied().unwrap_or(0) > before) },
        )
        .await
        .unwrap();
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn nodes_api(&self) -> Api<ServiceNode> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn apply(&self, yaml: &str) {
        conpaas_e2e::manifest::apply(&self.client, yaml, &self.ns)
            .await
            .expect("apply manifest");
    }

    pub async fn nodes(&self, service: &str) -> Vec<ServiceNode> {
        let lp = ListParams::default().labels(&format!("conpaas.io/service={service}"));
        self.nodes_api().list(&lp).await.expect("list nodes").items
    }

    /// Applies the example's Cloud and Application, without its Service.
    /// The chart's admission policies, rendered by helm, for a controller running as `admin`
    /// (as the test's controller does): the policies exempt the controller's name.
    pub async fn apply_admission_policies(&self) {
        use conpaas_e2e::tools::{helm, repo_root, run};
        let rendered = run(
            &helm(),
            &[
                "template",
                "conpaas",
                repo_root().join("charts/conpaas").to_str().unwrap(),
                "--namespace",
                "conpaas",
                "--show-only",
                "templates/admission.yaml",
            ],
            &self.cp.kubeconfig,
            None,
        )
        .unwrap()
        .ok()
        .stdout
        .replace("system:serviceaccount:conpaas:conpaas", "admin");
        self.apply(&rendered).await;
    }

    pub async fn apply_cloud_and_app(&self) {
        self.apply(&EXAMPLE.split("---").take(2).collect::<Vec<_>>().join("---"))
            .await;
    }

    /// `host` of the Service's `status.url` (`http://host/`).
    pub async fn url_host(&self, service: &str) -> String {
        self.services()
            .get(service)
            .await
            .unwrap()
            .status
            .and_then(|s| s.url)
            .expect("status.url")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// Waits until `service` has `count` nodes of `role` (the others drained and deleted).
    pub async fn wait_role_count(&self, service: &str, role: &str, count: usize) {
        wait::until(
            &format!("{count} {role} nodes of {service}"),
            LIMIT,
            || async move {
                let nodes = self.nodes(service).await;
                Ok(nodes.iter().filter(|n| n.spec.role == role).count() == count)
            },
        )
        .await
        .unwrap();
    }

    /// Waits for an Event with `reason` in `namespace`, about the object `regarding` if given.
    pub async fn wait_event(&self, namespace: &str, reason: &str, regarding: Option<&str>) {
        self.wait_event_where(namespace, reason, |e| {
            regarding.is_none_or(|name| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
        })
        .await;
    }

    /// Waits for an Event with `reason` in `namespace` that `matches`.
    pub async fn wait_event_where(
        &self,
        namespace: &str,
        reason: &str,
        matches: impl Fn(&k8s_openapi::api::events::v1::Event) -> bool,
    ) {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), namespace);
        wait::until(&format!("a {reason} event"), LIMIT, || {
            let events = events.clone();
            let matches = &matches;
            async move {
                Ok(events
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some(reason) && matches(e)))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.controller.log()));
    }

    /// Applies (creates or scales) the example's helloworld Service `hello` with `count` nodes.
    pub async fn scale_hello(&self, count: i32) {
        let spec = serde_json::json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
            "metadata": {"name": "hello"},
            "spec": {"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": count}]}});
        let pp = kube::api::PatchParams::apply("conpaas-e2e").force();
        self.services()
            .patch("hello", &pp, &kube::api::Patch::Apply(spec))
            .await
            .expect("scale hello");
    }

    /// Waits until the Service is Ready for its current generation and `ready` reads as given.
    /// The last `lines` lines of the agent log of each node of `service`.
    pub async fn agent_logs(&self, service: &str, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes(service).await {
            let log = self
                .state
                .path()
                .join("vms")
                .join(&node.spec.token)
                .join("agent.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            out += &format!("== {:?}\n{}\n", node.metadata.name, tail(&text, lines));
        }
        out
    }

    /// Waits until `service` has `count` nodes again, `gone` not among them (it was replaced).
    pub async fn wait_replaced(
        &self,
        service: &str,
        gone: &ServiceNode,
        count: usize,
    ) -> anyhow::Result<()> {
        let what = format!(
            "{} replaced",
            gone.metadata.name.as_deref().unwrap_or_default()
        );
        wait::until(&what, LIMIT, || async {
            let nodes = self.nodes(service).await;
            Ok(nodes.len() == count && nodes.iter().all(|n| n.metadata.uid != gone.metadata.uid))
        })
        .await
    }

    /// Waits until the agent of some node in the namespace reports a message `said` accepts
    /// (a restore under way, before a test stops the Service in the middle of it).
    pub async fn wait_agent_saying(&self, what: &str, said: impl Fn(&str) -> bool) {
        let nodes = self.nodes_api();
        wait::until(what, 2 * LIMIT, || {
            let nodes = nodes.clone();
            let said = &said;
            async move {
                Ok(nodes
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .any(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.agent.as_ref())
                            .and_then(|a| a.message.as_deref())
                            .is_some_and(said)
                    }))
            }
        })
        .await
        .unwrap();
    }

    pub async fn wait_ready(&self, service: &str, ready: &str) {
        let api = self.services();
        let result = wait::until(
            &format!("service {service} Ready with {ready}"),
            LIMIT,
            || {
                let api = api.clone();
                async move {
                    let s = api.get(service).await?;
                    let status = s.status.unwrap_or_default();
                    Ok(status.observed_generation == s.metadata.generation
                        && is_condition_true(&status.conditions, "Ready")
                        && status.ready.as_deref() == Some(ready))
                }
            },
        )
        .await;
        if let Err(e) = result {
            let status = api.get(service).await.ok().and_then(|s| s.status);
            let mut agent_logs = self.agent_logs(service, 20).await;
            // A terminated VM's agent log is kept under `logs/` by the local cloud.
            for gone in std::fs::read_dir(self.state.path().join("logs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = std::fs::read_to_string(gone.path()).unwrap_or_default();
                agent_logs += &format!(
                    "== terminated {}\n{}\n",
                    gone.path().display(),
                    tail(&text, 20)
                );
            }
            let nodes: Vec<_> = self
                .nodes(service)
                .await
                .into_iter()
                .map(|n| (n.metadata.name, n.status.and_then(|s| s.agent)))
                .collect();
            panic!(
                "{e:#}\n--- status ---\n{status:?}\n--- nodes' agents ---\n{nodes:?}\n--- controller log (tail) ---\n{}\n--- the nodes' agent logs (tails) ---\n{agent_logs}\n--- the VMs' daemon logs (tails) ---\n{}",
                tail(&self.controller.log(), 60),
                vm_logs(self.state.path())
            );
        }
    }

    /// Waits until `check` holds for the Service.
    pub async fn wait_service(&self, service: &str, what: &str, check: impl Fn(&Service) -> bool) {
        let api = self.services();
        let result = wait::until(what, LIMIT, || {
            let api = api.clone();
            let check = &check;
            async move { Ok(check(&api.get(service).await?)) }
        })
        .await;
        if let Err(e) = result {
            panic!(
                "{e:#}\n--- controller log (tail) ---\n{}\n--- the VMs' daemon logs (tails) ---\n{}",
                tail(&self.controller.log(), 60),
                vm_logs(self.state.path())
            );
        }
    }

    /// Waits until the API server routes the code API (code.conpaas.io) to the controller.
    #[allow(dead_code)]
    pub async fn wait_code_api(&self) {
        use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
        let api: Api<APIService> = Api::all(self.client.clone());
        wait::until("the code API to be available", LIMIT, || {
            let api = api.clone();
            async move {
                let found = api.get_opt(conpaas_crds::code_api::API_SERVICE).await?;
                Ok(found
                    .and_then(|a| a.status)
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True"))
            }
        })
        .await
        .unwrap();
    }

    /// Waits until the Service object is gone.
    pub async fn wait_gone(&self, service: &str) {
        let api = self.services();
        wait::until(&format!("service {service} to be gone"), LIMIT, || {
            let api = api.clone();
            async move { Ok(api.get_opt(service).await?.is_none()) }
        })
        .await
        .expect("service deleted");
    }

    /// Local VM processes that are alive.
    pub fn live_vms(&self) -> Vec<i32> {
        self.controller
            .vm_pids()
            .into_iter()
            .filter(|pid| alive(*pid))
            .collect()
    }

    /// The live agent of the VM whose token (its id) is `token`: its command line names the
    /// VM's folder.
    pub fn agent_of(&self, token: &str) -> Option<i32> {
        self.live_vms().into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(token))
        })
    }
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The last lines of every log the local cloud's VMs keep (the agent's daemons write
/// `work/logs/*`, MariaDB's state transfers `work/mysql/data/mariabackup.*.log`): what a
/// failed test needs to say why a daemon did not come up, as the VMs are gone afterwards.
pub fn vm_logs(state: &std::path::Path) -> String {
    let mut out = String::new();
    let vms = std::fs::read_dir(state.join("vms"))
        .into_iter()
        .flatten()
        .flatten();
    for vm in vms {
        let work = vm.path().join("work");
        let folders = [work.join("logs"), work.join("mysql/data")];
        for entry in folders
            .iter()
            .flat_map(std::fs::read_dir)
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !(name.ends_with(".log") || name.ends_with(".out")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out += &format!("== {}\n{}\n", path.display(), tail(&text, 15));
        }
    }
    out
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// GETs `http://address:port/` and returns the body.
pub async fn http_get(address: &str, port: u16) -> anyhow::Result<String> {
    http_get_path(address, port, "/").await
}

/// GETs `http://address:port<path>` and returns the body.
pub async fn http_get_path(address: &str, port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((address, port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

/// Waits until the generic node's run.sh says it runs `version`: the tests' scripts write it to
/// `running.txt` in the agent's work folder.
pub async fn wait_running(env: &Env, node: &ServiceNode, version: &str) {
    let path = env
        .state
        .path()
        .join("vms")
        .join(&node.spec.token)
        .join("work/running.txt");
    wait::until(&format!("the node to run {version}"), LIMIT, || {
        let path = path.clone();
        async move { Ok(std::fs::read_to_string(path).is_ok_and(|t| t.trim() == version)) }
    })
    .await
    .unwrap();
}

/// Whether any process still runs with a command line naming a path under `dir` (daemons a
/// node's agent started: their configuration lives in the node's folder).
pub fn daemons_running_under(dir: &std::path::Path) -> bool {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
}

/// A tar archive of `files` (name, contents), each with `mode`.
pub fn tar_of(files: &[(&str, &str)], mode: u32) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        builder
            .append_data(&mut header, name, body.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// A zip archive (a `.war`) of `files` (name, contents).
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(body).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Creates the ConfigMap `name` holding `bytes` under `key` (a code version's archive).
pub async fn create_config_map(env: &Env, name: &str, key: &str, bytes: Vec<u8>) {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        binary_data: Some([(key.to_string(), ByteString(bytes))].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
}

/// One HTTP/1.1 request to port 80 on a fresh connection (a POST has an empty body): the status,
/// body and headers.
pub async fn http_send(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, std::collections::BTreeMap<String, String>)> {
    http_request(address, method, path, headers, b"").await
}

/// One HTTP/1.1 request with `body` to port 80 on a fresh connection: the status, body
/// (de-chunked) and headers.
pub async fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String, std::collections::BTreeMap<String, String>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((address, 80)).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if !headers.iter().any(|(k, _)| *k == "host") {
        head.push_str(&format!("host: {address}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow::anyhow!("no header end in {:?}", String::from_utf8_lossy(&response))
        })?;
    let top = String::from_utf8_lossy(&response[..end]).into_owned();
    let body = &response[end + 4..];
    let mut lines = top.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {top:?}"))?;
    let headers: std::collections::BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned(), headers))
}

/// The payload of a chunked body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("a chunk without its size line"))?;
        let line = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        let rest = &body[line_end + 2..];
        let chunk = rest
            .get(..size)
            .ok_or_else(|| anyhow::anyhow!("a chunk shorter than its size"))?;
        out.extend_from_slice(chunk);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
}

/// Deletes `services`, waits until they and every VM are gone, and checks that no daemon any
/// node started (its configuration lives in the node's folder) still runs.
pub async fn delete_and_expect_nothing_running(env: &Env, services: &[&str]) {
    for name in services {
        env.services()
            .delete(name, &Default::default())
            .await
            .unwrap();
        env.wait_gone(name).await;
    }
    wait::until("no VM left", LIMIT, || async {
        Ok(env.live_vms().is_empty())
    })
    .await
    .unwrap();
    assert!(
        !daemons_running_under(env.state.path()),
        "a daemon of a deleted node still runs"
    );
}

/// POSTs to the proxy until stopped, `workers` at a time spread over `paths`; counts answers and
/// failures (anything but 200), and which backends answered (what follows `served by ` in a
/// body).
pub struct Load {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub stop: AtomicBool,
    responders: std::sync::Mutex<BTreeSet<String>>,
    pub failures: std::sync::Mutex<Vec<String>>,
}

impl Load {
    pub fn start(address: String, workers: usize, paths: &[&str]) -> Arc<Load> {
        Self::start_checked(address, workers, paths, |_| true)
    }

    /// As [`Load::start`], with a 200 whose body fails `check` counted as failed (a PHP error
    /// shown with `display_errors` on comes with a 200).
    pub fn start_checked(
        address: String,
        workers: usize,
        paths: &[&str],
        check: fn(&str) -> bool,
    ) -> Arc<Load> {
        let load = Arc::new(Load {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            responders: Default::default(),
            failures: Default::default(),
        });
        for i in 0..workers {
            let load = load.clone();
            let address = address.clone();
            // POSTs, which a proxy may not retry on another backend once sent (they are not
            // idempotent); with a slow page among `paths`, requests are in flight when a
            // backend leaves.
            let path = paths[i % paths.len()].to_string();
            tokio::spawn(async move {
                while !load.stop.load(Ordering::Relaxed) {
                    match http_send(&address, "POST", &path, &[]).await {
                        Ok((200, body, _)) if check(&body) => {
                            load.ok.fetch_add(1, Ordering::Relaxed);
                            if let Some((_, by)) = body.split_once("served by ") {
                                load.responders
                                    .lock()
                                    .unwrap()
                                    .insert(by.trim().to_string());
                            }
                        }
                        other => {
                            load.failed.fetch_add(1, Ordering::Relaxed);
                            let what = match other {
                                Ok((status, body, _)) => format!("{status}: {body}"),
                                Err(e) => format!("{e:#}"),
                            };
                            let mut failures = load.failures.lock().unwrap();
                            // The first few say what went wrong; the count says how often.
                            if failures.len() < 5 {
                                failures.push(what);
                            }
                        }
                    }
                }
            });
        }
        load
    }

    /// Stops the load once the requests in flight (the slowest take 2 s) ended, prints what it
    /// did under `what`, and asserts that none failed (`context` shown with a failure) and that
    /// more than `at_least` were answered.
    pub async fn finish_without_failures(&self, what: &str, at_least: u64, context: &str) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (ok, failed) = (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        println!("{what}: {ok} requests answered, {failed} failed");
        assert_eq!(
            failed,
            0,
            "failed requests: {:?}\n{context}",
            self.failures.lock().unwrap()
        );
        assert!(ok > at_least, "the load ran: {ok}");
    }

    pub fn responders(&self) -> BTreeSet<String> {
        self.responders.lock().unwrap().clone()
    }
}

/// `sql` on the MariaDB at `address`, database `shop`, as `user`: its output, or MariaDB's
/// refusal.
pub fn mariadb_query(
    address: &str,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let out = std::process::Command::new("mariadb")
        .args(["-h", address, &format!("-u{user}"), "shop"])
        .args(["--batch", "--skip-column-names", "-e", sql])
        .env("MYSQL_PWD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The `username` and `password` of a mysql Service's Secret.
pub async fn mysql_credentials(env: &Env, service: &str) -> (String, String) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), &env.ns);
    let name = conpaas_crds::types::mysql::secret_name(service);
    let data = secrets.get(&name).await.unwrap().data.unwrap();
    let field = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    (field("username"), field("password"))
}

/// A token of ServiceAccount `namespace/account`, valid for an hour.
pub async fn service_account_token(env: &Env, namespace: &str, account: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(env.client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// A client of the test's API server that authenticates with `token` instead of as admin.
pub async fn client_with_token(env: &Env, token: &str) -> Client {
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&env.cp.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).unwrap()
}

/// Status code and body of a GET through the API server.
pub async fn api_get(client: &Client, path: &str) -> (u16, Vec<u8>) {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    let response = client.send(request.map(Into::into)).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

/// The reason and message of the Service's `Degraded` condition while it is True (empty
/// strings otherwise).
pub fn degraded(s: &Service) -> (String, String) {
    s.status
        .as_ref()
        .and_then(|st| conpaas_crds::v1alpha1::find_condition(&st.conditions, "Degraded"))
        .filter(|c| c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Status code and body of `GET /log` from the agent at `address` (over TLS, whatever its
/// certificate), with `token` as the bearer if given.
pub async fn agent_log(address: &str, token: Option<&str>) -> (u16, String) {
    let (address, token) = (address.to_string(), token.map(str::to_string));
    tokio::task::spawn_blocking(move || agent_log_blocking(&address, token.as_deref()))
        .await
        .unwrap()
}

fn agent_log_blocking(address: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(address.to_string()).unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect((address, 5555)).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /log?tail=500 HTTP/1.1\r\nHost: {address}\r\n{auth}\r\n");
    tls.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // An answer that ends without TLS's goodbye is whole all the same.
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A test client's check of an agent's self-made certificate: any is taken.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A value that differs on each call (an annotation that changes).
fn next_poke() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
