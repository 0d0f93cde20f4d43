//! Keeps the agent's token fresh: before it expires, the agent asks the API server for a new one
//! for its own ServiceAccount (the only one its Role lets it mint) and rewrites the token file,
//! which the client re-reads. Nothing outside the VM needs to hand it a new token.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

/// Renews the token every `every` for as long as the agent runs; failures are retried sooner.
pub async fn keep_fresh(
    client: Client,
    namespace: String,
    node: String,
    token_file: PathBuf,
    ttl: Duration,
    every: Duration,
) {
    let api: Api<ServiceAccount> = Api::namespaced(client, &namespace);
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(ttl.as_secs() as i64),
                ..Default::default()
            },
            ..Default::default()
        };
        let renewed = api
            .create_token_request(&node, &PostParams::default(), &request)
            .await;
        match renewed.map(|t| t.status.map(|s| s.token)) {
            Ok(Some(token)) => match write(&token_file, &token) {
                Ok(()) => {
                    tracing::info!("token renewed");
                    wait = every;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "write renewed token");
                    wait = Duration::from_secs(10);
                }
            },
            Ok(None) => {
                tracing::warn!("the token request returned no token");
                wait = Duration::from_secs(10);
            }
            Err(e) => {
                tracing::warn!(error = %e, "renew token");
                wait = Duration::from_secs(10);
            }
        }
    }
}

fn write(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}
