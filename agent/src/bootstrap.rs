//! Reading the bootstrap document and building a client with the node's own credentials.

use std::path::Path;

use anyhow::Context as _;
use conpaas_crds::bootstrap::AgentBootstrap;
use kube::Config;

/// Reads and parses the bootstrap document.
pub fn read(path: &Path) -> anyhow::Result<AgentBootstrap> {
    let bytes =
        std::fs::read(path).with_context(|| format!("read bootstrap {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse bootstrap {}", path.display()))
}

/// The API server connection with the node's token. The token lives in a file (mode 0600) so
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
    Ok(config)
}
