//! HTTP listener: health, metrics and (later) the client and open-platform APIs.
//!
//! One axum router serves every HTTP route of the process. Errors are JSON objects
//! `{"error": "<code>", "message": "<text>"}` so API clients can branch on `error` without
//! parsing prose; the same shape is used for unknown routes and wrong methods.
//!
//! **Architecture invariant:** this crate knows no other adapter. What it needs from the
//! rest of the server (metrics, health, later the stores) arrives in [`HttpState`], wired by
//! the binary.

pub mod api;
pub mod introspect;
pub mod openapi;
pub mod websocket;

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use confab_core::metrics::Metrics;
use serde::Serialize;

/// Content type of the `/metrics` body: prometheus-client encodes OpenMetrics 1.0 text.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the HTTP handlers read from the rest of the server; cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    /// Counters rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Whether the server can do its job (listeners up, storage reachable); `/healthz`
    /// answers 503 while it returns false so a load balancer stops sending traffic.
    pub health: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The client API (`/api/v1`); absent in tests that only need health and metrics.
    pub api: Option<api::ApiState>,
    /// XMPP over WebSocket (RFC 7395) and its XEP-0156 discovery; absent when not served.
    pub websocket: Option<websocket::WebSocketState>,
}

impl HttpState {
    /// State whose health check always passes.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            health: Arc::new(|| true),
            api: None,
            websocket: None,
        }
    }

    /// Replaces the health check.
    pub fn with_health(mut self, health: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.health = Arc::new(health);
        self
    }
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").finish_non_exhaustive()
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code such as `not_found`.
    pub error: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

/// Builds an error response with the JSON error body.
pub fn error_response(status: StatusCode, error: &'static str, message: String) -> Response {
    (status, Json(ErrorBody { error, message })).into_response()
}

/// Every documented route: its path and its handlers. [`router`] registers exactly these
/// (plus `/openapi.json`), so a test can hold them against the OpenAPI description; a new
/// route is one line here and one in `openapi::ApiDoc`'s `paths(...)`.
fn routes() -> Vec<(&'static str, MethodRouter<HttpState>)> {
    vec![
        ("/healthz", get(healthz)),
        ("/metrics", get(metrics)),
        ("/api/v1/history", get(api::history)),
        ("/api/v1/token/introspect", post(introspect::introspect)),
        ("/api/v1/conversations", get(api::views::conversations)),
        ("/api/v1/sync", get(api::views::sync)),
        ("/api/v1/messages", post(api::send::send_message)),
        ("/api/v1/read", post(api::send::mark_read)),
        (
            "/api/v1/groups",
            get(api::groups::list).post(api::groups::create),
        ),
        (
            "/api/v1/groups/{jid}",
            get(api::groups::show).patch(api::groups::update),
        ),
        (
            "/api/v1/groups/{jid}/members",
            post(api::groups::add_members),
        ),
        (
            "/api/v1/groups/{jid}/members/{member}",
            delete(api::groups::remove_member),
        ),
        (
            "/api/v1/groups/{jid}/messages/{server_id}/read",
            get(api::groups::read_by),
        ),
    ]
}

/// The paths [`router`] serves besides `/openapi.json`, in registration order.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The router with every route; the binary serves it with [`serve`].
pub fn router(state: HttpState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
        .route("/openapi.json", get(openapi::openapi_json))
        // Protocol endpoints other specifications define (RFC 7395, XEP-0156), not part of
        // the JSON API and so not in its OpenAPI description.
        .route(websocket::XMPP_PATH, get(websocket::xmpp))
        .route(websocket::PROTOBUF_PATH, get(websocket::protobuf))
        .route("/.well-known/host-meta", get(websocket::host_meta))
        .route(
            "/.well-known/host-meta.json",
            get(websocket::host_meta_json),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves the router on an already bound listener until `shutdown` completes, then lets
/// in-flight requests finish and waits for every WebSocket session to end (each ends at
/// the same shutdown, which the session runner watches). The caller binds, so a port in use
/// is reported at startup by the code that knows which setting named it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP listener ready");
    }
    let sessions = state.websocket.as_ref().map(|ws| ws.sessions.clone());
    // The peer address reaches the WebSocket sessions (login throttling, loopback rules).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(sessions) = sessions {
        sessions.close();
        sessions.wait().await;
    }
    result
}

/// Health body: `{"status": "ok"}` or `{"status": "unavailable"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok` when healthy.
    status: &'static str,
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The server can do its job", body = Health),
        (status = 503, description = "Listeners down or storage unreachable", body = Health),
    )
)]
async fn healthz(State(state): State<HttpState>) -> Response {
    if (state.health)() {
        (StatusCode::OK, Json(Health { status: "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
            }),
        )
            .into_response()
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Counters in OpenMetrics 1.0 text",
         body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    )
)]
async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Any path no route matches.
async fn not_found(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

/// A known path with a method it does not support; axum adds the `Allow` header.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not support {method}", uri.path()),
    )
}
