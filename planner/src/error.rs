//! What failed while observing, named after the operation.

/// A failed read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{operation} {object}")]
    Kube {
        /// What was attempted, e.g. `list service nodes`.
        operation: &'static str,
        /// The object it concerned, `namespace/name` or a kind.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object is missing a field the API server guarantees (name, namespace, uid).
    #[error("object lacks {0}")]
    MissingField(&'static str),
}

/// Attaches an operation and object name to a kube error.
pub trait KubeResultExt<T> {
    fn ctx(self, operation: &'static str, object: impl std::fmt::Display) -> Result<T, Error>;
}

impl<T> KubeResultExt<T> for Result<T, kube::Error> {
    fn ctx(self, operation: &'static str, object: impl std::fmt::Display) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            operation,
            object: object.to_string(),
            source,
        })
    }
}

/// True when the API answered 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// True when the API answered 409 AlreadyExists.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}
