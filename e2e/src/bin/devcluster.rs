//! `conpaas-devcluster`: ConPaaS on one machine. Starts a local control plane (etcd +
//! kube-apiserver + kube-controller-manager on loopback), installs the CRDs, runs
//! `conpaas-controller` with the local cloud, applies the helloworld example, and prints where to
//! look. Ctrl-C stops everything, VMs included.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use conpaas_e2e::{ControlPlane, Controller};

/// Runs ConPaaS on this machine: a local control plane, the controller, the local cloud.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Manifest to apply once the controller runs (`-` for none)
    #[arg(long, default_value = "manifests/examples/helloworld.yaml")]
    apply: String,
    /// Namespace for the manifest's namespaced objects
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Where the kubeconfig and the local cloud's VMs go
    #[arg(long, env = "CONPAAS_DEV_DIR")]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube_client logs every 500 of /readyz while the API server starts; those are expected.
    tracing_subscriber::fmt()
        .with_env_filter("warn,kube_client=off")
        .init();
    let args = Args::parse();
    let dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join("conpaas-dev"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

    eprintln!("starting etcd and kube-apiserver on 127.0.0.1 ...");
    let cp = ControlPlane::start().await?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(&cp.kubeconfig, &kubeconfig).context("copy the kubeconfig")?;
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let controller = Controller::start(&cp, &state, 100)?;
    if args.apply != "-" {
        let yaml =
            std::fs::read_to_string(&args.apply).with_context(|| format!("read {}", args.apply))?;
        conpaas_e2e::manifest::apply(&cp.client().await?, &yaml, &args.namespace).await?;
    }

    println!(
        "\nConPaaS runs.\n\n  export KUBECONFIG={kc}\n  kubectl get conpaas -A                 # clouds, applications, services, nodes\n  kubectl wait --for=condition=Ready services.conpaas.io/hello --timeout=120s\n  kubectl get servicenodes -o wide        # each node's loopback address\n  curl http://127.100.0.1:8080/           # a helloworld node's greeting\n\nLogs: {logs}/  (controller, apiserver, etcd)\nVMs:  {state}/vms/<id>/agent.log\nPress Ctrl-C to stop everything.",
        kc = kubeconfig.display(),
        logs = cp.dir().join("logs").display(),
        state = state.display(),
    );
    // Ctrl-C, a closed terminal or a plain `kill`: each stops everything, VMs included.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
        _ = hangup.recv() => {}
    }
    eprintln!("stopping ...");
    drop(controller);
    drop(cp);
    Ok(())
}
