//! HTTP surface: the WebSocket upgrade, ICE servers, health, metrics, and the embedded web files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{self, Either, FutureExt};
use hyper_util::rt::TokioIo;
use rand::Rng;
use rust_embed::RustEmbed;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::conn::{self, ConnLimits};
use crate::hub::Hub;
use crate::protocol::{ErrorCode, SUBPROTOCOL};
use crate::ws::WebSocket;

/// The browser SDK and the demo page, compiled into the binary.
#[derive(RustEmbed)]
#[folder = "web/"]
struct Web;

#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub limits: Arc<ConnLimits>,
    pub allowed_origins: Arc<Vec<String>>,
    pub max_connections: usize,
    pub shutting_down: Arc<AtomicBool>,
    /// `/metrics` on this router (false when a separate metrics listener serves it).
    pub serve_metrics: bool,
}

/// The demo page and the SDK: scripts and styles from this server only, connections back to
/// it, media from the camera; never framed by another site (clickjacking); no referrer, so the
/// room name in the URL does not leak to other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The router with `/metrics` only, for `--metrics-listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    // Apps on other origins fetch ICE servers with a bearer token (a CORS preflight), limited to
    // the allowed origins when those are configured.
    let cors = CorsLayer::new()
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION])
        .max_age(std::time::Duration::from_secs(600));
    let cors = if state.allowed_origins.is_empty() {
        cors.allow_origin(Any)
    } else {
        cors.allow_origin(AllowOrigin::list(
            state
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
    };
    let router = Router::new()
        .route("/ws", get(ws))
        .route("/v1/ice-servers", get(ice_servers).layer(cors))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    let router = if state.serve_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router
        .route("/", get(|headers: HeaderMap| async move { web_file("index.html", &headers) }))
        .route("/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { web_file(&path, &headers) }))
        .with_state(state)
}

fn json_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code.as_str(), "message": message})),
    )
        .into_response()
}

async fn ws(State(app): State<AppState>, mut req: Request) -> Response {
    let headers = req.headers();
    if let Some(refused) = refuse_upgrade(&app, headers) {
        return refused;
    }
    let Some(accept) = websocket_accept(headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        )
            .into_response();
    };
    let offered_v1 = headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let over = app.hub.metrics.connections.get() >= app.max_connections as i64;
    let limits = Arc::clone(&app.limits);
    let hub = Arc::clone(&app.hub);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(connection_task(upgrade, hub, limits, over));
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if offered_v1 {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    }
    resp.body(Body::empty())
        .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "bad header").into_response())
}

/// A WebSocket connection's task, from the upgrade to the end: the future every connection
/// carries for its whole life, and so kept to what the connection needs. Chained rather than an
/// `async` block: a block keeps what it captured (the upgrade, the hub, the limits) beside the
/// connection's future after they were moved into it.
fn connection_task(
    upgrade: hyper::upgrade::OnUpgrade,
    hub: Arc<Hub>,
    limits: Arc<ConnLimits>,
    over: bool,
) -> impl Future<Output = ()> + Send + 'static {
    let max = limits.max_message_bytes;
    websocket(upgrade, max).then(move |ws| match ws {
        Some(ws) => Either::Left(conn::serve(ws, hub, limits, over)),
        None => Either::Right(future::ready(())),
    })
}

/// The upgraded connection as a WebSocket (`ws`): it holds no buffer between frames, and
/// refuses a message past the limit by its header. Over the TCP stream itself, taken back
/// from hyper: its `Upgraded` keeps the stream in a box of its own and 48 bytes in the task,
/// for every connection's life. Bytes that hyper read past the request are parsed first.
async fn websocket(
    upgrade: hyper::upgrade::OnUpgrade,
    max_message_bytes: usize,
) -> Option<WebSocket<TcpStream>> {
    let upgraded = match upgrade.await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return None;
        }
    };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Some(WebSocket::with_input(
            parts.io.into_inner(),
            &parts.read_buf,
            max_message_bytes,
        )),
        // Only if the server were given another transport than the TCP stream it accepts.
        Err(_) => {
            tracing::error!("WebSocket upgrade over an unexpected transport; closing");
            None
        }
    }
}

/// The `Sec-WebSocket-Accept` for a valid RFC 6455 upgrade request, or `None`.
fn websocket_accept(headers: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)? != "13" {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Some(derive_accept_key(key.as_bytes()))
}

/// Shutdown, origin and subprotocol checks before an upgrade; the refusal if any.
fn refuse_upgrade(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    if app.shutting_down.load(Ordering::Relaxed) {
        return Some(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerBusy,
            "server is shutting down",
        ));
    }
    if !app.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
        && !app
            .allowed_origins
            .iter()
            .any(|o| origin.as_bytes() == o.as_bytes())
    {
        return Some((
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "origin-forbidden", "message": "this origin may not open signaling connections"})),
        )
            .into_response());
    }
    // No subprotocol offered means v1; offering only ones we do not speak is refused.
    if let Some(offered) = headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
        let speaks_v1 = offered
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|p| p.trim() == SUBPROTOCOL);
        if !speaks_v1 {
            return Some((
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "unsupported-version", "message": format!("this server speaks {SUBPROTOCOL}")})),
            )
                .into_response());
        }
    }
    None
}

async fn ice_servers(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    if let Err(e) = app.hub.auth.check_any_room(bearer) {
        app.hub.metrics.error(e.code);
        return json_error(StatusCode::UNAUTHORIZED, e.code, &e.message);
    }
    let id = format!("anon-{:08x}", rand::rng().random::<u32>());
    let servers = app.hub.ice.servers_for(&id);
    let mut resp = axum::Json(json!({"iceServers": servers, "ttl": app.hub.ice.ttl().as_secs()}))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The credentials of `Authorization: Bearer …`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else if !app.hub.store.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "room store unavailable").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.hub.metrics.encode(),
    )
        .into_response()
}

/// Serve an embedded file. Revalidated on every use (`no-cache` + ETag), so an upgraded server
/// never leaves browsers on a stale SDK, while unchanged files cost a 304. Readable from any
/// origin: apps on their own origin import `/otter.js` as a module, which browsers fetch with
/// CORS; the files are public anyway.
fn web_file(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Web::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    let built = if fresh {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        builder
            .header(header::CONTENT_TYPE, mime.as_ref())
            .body(Body::from(file.data.into_owned()))
    };
    built.unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "bad header").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    /// Every connection carries its task for its whole life, and tokio allocates a task (its
    /// future and about 100 bytes of its own) in steps of 128 bytes: 640 now, 896 before the
    /// roster (docs/benchmarks.md, memory). State added to the connection (or held across one
    /// of its awaits) that crosses the step costs every connection 128 bytes: box what is rare
    /// instead, or move the bound knowingly.
    #[test]
    fn the_connection_task_stays_within_its_allocation_step() {
        let limits = ConnLimits {
            max_message_bytes: 65536,
            rate_per_sec: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            join_timeout: Duration::from_secs(10),
            queue_bytes: 1 << 20,
            close_grace: Duration::from_secs(2),
        };
        let mut req = Request::new(Body::empty());
        let upgrade = hyper::upgrade::on(&mut req);
        let hub = Arc::new(crate::hub::props::test_hub(4));
        let task = connection_task(upgrade, hub, Arc::new(limits), false);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 640 - 112,
            "the connection's task holds {size} bytes"
        );
    }
}
