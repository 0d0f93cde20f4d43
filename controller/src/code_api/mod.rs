//! The code API (`code.conpaas.io`, see [`conpaas_crds::code_api`]): uploads into the artifact
//! store and downloads from it, served behind the API server as an aggregated API so that users
//! and agents need only their own kube credentials, and RBAC decides who may do what.
//!
//! Why aggregated and not a Service or Ingress of its own: the API server already authenticates
//! every kind of credential (tokens, client certificates, OIDC, exec plugins) and every VM
//! already reaches it, so the code API needs no second public endpoint, certificate or login.
//! Archives stream through the API server's proxy; it applies its request timeout
//! (`--request-timeout`, 60 s by default) to uploads and downloads, so large ones move in
//! pieces (uploads at offsets, downloads by ranges), each its own request.

mod front_proxy;
mod gc;
mod logs;
mod pieces;
mod quota;
mod register;
mod routes;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use axum::Extension;
use conpaas_artifacts::Store;
use conpaas_reconcilers::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;

pub use register::Target;

/// What the handlers share.
pub struct CodeApi {
    pub store: Store,
    pub ctx: Arc<Context>,
    /// Set once the caches are filled.
    pub ready: Arc<AtomicBool>,
    pub proxy: front_proxy::FrontProxy,
    pub max_archive_bytes: u64,
    /// Bytes of archives a namespace may hold (0: no quota).
    pub namespace_store_bytes: u64,
    /// How long an archive nothing names is kept.
    pub gc_grace: Duration,
    /// Uploads arriving in pieces.
    pub pieces: pieces::Pieces,
    /// Archives uploaded lately, counted against their namespace's quota.
    pub recent: quota::Recent,
    /// Sizes of the archives the quota counts.
    pub sizes: quota::Sizes,
    /// Whose turn it is to upload, per namespace, while a quota applies.
    pub turns: quota::Turns,
}

/// Limits and the store's upkeep.
pub struct Settings {
    pub max_archive_bytes: u64,
    pub namespace_store_bytes: u64,
    /// How long an archive no version names is kept.
    pub gc_grace: Duration,
    /// How often the store is swept.
    pub gc_every: Duration,
}

/// Registers the code API with the API server and serves it on `address` until the process
/// ends; sweeps the store meanwhile.
pub async fn run(
    address: SocketAddr,
    target: Target<'_>,
    store: Store,
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
    settings: Settings,
) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let proxy = front_proxy::FrontProxy::load(&client).await?;
    let names = vec![
        format!("{}.{}.svc", target.service, target.namespace),
        format!("{}.{}.svc.cluster.local", target.service, target.namespace),
        "localhost".into(),
    ];
    let identity = tls::serving_identity(
        &client,
        target.namespace,
        &format!("{}-tls", target.service),
        names,
    )
    .await?;
    let config = tls::server_config(&identity, proxy.roots()?)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listen on {address} for the code API"))?;
    register::register(&client, &target, &identity.cert_pem).await?;
    tracing::info!(address = %listener.local_addr()?, store = ?store, "serving the code API");
    let sweep = tokio::spawn(gc::run(
        store.clone(),
        ctx.clone(),
        settings.gc_grace,
        settings.gc_every,
    ));
    let _stop_sweep = AbortOnDrop(sweep);
    let api = Arc::new(CodeApi {
        store,
        ctx,
        ready,
        proxy,
        max_archive_bytes: settings.max_archive_bytes,
        namespace_store_bytes: settings.namespace_store_bytes,
        gc_grace: settings.gc_grace,
        pieces: Default::default(),
        recent: Default::default(),
        sizes: Default::default(),
        turns: Default::default(),
    });
    let router = routes::router(api);
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept a code API connection");
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(error = %e, %remote, "code API TLS handshake");
                    return;
                }
            };
            let peer = front_proxy::Peer::of(tls.get_ref().1.peer_certificates());
            let service = TowerToHyperService::new(router.layer(Extension(peer)));
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(error = %e, %remote, "code API connection");
            }
        });
    }
}

/// Stops a task when the code API stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
