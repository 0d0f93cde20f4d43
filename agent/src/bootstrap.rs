//! Reading the bootstrap document and building a client with the node's own credentials.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use conpaas_crds::bootstrap::AgentBootstrap;
use kube::Config;

/// Reads and parses the bootstrap document.
pub fn read(path: &Path) -> anyhow::Result<AgentBootstrap> {
    let bytes =
        std::fs::read(path).with_context(|| format!("read bootstrap {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse bootstrap {}", path.display()))
}

/// How long the API server is asked to keep a watch open before it ends it (and the agent's
/// watcher opens the next): well under [`READ_TIMEOUT`], so a healthy idle watch is never cut.
pub const WATCH_SECONDS: u32 = 240;

/// How long a connection to the API server may stay silent while an answer is awaited: a
/// connection that died without a word (the server's host gone, a NAT forgetting it) fails
/// after this instead of holding the node's watch or a read forever. hyper counts it from the
/// request's start, also while a body is still being sent; uploads of saved data are cut by the
/// API server's own request timeout (60 s by default) well before.
pub const READ_TIMEOUT: Duration = Duration::from_secs(WATCH_SECONDS as u64 + 60);

/// The API server connection with the node's token, with [`READ_TIMEOUT`]. The token lives in a file (mode 0600) so
/// a refreshed token only needs the file rewritten.
pub fn config(boot: &AgentBootstrap, work_dir: &Path) -> anyhow::Result<Config> {
    std::fs::create_dir_all(work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let token_file = work_dir.join("token");
    std::fs::write(&token_file, &boot.token)
        .with_context(|| format!("write {}", token_file.display()))?;
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;

    let mut config = Config::new(
        boot.api_server_url
            .parse()
            .context("bootstrap apiServerUrl")?,
    );
    config.default_namespace = boot.namespace.clone();
    if !boot.ca_certs.is_empty() {
        config.root_cert = Some(boot.ca_certs.iter().map(|c| c.0.clone()).collect());
    }
    config.accept_invalid_certs = boot.insecure_skip_tls_verify;
    config.auth_info.token_file = Some(token_file.to_string_lossy().into_owned());
    config.read_timeout = Some(READ_TIMEOUT);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(url: &str) -> AgentBootstrap {
        AgentBootstrap {
            api_server_url: url.into(),
            ca_certs: vec![],
            insecure_skip_tls_verify: false,
            namespace: "ns".into(),
            node: "n".into(),
            token: "t".into(),
            token_ttl_seconds: 3600,
            token_refresh_seconds: 2400,
        }
    }

    /// A server that takes connections and never answers: with the agent's configuration a
    /// request fails (after the read timeout, shortened here) instead of waiting forever.
    #[tokio::test]
    async fn a_silent_api_server_fails_a_request_instead_of_holding_it() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut agent = config(&boot(&url), dir.path()).unwrap();
        assert_eq!(agent.read_timeout, Some(READ_TIMEOUT));
        assert!(READ_TIMEOUT > Duration::from_secs(WATCH_SECONDS as u64));

        agent.read_timeout = Some(Duration::from_millis(300));
        let client = kube::Client::try_from(agent).unwrap();
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, "ns");
        let answer = tokio::time::timeout(Duration::from_secs(10), api.get("x")).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "the request failed by itself: {answer:?}"
        );
        silent.abort();
    }
}
