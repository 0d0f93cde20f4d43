//! The reconcilers' error, named after the operation that failed.

use conpaas_cloud::CloudError;

/// What failed during a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (named as the planner names its reads).
    #[error(transparent)]
    Kube(#[from] conpaas_planner::Error),
    /// A cloud call failed.
    #[error("{operation} on cloud {cloud}")]
    Cloud {
        /// What was attempted, e.g. `create VM`.
        operation: &'static str,
        /// The Cloud's name.
        cloud: String,
        /// The semantic cloud error.
        #[source]
        source: CloudError,
    },
    /// The object is missing a field the API server guarantees (name, namespace, uid).
    #[error("object lacks {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A bounded name for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(conpaas_planner::Error::MissingField(_)) => "MissingField",
            Error::Kube(_) => "KubeApi",
            Error::Cloud { source, .. } => source.category(),
            Error::MissingField(_) => "MissingField",
        }
    }

    /// True when retrying cannot help until something changes: the cloud refused for a reason
    /// that repeats (credentials, image, instance type), or the object lacks a field.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Kube(e) => matches!(e, conpaas_planner::Error::MissingField(_)),
            Error::Cloud { source, .. } => !source.is_retryable(),
            Error::MissingField(_) => true,
        }
    }

    /// True when the API server refused a write because the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Kube(conpaas_planner::Error::Kube { source: kube::Error::Api(s), .. }) if s.code == 409
        )
    }

    /// The error with its causes, `what failed: why`, for conditions people read.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    }
}

/// Attaches an operation and object name to a kube error, as the planner does.
pub(crate) trait KubeResultExt<T> {
    fn ctx(self, operation: &'static str, object: impl std::fmt::Display) -> Result<T, Error>;
}

impl<T> KubeResultExt<T> for Result<T, kube::Error> {
    fn ctx(self, operation: &'static str, object: impl std::fmt::Display) -> Result<T, Error> {
        Ok(conpaas_planner::error::KubeResultExt::ctx(
            self, operation, object,
        )?)
    }
}

pub(crate) use conpaas_planner::error::{is_conflict, is_not_found};
