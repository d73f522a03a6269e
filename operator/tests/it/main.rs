//! The operator's integration tests: the CRD and RBAC against their committed files, and the
//! TURN arguments, secrets and prober against the real coturn. One test binary, not one per
//! file: each binary links every dependency again.

mod coturn_ports;
mod coturn_secrets;
mod crd;
mod rbac;
mod turn_probe;
