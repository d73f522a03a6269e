//! Errors of the library. The binary wraps them with `anyhow` at its edges.

use thiserror::Error;

/// Why a desired object could not be built from an `OtterDeployment`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildError {
    /// The resource has no namespace (it is namespaced, so the apiserver always sets one).
    #[error("OtterDeployment has no namespace")]
    MissingNamespace,
    /// The resource has no name or uid yet, so children cannot point back at it.
    #[error("OtterDeployment has no name or uid, cannot own children")]
    MissingIdentity,
    /// A peer range the spec gives is not a CIDR.
    #[error("turn.extraDeniedPeerRanges: {0:?} is not a CIDR")]
    InvalidCidr(String),
    /// A duration the spec gives does not parse.
    #[error("{field}: {value:?} is not a duration such as 10s or 6h")]
    InvalidDuration {
        /// The spec field.
        field: &'static str,
        /// What it held.
        value: String,
    },
}

/// Why a reconcile failed.
#[derive(Debug, Error)]
pub enum Error {
    /// Building the desired state failed (invalid spec the CRD schema did not catch).
    #[error("invalid spec: {0}")]
    Build(#[from] BuildError),
    /// The Kubernetes API refused or failed a request.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Serialising an object failed.
    #[error("serialising {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// Wrap a client error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }
}
