//! Wiring: config in, a running server out, and the shutdown sequence.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::RoomAuth;
use crate::config::Config;
use crate::conn::ConnLimits;
use crate::http::{AppState, metrics_router, router};
use crate::hub::Hub;
use crate::ice::{IceSource, IceUris};
use crate::metrics::Metrics;
use crate::protocol::Limits;
use crate::roster;
use crate::store::memory::MemoryStore;
use crate::store::{LocalPeers, RoomStore};

/// Run until SIGTERM/SIGINT, then drain.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let hub = build_hub(&config).await?;
    let conn_limits = conn_limits(&config)?;
    {
        let hub = Arc::clone(&hub);
        let tick = roster::tick_for(config.ping_interval, config.join_timeout);
        tokio::spawn(async move { hub.roster.run(tick).await });
    }
    let shutting_down = Arc::new(AtomicBool::new(false));
    let state = AppState {
        hub: Arc::clone(&hub),
        limits: Arc::new(conn_limits),
        allowed_origins: Arc::new(config.allowed_origins.clone()),
        max_connections: config.max_connections,
        shutting_down: Arc::clone(&shutting_down),
        serve_metrics: config.metrics_listen.is_none(),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let http = HttpOptions {
        header_read_timeout: config.header_read_timeout,
    };
    let metrics_task = match config.metrics_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics listening");
            let app = metrics_router(state.clone());
            Some(tokio::spawn(serve_http(l, app, http, stop.clone())))
        }
        None => None,
    };
    tracing::info!(%addr, public_url = config.public_url.as_deref().unwrap_or(""), "otter-signaling listening");
    // Printed plainly too, so scripts and tests can find an OS-chosen port.
    println!("listening on http://{addr}");

    {
        let hub = Arc::clone(&hub);
        let stop = stop.clone();
        tokio::spawn(async move {
            otter_shutdown::termination().await;
            tracing::info!("shutting down: telling clients to reconnect");
            shutting_down.store(true, Ordering::Relaxed);
            hub.roster.shut_down();
            stop.cancel();
        });
    }
    serve_http(listener, router(state), http, stop).await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    drain(&hub, config.shutdown_grace).await;
    Ok(())
}

/// Secrets, ICE servers, room store and auth: the hub every connection uses.
async fn build_hub(config: &Config) -> anyhow::Result<Arc<Hub>> {
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
    let ice = Arc::new(
        IceSource::new(flags, secrets.turn.clone(), config.turn_ttl)
            .with_relay_only(config.relay_only),
    );
    if let (Some(path), Some(_)) = (&config.turn_secret_file, &secrets.turn) {
        Arc::clone(&ice).watch_turn_secret(path.clone(), config.ice_config_poll);
    }
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
        RoomAuth::new(secrets.token.as_deref())
            .with_max_lifetime(config.max_token_lifetime)
            .with_single_use(config.single_use_tokens),
        ice,
        metrics,
        limits,
        config.reconnect_grace,
    ));
    Ok(hub)
}

fn conn_limits(config: &Config) -> anyhow::Result<ConnLimits> {
    Ok(ConnLimits {
        max_message_bytes: config.max_message_bytes as usize,
        rate_per_sec: NonZeroU32::new(config.rate_limit)
            .context("--rate-limit must be at least 1")?,
        burst: NonZeroU32::new(config.rate_burst).context("--rate-burst must be at least 1")?,
        idle_timeout: config.idle_timeout,
        ping_interval: config.ping_interval,
        join_timeout: config.join_timeout,
        // Room for a couple of the largest frames plus the small ones of a call; a peer that
        // stops reading pins at most this much before it is cut off.
        queue_bytes: (1 << 20).max(4 * config.max_message_bytes as usize),
        close_grace: Duration::from_secs(2),
    })
}

/// Largest request head (request line and headers) a client may send.
const MAX_HEAD_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Copy)]
struct HttpOptions {
    header_read_timeout: Duration,
}

/// Accept HTTP/1.1 connections until `stop`, each with a bounded time and size for its
/// request head (slowloris), and WebSocket upgrades (which then live on in their own tasks).
async fn serve_http(
    listener: TcpListener,
    app: Router,
    opts: HttpOptions,
    stop: CancellationToken,
) {
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()))
            .with_upgrades();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Let a request in flight finish; keep-alive connections close.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(Duration::from_secs(2), conn).await {
                        Ok(ended) => ended,
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
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
