//! The semantic error every backend maps its failures into.

/// What went wrong with a cloud call, by meaning.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CloudError {
    /// The VM (or another named object) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An object with that identity exists already, with different parameters.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The credentials were refused.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The account or the Cloud's limit allows no more VMs.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The cloud asked us to slow down.
    #[error("throttled: {0}")]
    Throttled(String),
    /// A failure worth retrying (network, 5xx, a process that would not start).
    #[error("transient failure: {0}")]
    Transient(String),
    /// The backend does not offer this operation or option.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Anything else; not retried blindly.
    #[error("{0}")]
    Other(String),
}

impl CloudError {
    /// A bounded name for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            CloudError::NotFound(_) => "NotFound",
            CloudError::AlreadyExists(_) => "AlreadyExists",
            CloudError::Unauthorized(_) => "Unauthorized",
            CloudError::QuotaExceeded(_) => "QuotaExceeded",
            CloudError::Throttled(_) => "Throttled",
            CloudError::Transient(_) => "Transient",
            CloudError::Unsupported(_) => "Unsupported",
            CloudError::Other(_) => "Other",
        }
    }

    /// True when the same call may succeed later without any change of spec.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CloudError::Throttled(_) | CloudError::Transient(_) | CloudError::QuotaExceeded(_)
        )
    }
}
