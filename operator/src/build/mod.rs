//! Pure builders of the desired children, one module per kind of object:
//! `(&OtterDeployment, &Observed) -> object`, and `pod` for the pod pieces they share.

pub mod network_policy;
pub mod pod;
pub mod redis;
pub mod secrets;
pub mod signaling;
pub mod turn;
pub mod turn_keys;
pub mod turn_metrics;
pub mod turn_quotas;
