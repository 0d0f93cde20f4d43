//! Who may read this node's logs: the controller alone, which shows the node's log key (derived
//! from the node's `spec.token`, [`conpaas_crds::code_api::node_log_key`]). Users read logs
//! through the controller (`cpsctl logs`, the code API's `services/logs`), authorized there by
//! the API server: a user's credential never comes to a VM, whose tenant controls it.

use std::sync::{Arc, OnceLock};

/// What the log endpoint answers a caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the logs.
    Allowed,
    /// 401: no key, or not this node's.
    Unauthenticated(String),
    /// 503: the agent has not read its ServiceNode yet.
    Unavailable(String),
}

/// Checks callers of the log endpoint.
#[derive(Clone, Default)]
pub struct LogAuth {
    /// The node's log key, known once the agent has read its ServiceNode.
    pub key: Arc<OnceLock<String>>,
}

impl LogAuth {
    /// The verdict for a request carrying `presented` (from `Authorization: Bearer`).
    pub fn check(&self, presented: Option<&str>) -> Verdict {
        let Some(key) = self.key.get() else {
            return Verdict::Unavailable("the agent has not read its ServiceNode yet".into());
        };
        match presented {
            Some(presented) if same(presented.as_bytes(), key.as_bytes()) => Verdict::Allowed,
            _ => Verdict::Unauthenticated(
                "only the ConPaaS controller reads this log: use `cpsctl logs`".into(),
            ),
        }
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nodes_key_opens_the_log() {
        let auth = LogAuth::default();
        assert!(matches!(auth.check(Some("k")), Verdict::Unavailable(_)));
        let key = conpaas_crds::code_api::node_log_key("token-of-node-a");
        auth.key.set(key.clone()).unwrap();
        assert_eq!(auth.check(Some(&key)), Verdict::Allowed);
        let other = conpaas_crds::code_api::node_log_key("token-of-node-b");
        assert_ne!(other, key, "another node's key");
        for refused in [None, Some(""), Some(other.as_str()), Some(&key[..10])] {
            assert!(
                matches!(auth.check(refused), Verdict::Unauthenticated(_)),
                "{refused:?}"
            );
        }
    }
}
