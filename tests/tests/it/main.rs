//! The tests that need more than one of Otter's parts: the operator against a real control
//! plane, the operator's objects against the real signaling binary, and the TURN exporter
//! against a real coturn. One test binary, not one per file: each binary links every
//! dependency again.

mod contract;
mod operator_cluster;
mod turn_metrics;
