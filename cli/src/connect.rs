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
    /// What it was built from, for requests whose bodies stream ([`send_streaming`]).
    pub config: Config,
    /// Namespace of namespaced objects.
    pub namespace: String,
    /// How to print.
    pub output: Output,
}

/// Connects as `cli` says.
pub async fn connect(cli: &Cli, output: Output) -> anyhow::Result<Session> {
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
    let client = Client::try_from(config.clone()).context("build the Kubernetes client")?;
    Ok(Session {
        client,
        config,
        namespace,
        output,
    })
}

/// Sends a request whose body streams (an archive upload) to the API server, authenticated as
/// the kube client would be: kube's own client takes request bodies only whole.
pub async fn send_streaming<B>(
    config: &Config,
    request: http::Request<B>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use kube::client::ConfigExt;
    use tower::{ServiceBuilder, ServiceExt};
    let https = config
        .rustls_https_connector()
        .context("TLS to the API server")?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, B>(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .auth_layer()
                .context("the kubeconfig's credentials")?,
        )
        .layer(
            config
                .extra_headers_layer()
                .context("the kubeconfig's headers")?,
        )
        .map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into)
        .service(http);
    service
        .oneshot(request)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
