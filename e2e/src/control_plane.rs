//! etcd + kube-apiserver (+ kube-controller-manager) on loopback, in a temporary folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::wait;

const ADMIN_TOKEN: &str = "conpaas-e2e-admin-token";

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    /// Each process with its name, in the order started.
    processes: Vec<(String, Child)>,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// A kubeconfig file with cluster-admin rights.
    pub kubeconfig: PathBuf,
    /// The API server's CA certificate.
    pub ca: PathBuf,
}

impl ControlPlane {
    /// A kubeconfig file (in the control plane's folder) that authenticates with `token`, e.g. a
    /// ServiceAccount's, to run a program with exactly that account's rights.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        write_kubeconfig(&path, &self.url, &self.ca, token)?;
        Ok(path)
    }

    /// Starts etcd, kube-apiserver and kube-controller-manager, and installs the CRDs. A start
    /// that fails (a process exits, or the API server is not ready in time, e.g. on a machine
    /// loaded by other tests) is tried again in a new folder on new ports; the error names each
    /// attempt's cause with the end of its logs.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`Self::start`] with more kube-apiserver flags, e.g. lower in-flight limits.
    pub async fn start_with(apiserver_flags: &[String]) -> anyhow::Result<Self> {
        const ATTEMPTS: usize = 3;
        let mut failures = Vec::new();
        for attempt in 1..=ATTEMPTS {
            match Self::start_once(apiserver_flags).await {
                Ok(cp) => return Ok(cp),
                Err(e) => {
                    eprintln!("control plane attempt {attempt} of {ATTEMPTS} failed: {e:#}");
                    failures.push(format!("attempt {attempt}: {e:#}"));
                }
            }
        }
        bail!("the control plane did not start:\n{}", failures.join("\n"))
    }

    async fn start_once(apiserver_flags: &[String]) -> anyhow::Result<Self> {
        // With the EC2 driver compiled in, rustls has two crypto backends and picks none itself.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube_dir = crate::cache_dir().join("kube-v1.34.4");
        let apiserver = kube_dir.join("kube-apiserver");
        let kcm = kube_dir.join("kube-controller-manager");
        if !apiserver.exists() {
            bail!(
                "{} is missing: run e2e/tools/build-kube.sh",
                apiserver.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("conpaas-cp-").tempdir()?;
        let mut cp = ControlPlane {
            url: String::new(),
            kubeconfig: dir.path().join("kubeconfig"),
            ca: PathBuf::new(),
            dir,
            processes: Vec::new(),
        };
        let root = cp.dir.path().to_path_buf();

        let (client_port, peer_port, api_port) = (
            crate::process::free_port()?,
            crate::process::free_port()?,
            crate::process::free_port()?,
        );
        let etcd = etcd_bin_vendored_linux_amd64::etcd_bin_path().expect("vendored etcd");
        cp.spawn(
            "etcd",
            Command::new(etcd).args([
                "--data-dir",
                &root.join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync",
            ]),
        )?;

        let key = root.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .context("run openssl to make the service-account key")?;
        if !status.success() {
            bail!("openssl genrsa failed");
        }
        let front_proxy = front_proxy_certificates(&root.join("front-proxy"))?;
        std::fs::write(
            root.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )?;
        let certs = root.join("certs");
        cp.spawn(
            "kube-apiserver",
            Command::new(&apiserver)
                .args([
                    &format!("--etcd-servers=http://127.0.0.1:{client_port}"),
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    &format!("--secure-port={api_port}"),
                    &format!("--cert-dir={}", certs.display()),
                    "--service-account-issuer=https://kubernetes.default.svc",
                    &format!("--service-account-key-file={}", key.display()),
                    &format!("--service-account-signing-key-file={}", key.display()),
                    "--service-cluster-ip-range=10.0.0.0/24",
                    &format!("--token-auth-file={}", root.join("tokens.csv").display()),
                    "--authorization-mode=RBAC",
                    "--disable-admission-plugins=ServiceAccount",
                    "--endpoint-reconciler-type=none",
                    // The front proxy, for aggregated APIs (the controller's code API).
                    &format!(
                        "--requestheader-client-ca-file={}",
                        front_proxy.ca.display()
                    ),
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    &format!("--proxy-client-cert-file={}", front_proxy.cert.display()),
                    &format!("--proxy-client-key-file={}", front_proxy.key.display()),
                ])
                .args(apiserver_flags),
        )?;
        cp.url = format!("https://127.0.0.1:{api_port}");

        // The serving certificate is self-signed for 127.0.0.1; trust exactly it.
        let ca = certs.join("apiserver.crt");
        cp.wait_for(
            "the API server's certificate",
            Duration::from_secs(60),
            || async { ca.exists() },
        )
        .await?;
        write_kubeconfig(&cp.kubeconfig, &cp.url, &ca, ADMIN_TOKEN)?;
        cp.ca = ca;
        let client = cp.client().await?;
        cp.wait_for(
            "the API server to be ready",
            Duration::from_secs(90),
            || {
                let client = client.clone();
                async move {
                    let req = http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("request");
                    client
                        .request_text(req)
                        .await
                        .is_ok_and(|body| body.trim() == "ok")
                }
            },
        )
        .await?;

        // Without it nothing collects the objects a deleted owner leaves, and cascades would
        // pass or fail for the wrong reason: refuse to run instead.
        anyhow::ensure!(
            kcm.exists(),
            "{} is missing; build it with e2e/tools/build-kube.sh (make kube)",
            kcm.display()
        );
        cp.spawn(
            "kube-controller-manager",
            Command::new(&kcm).args([
                &format!("--kubeconfig={}", cp.kubeconfig.display()),
                "--controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller",
                "--leader-elect=false",
                "--secure-port=0",
            ]),
        )?;
        install_crds(&client).await?;
        Ok(cp)
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&self.kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(Client::try_from(config)?)
    }

    /// The control plane's temporary folder (logs are in `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> anyhow::Result<()> {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        self.processes.push((name.to_string(), child));
        Ok(())
    }

    /// Polls `check` until it holds, as [`wait::until`] does, but fails as soon as one of the
    /// processes exits, or after `limit`, with the end of every process's log.
    async fn wait_for<F, Fut>(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if check().await {
                return Ok(());
            }
            let exited: Vec<String> = self
                .processes
                .iter_mut()
                .filter_map(|(name, child)| {
                    let status = child.try_wait().ok().flatten()?;
                    Some(format!("{name} exited ({status})"))
                })
                .collect();
            if !exited.is_empty() {
                bail!(
                    "waiting for {what}: {}\n{}",
                    exited.join(", "),
                    self.log_tails()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of each process's log, to say why a start failed.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.processes {
            let path = self.dir.path().join("logs").join(format!("{name}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- {name} (last {} lines)\n{}\n",
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Keeps the folder (and its logs) after the control plane stops; returns its path.
    pub fn keep(self) -> PathBuf {
        let mut this = self;
        let dir = std::mem::replace(&mut this.dir, tempfile::tempdir().expect("tempdir"));
        dir.keep()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order: controllers first, etcd last.
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The front proxy's CA and the client certificate (`front-proxy-client`) the API server
/// presents to aggregated APIs, made with openssl as kubeadm makes them.
struct FrontProxyFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn front_proxy_certificates(dir: &Path) -> anyhow::Result<FrontProxyFiles> {
    std::fs::create_dir_all(dir)?;
    let files = FrontProxyFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    };
    let (ca_key, csr, ext) = (
        dir.join("ca.key"),
        dir.join("client.csr"),
        dir.join("client.ext"),
    );
    std::fs::write(
        &ext,
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )?;
    let run = |args: &[&std::ffi::OsStr]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .context("run openssl for the front-proxy certificates")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[
        &os("req"),
        &os("-x509"),
        &os("-newkey"),
        &os("rsa:2048"),
        &os("-nodes"),
        &os("-keyout"),
        ca_key.as_os_str(),
        &os("-out"),
        files.ca.as_os_str(),
        &os("-subj"),
        &os("/CN=front-proxy-ca"),
        &os("-days"),
        &os("2"),
    ])?;
    run(&[
        &os("req"),
        &os("-newkey"),
        &os("rsa:2048"),
        &os("-nodes"),
        &os("-keyout"),
        files.key.as_os_str(),
        &os("-out"),
        csr.as_os_str(),
        &os("-subj"),
        &os("/CN=front-proxy-client"),
    ])?;
    run(&[
        &os("x509"),
        &os("-req"),
        &os("-in"),
        csr.as_os_str(),
        &os("-CA"),
        files.ca.as_os_str(),
        &os("-CAkey"),
        ca_key.as_os_str(),
        &os("-CAcreateserial"),
        &os("-out"),
        files.cert.as_os_str(),
        &os("-days"),
        &os("2"),
        &os("-extfile"),
        ext.as_os_str(),
    ])?;
    Ok(files)
}

fn write_kubeconfig(path: &Path, url: &str, ca: &Path, token: &str) -> anyhow::Result<()> {
    let body = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: conpaas\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: conpaas\n  context:\n    cluster: conpaas\n    user: admin\n    namespace: default\ncurrent-context: conpaas\n",
        ca = ca.display()
    );
    std::fs::write(path, body)?;
    Ok(())
}

/// Installs the operator's CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in conpaas_crds::generate::all() {
        let name = crd.metadata.name.clone().expect("CRDs have names");
        api.patch(
            &name,
            &PatchParams::apply("conpaas-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("install CRD {name}"))?;
        wait::until(
            &format!("CRD {name} to be established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    Ok(crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True"))
                }
            },
        )
        .await?;
    }
    Ok(())
}
