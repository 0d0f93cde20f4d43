//! Finding the cluster as kubectl does: `--kubeconfig`, `--context`, `KUBECONFIG`,
//! `~/.kube/config`, then in-cluster.

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::args::{Cli, Output};

/// A connected client and the flags every verb shares.
pub struct Session {
    /// The API client.
    pub client: Client,
    /// Namespace of namespaced objects.
    pub namespace: String,
    /// How to print.
    pub output: Output,
}

/// Connects as `cli` says.
pub async fn connect(cli: &Cli) -> anyhow::Result<Session> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(anyhow::Error::from)
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(anyhow::Error::from),
        None => Config::infer().await.map_err(anyhow::Error::from),
    }
    .context("find the cluster; set --kubeconfig or KUBECONFIG (with `make run`: export KUBECONFIG=/tmp/conpaas-dev/kubeconfig)")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("build the Kubernetes client")?;
    Ok(Session {
        client,
        namespace,
        output: cli.output,
    })
}
