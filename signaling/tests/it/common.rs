//! The shared harness, bound to this crate's binary, with the choice of room store.

use std::ops::Deref;
use std::time::Duration;

pub use otter_testkit::{Client, RedisServer, get, wait_until};

/// Which room store a server runs on: the behavioural tests run against both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Memory,
    Redis,
}

/// A signaling server (and, for the Redis store, its own redis-server).
pub struct Server {
    pub sig: otter_testkit::Signaling,
    pub redis: Option<RedisServer>,
}

impl Deref for Server {
    type Target = otter_testkit::Signaling;
    fn deref(&self) -> &Self::Target {
        &self.sig
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.sig
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_otter-signaling");

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server {
            sig: otter_testkit::Signaling::start(BIN, args),
            redis: None,
        }
    }

    /// Start on the given store; with Redis, wait until the replica holds its lease.
    pub async fn start_on(store: Store, args: &[&str]) -> Server {
        match store {
            Store::Memory => Self::start(args),
            Store::Redis => {
                let redis = RedisServer::start();
                let url = redis.url();
                let mut all = vec!["--redis-url", url.as_str()];
                all.extend_from_slice(args);
                let sig = otter_testkit::Signaling::start(BIN, &all);
                wait_until("the replica to be ready", Duration::from_secs(10), || {
                    sig.ready()
                })
                .await;
                Server {
                    sig,
                    redis: Some(redis),
                }
            }
        }
    }
}

/// Run one behavioural test against both stores: `both_stores!(name)` expects
/// `async fn name(store: Store)` and makes `name::memory` and `name::redis`.
macro_rules! both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name($crate::common::Store::Memory).await
            }
            #[tokio::test]
            async fn redis() {
                super::$name($crate::common::Store::Redis).await
            }
        }
    )+};
}
