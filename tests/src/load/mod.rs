//! `otter-load`, the signaling load generator: protocol adapters, the run itself, /proc
//! sampling of the servers and the report.

pub mod procstat;
pub mod proto;
pub mod report;
pub mod run;
