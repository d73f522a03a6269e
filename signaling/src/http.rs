//! HTTP surface: the WebSocket upgrade, ICE servers, health, metrics, and the embedded web files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use rust_embed::RustEmbed;
use serde_json::json;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::conn::{self, ConnLimits};
use crate::hub::Hub;
use crate::protocol::{ErrorCode, SUBPROTOCOL};

/// The browser SDK and the demo page, compiled into the binary.
#[derive(RustEmbed)]
#[folder = "web/"]
struct Web;

#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub limits: ConnLimits,
    pub allowed_origins: Arc<Vec<String>>,
    pub max_connections: usize,
    pub shutting_down: Arc<AtomicBool>,
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
    Router::new()
        .route("/ws", get(ws))
        .route("/v1/ice-servers", get(ice_servers).layer(cors))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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

async fn ws(
    State(app): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if app.shutting_down.load(Ordering::Relaxed) {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerBusy,
            "server is shutting down",
        );
    }
    if !app.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
        && !app
            .allowed_origins
            .iter()
            .any(|o| origin.as_bytes() == o.as_bytes())
    {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "origin-forbidden", "message": "this origin may not open signaling connections"})),
        )
            .into_response();
    }
    // No subprotocol offered means v1; offering only ones we do not speak is refused.
    if let Some(offered) = headers.get(header::SEC_WEBSOCKET_PROTOCOL) {
        let speaks_v1 = offered
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|p| p.trim() == SUBPROTOCOL);
        if !speaks_v1 {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "unsupported-version", "message": format!("this server speaks {SUBPROTOCOL}")})),
            )
                .into_response();
        }
    }
    let over = app.hub.metrics.connections.get() >= app.max_connections as i64;
    let limits = app.limits;
    let hub = Arc::clone(&app.hub);
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |socket| conn::serve(socket, hub, limits, over))
}

async fn ice_servers(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
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
