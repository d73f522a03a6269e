//! `otter-load`, the signaling load generator, a crate of its own (the test kit only starts
//! servers and speaks the protocol): protocol adapters, the run itself, /proc sampling of the
//! servers and the report.

pub mod perfctl;
pub mod procstat;
pub mod proto;
pub mod report;
pub mod run;
