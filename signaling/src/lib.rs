//! Otter's signaling server. See `docs/protocol.md` for the wire protocol.

pub mod auth;
pub mod buffers;
pub mod coalesce;
pub mod config;
pub mod conn;
pub mod http;
pub mod hub;
pub mod ice;
pub mod metrics;
pub mod protocol;
pub mod roster;
pub mod server;
pub mod store;
pub mod turn;
pub mod turn_exporter;
pub mod ws;
