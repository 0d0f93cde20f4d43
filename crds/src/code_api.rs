//! The code API: an aggregated API group (`code.conpaas.io`) that the controller serves behind
//! the API server, so that uploads and downloads of code archives need nothing but the caller's
//! own kube credentials. The API server authenticates the caller (users with any kubeconfig,
//! agents with their node token) and authorizes the path (`services/archives` of this group);
//! the controller then checks the caller's rights on the Service itself.
//!
//! - `POST .../namespaces/{ns}/services/{service}/archives`: the body is an archive; answers
//!   [`Uploaded`]. Needs `update` on the Service, or to be the token of one of its nodes (which
//!   upload the data they save when the Service stops).
//! - `GET .../namespaces/{ns}/services/{service}/archives/{sha256}`: an archive a version of the
//!   Service names (or the data it saved). Needs `get` on the Service, or to be the token of
//!   one of its nodes. A `Range: bytes=FROM-TO` header asks for a piece (answered `206`).
//!
//! The API server ends every request at its `--request-timeout` (60 s by default), so an
//! archive larger than what crosses in that time moves in pieces, each its own request:
//! `POST .../archives?sha256=S&offset=O[&last=true]` appends the body at byte `O` of an upload
//! of the archive `S` (offset 0 starts it again; an offset that is not the upload's size is
//! refused with `409`, and the uploader starts from 0); a piece without `last` answers
//! [`Received`], the last one [`Uploaded`] once the whole archive's digest is `S`. Downloads
//! go the same way with ranges.

use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "code.conpaas.io";
/// Its only version.
pub const VERSION: &str = "v1alpha1";
/// The APIService that registers it.
pub const API_SERVICE: &str = "v1alpha1.code.conpaas.io";
/// The resource (a subresource of `services`) the API server authorizes.
pub const RESOURCE: &str = "services/archives";

/// The logs of a Service's nodes (a subresource of `services`), read through the controller.
pub const LOGS_RESOURCE: &str = "services/logs";
/// The port each agent serves its logs on (TLS), to the controller only.
pub const AGENT_LOG_PORT: u16 = 5555;

/// Where the logs of one node of `service` are read: `GET` with `node`, and optionally `file`
/// (a script's log such as `run.sh.log`) and `tail` (lines). Needs `get` on the Service's
/// `logs`; the controller fetches them from the node's agent (a user's credential never goes to
/// a VM, whose tenant controls what listens there).
pub fn logs_path(namespace: &str, service: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/services/{service}/logs")
}

/// Whether `name` is a script log's plain file name (`run.sh.log`), the only kind the agents
/// serve: no separators, no way out of the log folder, nothing that could end a request line.
pub fn is_plain_log_name(name: &str) -> bool {
    name.ends_with(".log")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
}

/// What the controller shows an agent to read its logs: derived from the node's `spec.token`,
/// which only the controller, the node and readers of the node's namespace know. It opens the
/// logs of that node and nothing else.
pub fn node_log_key(node_token: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"conpaas.io node log key\0");
    hasher.update(node_token.as_bytes());
    hex::encode(hasher.finalize())
}

/// Where archives of `service` are uploaded.
pub fn archives_path(namespace: &str, service: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/services/{service}/archives")
}

/// Where one archive of `service` is downloaded.
pub fn archive_path(namespace: &str, service: &str, sha256: &str) -> String {
    format!("{}/{sha256}", archives_path(namespace, service))
}

/// The answer to an upload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// SHA-256 of the stored archive, lowercase hex.
    pub sha256: String,
    /// Its length in bytes.
    pub size: u64,
}

/// The answer to a piece of an upload that is not its last.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the archive received so far.
    pub received: u64,
}

/// The `archives` query of a piece at byte `offset` of an upload of the archive `sha256`.
pub fn piece_query(sha256: &str, offset: u64, last: bool) -> String {
    format!("sha256={sha256}&offset={offset}&last={last}")
}

/// One archive of a Service, as `GET .../archives` lists them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// SHA-256 of the archive, lowercase hex.
    pub sha256: String,
    /// Its length in bytes.
    pub size: u64,
    /// When it was stored, Unix seconds.
    pub written: i64,
}

/// The message of a Kubernetes `Status` answer (what the code API and the API server send on a
/// refusal), else the body as text.
pub fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_log_names_are_served() {
        assert!(is_plain_log_name("run.sh.log"));
        for refused in [
            "../token",
            ".hidden.log",
            "a b.log",
            "x.log\r\nX: y",
            "x.log?tail=1",
            "run.sh",
        ] {
            assert!(!is_plain_log_name(refused), "{refused:?}");
        }
    }
}
