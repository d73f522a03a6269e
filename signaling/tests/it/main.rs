//! The signaling server's integration tests: the real binary on loopback, with the in-memory
//! store and with a real redis-server. One test binary, not one per file: each binary links
//! every dependency again, and the files' tests run side by side (four at a time, as
//! `tests/run-all` asks) instead of one file after another.

#[macro_use]
mod common;

mod attack;
mod auth;
mod fuzz;
mod hardening;
mod http;
mod limits;
mod presence;
mod relay;
mod replicas;
mod shutdown;
