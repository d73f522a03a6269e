//! The exporter process: follow coturn's statistics in Redis, serve `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures::TryStreamExt;
use tokio::sync::broadcast::error::RecvError;

use crate::config::LogFormat;

use super::{CHANNEL_PATTERN, STATUS_KEY_PATTERN, TurnStats};

/// Prometheus metrics for a coturn that publishes its statistics to Redis (coturn's
/// `--redis-statsdb`): live allocations, allocations made and ended, relayed bytes and packets.
/// No usernames or addresses in the labels.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "otter-signaling turn-exporter",
    bin_name = "otter-signaling turn-exporter",
    version
)]
pub struct Args {
    /// The Redis coturn publishes to (`redis://host:port[/db]`, the same server and database as
    /// coturn's `--redis-statsdb`).
    #[arg(
        long,
        env = "OTTER_TURN_STATS_REDIS_URL",
        default_value = "redis://127.0.0.1:6390",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Address of `/metrics`, `/healthz` and `/readyz` (ready while subscribed to Redis).
    #[arg(
        long,
        env = "OTTER_TURN_EXPORTER_LISTEN",
        default_value = "0.0.0.0:9641"
    )]
    pub listen: SocketAddr,

    /// Log format (level via `OTTER_LOG`).
    #[arg(long, env = "OTTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone)]
struct Shared {
    stats: Arc<Mutex<TurnStats>>,
    subscriber: SubscriberClient,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, TurnStats> {
        // A panic while holding the lock leaves counters that are still worth serving.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn builder(config: Config) -> Builder {
    let mut b = Builder::from_config(config);
    b.with_performance_config(|p| {
        p.default_command_timeout = Duration::from_secs(5);
        // A burst of allocations ending publishes several messages each.
        p.broadcast_channel_capacity = 1 << 14;
    })
    .with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(2);
        c.internal_command_timeout = Duration::from_secs(2);
    })
    .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    b
}

/// Run until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::from_url(&args.redis_url).context("invalid --redis-url")?;
    // Keep retrying the first connection too: coturn's Redis may start after the exporter.
    config.fail_fast = false;
    let client = builder(config.clone()).build()?;
    let subscriber = builder(config).build_subscriber_client()?;
    client.connect();
    subscriber.connect();
    let shared = Shared {
        stats: Arc::new(Mutex::new(TurnStats::new())),
        subscriber,
    };
    let follower = tokio::spawn(follow(shared.clone(), client));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "serving TURN metrics on /metrics");
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(otter_shutdown::termination())
        .await?;
    follower.abort();
    Ok(())
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let text = {
        let stats = s.stats();
        stats.connected.set(i64::from(s.subscriber.is_connected()));
        stats.encode()
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, &'static str) {
    if s.subscriber.is_connected() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to coturn's statistics Redis",
        )
    }
}

/// Subscribe, read the live allocations, then apply every message; read them again after each
/// reconnection or lost message, since messages published meanwhile are gone.
async fn follow(shared: Shared, client: Client) {
    let sub = shared.subscriber.clone();
    let mut messages = sub.message_rx();
    let mut reconnects = sub.reconnect_rx();
    // Re-issues the PSUBSCRIBE after a reconnection.
    let _manager = sub.manage_subscriptions();
    while let Err(e) = sub.psubscribe(CHANNEL_PATTERN).await {
        tracing::warn!(error = %e, "subscribing to coturn's statistics; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!("subscribed to coturn's statistics");
    let mut stale = true;
    loop {
        if stale {
            match resync(&shared, &client).await {
                Ok(n) => tracing::info!(allocations = n, "read the live allocations"),
                Err(e) => tracing::warn!(error = %e, "reading the live allocations failed"),
            }
            stale = false;
        }
        tokio::select! {
            m = messages.recv() => match m {
                Ok(m) => {
                    let payload = m.value.as_string().unwrap_or_default();
                    shared.stats().message(&m.channel, &payload);
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "statistics messages lost; re-reading");
                    stale = true;
                }
                Err(RecvError::Closed) => return,
            },
            r = reconnects.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => stale = true,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Replace the live set with coturn's status keys; returns how many there are.
async fn resync(shared: &Shared, client: &Client) -> Result<usize, fred::error::Error> {
    client.wait_for_connect().await?;
    let keys: Vec<String> = client
        .scan_buffered(STATUS_KEY_PATTERN, Some(1000), None)
        .try_filter_map(|k| async move { Ok(k.into_string()) })
        .try_collect()
        .await?;
    let mut pairs = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = client.mget(chunk.to_vec()).await?;
        // A key gone since SCAN (the allocation ended) reads as nil and is skipped.
        pairs.extend(
            chunk
                .iter()
                .zip(values)
                .filter_map(|(k, v)| Some((k.clone(), v?))),
        );
    }
    let mut stats = shared.stats();
    stats.resync(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(stats.live())
}
