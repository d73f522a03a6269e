//! Pure builders of the desired children, one module per kind of object:
//! `(&OtterDeployment, &Observed) -> object`.

pub mod network_policy;
pub mod redis;
pub mod secrets;
pub mod signaling;
pub mod turn;
