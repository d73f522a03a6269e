//! The Otter operator: turns an `OtterDeployment` into a signaling Deployment, a TURN DaemonSet,
//! Redis and the Secrets and config tying them together, and reports whether it all works.

pub mod build;
pub mod crd;
pub mod desired;
pub mod error;
pub mod http;
pub mod kinds;
pub mod leader;
pub mod meta;
pub mod metrics;
pub mod observed;
pub mod probe;
pub mod reconcile;

#[cfg(test)]
mod testing;
