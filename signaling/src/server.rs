//! Wiring: config in, a running server out, and the shutdown sequence.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::auth::RoomAuth;
use crate::config::Config;
use crate::conn::ConnLimits;
use crate::http::{AppState, router};
use crate::hub::Hub;
use crate::ice::{IceSource, IceUris};
use crate::metrics::Metrics;
use crate::protocol::Limits;
use crate::store::memory::MemoryStore;
use crate::store::{LocalPeers, RoomStore};

/// Run until SIGTERM/SIGINT, then drain.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let secrets = config.validate().context("invalid configuration")?;
    if secrets.token.is_none() {
        tracing::warn!(
            "no room-token secret configured: rooms are open to anyone who can reach this server"
        );
    }
    if secrets.turn.is_none() && !config.turn_uris.is_empty() {
        tracing::warn!("TURN URIs are configured but no TURN secret: clients get STUN only");
    }
    let flags = IceUris {
        stun_uris: config.stun_uris.clone(),
        turn_uris: config.turn_uris.clone(),
    };
    if let Some(uri) = flags.first_bad_uri() {
        bail!("{uri:?} in --stun-uris/--turn-uris is not a stun:, stuns:, turn: or turns: URI");
    }
    let ice = Arc::new(IceSource::new(flags, secrets.turn.clone(), config.turn_ttl));
    if let Some(path) = &config.ice_config {
        Arc::clone(&ice)
            .watch(path.clone(), config.ice_config_poll)
            .await
            .context("loading the ICE config file")?;
    }
    let metrics = Arc::new(Metrics::new());
    let local = Arc::new(LocalPeers::default());
    let store: Arc<dyn RoomStore> = match &config.redis_url {
        None => {
            tracing::info!("room state in memory (single server)");
            Arc::new(MemoryStore::new(Arc::clone(&local)))
        }
        Some(url) => crate::store::redis::RedisStore::start(
            url,
            config.redis_ca_file.as_deref(),
            config.replica_lease,
            Arc::clone(&local),
        )
        .await
        .context("setting up Redis room state (check --redis-url and --redis-ca-file)")?,
    };
    let limits = Limits {
        max_peers: config.max_peers_per_room,
        max_message_bytes: config.max_message_bytes,
    };
    let hub = Arc::new(Hub::new(
        store,
        local,
        RoomAuth::new(secrets.token.as_deref()),
        ice,
        metrics,
        limits,
        config.reconnect_grace,
    ));
    let conn_limits = ConnLimits {
        max_message_bytes: config.max_message_bytes as usize,
        rate_per_sec: NonZeroU32::new(config.rate_limit)
            .context("--rate-limit must be at least 1")?,
        burst: NonZeroU32::new(config.rate_burst).context("--rate-burst must be at least 1")?,
        idle_timeout: config.idle_timeout,
        ping_interval: config.ping_interval,
        queue: 256,
    };
    let shutting_down = Arc::new(AtomicBool::new(false));
    let app = router(AppState {
        hub: Arc::clone(&hub),
        limits: conn_limits,
        allowed_origins: Arc::new(config.allowed_origins.clone()),
        max_connections: config.max_connections,
        shutting_down: Arc::clone(&shutting_down),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = config.public_url.as_deref().unwrap_or(""), "otter-signaling listening");
    // Printed plainly too, so scripts and tests can find an OS-chosen port.
    println!("listening on http://{addr}");

    let stop = {
        let hub = Arc::clone(&hub);
        let shutting_down = Arc::clone(&shutting_down);
        async move {
            otter_shutdown::termination().await;
            tracing::info!("shutting down: telling clients to reconnect");
            shutting_down.store(true, Ordering::Relaxed);
            hub.shutdown.cancel();
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP server failed")?;
    drain(&hub, config.shutdown_grace).await;
    Ok(())
}

/// WebSocket tasks outlive axum's graceful shutdown; wait for them, within the bound.
async fn drain(hub: &Hub, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while hub.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = hub.metrics.connections.get();
    if left > 0 {
        tracing::warn!(
            left,
            "shutdown grace over; closing the remaining connections"
        );
    } else {
        tracing::info!("all connections drained");
    }
}
