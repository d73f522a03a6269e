//! Otter's test harness, shared by the suites: real `redis-server` and `otter-signaling`
//! processes on free loopback ports (stopped when dropped), and a protocol v1 client.

mod client;
pub mod cluster;
mod process;

pub use client::{Client, WAIT, Ws, get};
pub use process::{RedisServer, Signaling, free_port, wait_until};
