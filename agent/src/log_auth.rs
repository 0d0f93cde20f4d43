//! Who may read this node's logs: the caller's bearer token is checked by the API server itself,
//! with a SelfSubjectAccessReview made *with that token*: may it `get` the `logs` subresource of
//! this node's Service (`services/logs` in `conpaas.io`)? An invalid token fails
//! authentication there, so the agent needs no rights of its own (no TokenReview, no
//! SubjectAccessReview), and RBAC alone decides who reads logs, as for `kubectl logs`.
//! Answers that allow are remembered for a short while per token (by digest), so a `cpsctl logs`
//! over many files is one review.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use sha2::{Digest, Sha256};

/// How long an allowing answer is trusted.
const REMEMBER: Duration = Duration::from_secs(30);

/// What the log endpoint answers a caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the logs.
    Allowed,
    /// 401: no token, or the API server did not accept it.
    Unauthenticated(String),
    /// 403: RBAC says no.
    Forbidden(String),
    /// 503: the agent cannot tell yet (its Service is not known, the API server is unreachable).
    Unavailable(String),
}

/// Checks callers of the log endpoint.
#[derive(Clone)]
pub struct LogAuth {
    /// The agent's API server connection, without its credentials.
    base: Config,
    namespace: String,
    /// The node's Service, known once the agent has read its ServiceNode.
    pub service: Arc<OnceLock<String>>,
    allowed: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
}

impl LogAuth {
    /// For the node's namespace; `base` is the agent's own connection (its credentials are
    /// dropped: each review is made with the caller's token).
    pub fn new(mut base: Config, namespace: String) -> Self {
        base.auth_info = Default::default();
        Self {
            base,
            namespace,
            service: Default::default(),
            allowed: Default::default(),
        }
    }

    /// The verdict for a request carrying `token` (from `Authorization: Bearer`).
    pub async fn check(&self, token: Option<&str>) -> Verdict {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Verdict::Unauthenticated(
                "send a bearer token (cpsctl logs sends yours): the logs are served to those RBAC allows `get` on services/logs in conpaas.io".into(),
            );
        };
        let Some(service) = self.service.get() else {
            return Verdict::Unavailable("the agent has not read its ServiceNode yet".into());
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let mut allowed = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
            allowed.retain(|_, at| at.elapsed() < REMEMBER);
            if allowed.contains_key(&key) {
                return Verdict::Allowed;
            }
        }
        let verdict = self.review(token, service).await;
        if verdict == Verdict::Allowed {
            let mut allowed = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
            allowed.insert(key, Instant::now());
        }
        verdict
    }

    async fn review(&self, token: &str, service: &str) -> Verdict {
        let mut config = self.base.clone();
        config.auth_info.token = Some(token.to_string().into());
        let client = match Client::try_from(config) {
            Ok(client) => client,
            Err(e) => return Verdict::Unavailable(format!("build an API client: {e}")),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some("conpaas.io".into()),
                    resource: Some("services".into()),
                    subresource: Some("logs".into()),
                    verb: Some("get".into()),
                    namespace: Some(self.namespace.clone()),
                    name: Some(service.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(client);
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => Verdict::Allowed,
            Ok(_) => Verdict::Forbidden(format!(
                "you may not get services/logs of conpaas.io service {}/{service}",
                self.namespace
            )),
            Err(kube::Error::Api(status)) if status.code == 401 => {
                Verdict::Unauthenticated("the API server did not accept the token".into())
            }
            Err(e) => Verdict::Unavailable(format!("ask the API server: {e}")),
        }
    }
}
