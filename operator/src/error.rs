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

/// A request to the Kubernetes API that failed, with what the operator was doing.
#[derive(Debug, Error)]
#[error("{action}: {source}")]
pub struct Request {
    /// What the operator was doing, e.g. `applying Deployment calls/demo-signaling`.
    pub action: String,
    /// The client error.
    #[source]
    pub source: kube::Error,
}

/// Why a reconcile failed: one variant per step of the pipeline.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading the cluster (Secrets) failed.
    #[error("{0}")]
    Observe(Request),
    /// A watch the observe step reads (TURN Nodes, TURN pods) has not listed yet: its empty
    /// store would read as "no TURN nodes". Counted as an observe failure.
    #[error("the {0} watch has not listed yet")]
    NotListed(&'static str),
    /// Building the desired state failed (invalid spec the CRD schema did not catch).
    #[error("invalid spec: {0}")]
    Build(#[from] BuildError),
    /// A server-side apply of a child failed.
    #[error("{0}")]
    Apply(Request),
    /// Listing or deleting a child the spec no longer wants failed.
    #[error("{0}")]
    Prune(Request),
    /// Writing the status failed.
    #[error("{0}")]
    Status(Request),
}

impl Error {
    /// Every value `step` returns (the metrics start each at zero).
    pub const STEPS: [&'static str; 5] = ["observe", "build", "apply", "prune", "status"];

    /// The pipeline step that failed (`otter_operator_reconcile_errors_total{kind}`).
    pub fn step(&self) -> &'static str {
        match self {
            Self::Observe(_) | Self::NotListed(_) => "observe",
            Self::Build(_) => "build",
            Self::Apply(_) => "apply",
            Self::Prune(_) => "prune",
            Self::Status(_) => "status",
        }
    }
}

/// Wrap a client error with what the operator was doing.
pub fn request(action: impl Into<String>, source: kube::Error) -> Request {
    Request {
        action: action.into(),
        source,
    }
}
