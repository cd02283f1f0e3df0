//! The worker: stateless axum service answering issuers (`/issue`, `/revoke`) and
//! verifiers (`/t/{id}`, `/b/{id}`, `/.well-known/jwks.json`), publishing lists in the
//! background. All shared state lives in PostgreSQL.
//!
//! [`router`] builds the HTTP surface from an [`AppState`]; [`Worker::start`] adds the
//! background tasks (publisher, lease renewal, notifications); `main.rs` only wires the
//! configuration.

pub mod aggregation;
pub mod config;
pub mod egress;
pub mod error;
pub mod issuers;
pub mod jwks;
pub mod leases;
pub mod metrics;
pub mod publisher;
pub mod render;
pub mod request;
mod routes;
pub mod served;
pub mod signing;
pub mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use statuslist_store::Store;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::jwks::JwksCache;
use crate::leases::Leases;
use crate::metrics::{Metrics, RequestLabels, RouteLabel};
use crate::publisher::Publisher;
use crate::served::ArtifactCache;
use crate::signing::SigningKeys;

/// Everything a request needs, built once at startup.
pub struct AppState {
    pub store: Store,
    pub jwks: JwksCache,
    pub keys: Arc<SigningKeys>,
    pub leases: Arc<Leases>,
    pub cache: Arc<ArtifactCache>,
    pub issuers: Arc<issuers::IssuerCache>,
    pub metrics: Metrics,
    /// Answers counted for the summary log line ([`summary`]).
    pub summary: Arc<summary::Summary>,
    /// Set once the worker is stopping: answers close their connections and `/readyz`
    /// is 503 (see `--drain-seconds`).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Longest time a request may take; past it the contract's 503 (JSON) is answered.
    pub request_timeout: Duration,
}

/// The default of [`AppState::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes of [`router`], each a metric label as it is (no allocation per request);
/// a route missing here is counted as "unmatched".
mod route {
    pub const TOKEN_LIST: &str = "/t/{id}";
    pub const BITSTRING_LIST: &str = "/b/{id}";
    pub const JWKS: &str = "/.well-known/jwks.json";
    pub const ISSUE: &str = "/issue";
    pub const REVOKE: &str = "/revoke";
    pub const REVOKE_BATCH: &str = "/revoke-batch";
    pub const SUSPEND: &str = "/suspend";
    pub const REINSTATE: &str = "/reinstate";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const DATABASE: &str = "/healthz/database";
    pub const AGGREGATION: &str = "/a/{id}";
    pub const ALL: [&str; 12] = [
        TOKEN_LIST,
        BITSTRING_LIST,
        AGGREGATION,
        JWKS,
        ISSUE,
        REVOKE,
        REVOKE_BATCH,
        SUSPEND,
        REINSTATE,
        HEALTHZ,
        READYZ,
        DATABASE,
    ];
}

/// Ids for requests that bring no `x-request-id`: UUID-shaped, a random half per process
/// and a counter (unique within the process, and across processes by the random half),
/// without the call to the kernel's random source a v4 UUID makes per request.
#[derive(Debug, Clone)]
struct RequestIds {
    base: u64,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            base: uuid::Uuid::new_v4().as_u64_pair().0,
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::from_u64_pair(self.base, n)
            .hyphenated()
            .encode_lower(&mut text);
        axum::http::HeaderValue::from_str(id)
            .ok()
            .map(RequestId::new)
    }
}

/// What [`edge`] needs, cloned once per request as one `Arc`.
struct Edge {
    metrics: Metrics,
    summary: Arc<summary::Summary>,
    /// Set once the worker is stopping ([`AppState::draining`]).
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// [`AppState::request_timeout`].
    limit: Duration,
}

/// Around every route, in one middleware (one boxed future per request, not three):
/// - the time bound: a request past it gets the contract's 503 body;
/// - the metrics and the summary line's counts, by route and status (a timed-out request
///   counted as the 503 it was answered);
/// - while draining, `Connection: close` on every answer: the client's next request opens
///   a new connection, which the Service sends to another worker.
async fn edge(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let route = route_of(&request);
    let start = Instant::now();
    let mut response = match tokio::time::timeout(edge.limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                limit_ms = edge.limit.as_millis() as u64,
                "request timed out"
            );
            axum::response::IntoResponse::into_response(error::ApiError::Unavailable)
        }
    };
    let status = response.status();
    if statuslist_process::telemetry::enabled() {
        let span = tracing::Span::current();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    edge.metrics
        .latency
        .get_or_create(&RouteLabel { route })
        .observe(start.elapsed().as_secs_f64());
    edge.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
    edge.summary.count(route, status);
    if edge.draining.load(std::sync::atomic::Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The span of a request: method and path only (no query, no body, no token in the log).
/// When traces are exported it is also the OpenTelemetry server span, `POST /issue`,
/// continuing the caller's `traceparent`.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    if !statuslist_process::telemetry::enabled() {
        return tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    }
    let route = route_of(req);
    if matches!(route, route::HEALTHZ | route::READYZ | route::DATABASE) {
        // Probes (every few seconds, from the kubelet) are no trace of anyone's: a target
        // outside this project's keeps them out of the export, in the log as before.
        return tracing::info_span!(target: "probe", "request", request_id = %id, method = %req.method(), path = %req.uri().path());
    }
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    statuslist_process::telemetry::set_remote_parent(&span, req.headers());
    span
}

/// The route a request matched, as [`route`] names it ("unmatched" for none).
fn route_of(request: &Request) -> &'static str {
    request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| route::ALL.iter().find(|r| **r == p.as_str()))
        .copied()
        .unwrap_or("unmatched")
}

/// The operator-facing surface, on a port of its own that the Ingress never routes:
/// `/metrics` (and `/healthz`, for checks of that port).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics))
        .route("/healthz", get(routes::healthz))
        .with_state(state)
}

/// The HTTP surface of issuers, verifiers and probes (metrics are on
/// [`metrics_router`]).
pub fn router(state: Arc<AppState>) -> Router {
    let public = Router::new()
        .route(route::TOKEN_LIST, get(routes::token_list))
        .route(route::BITSTRING_LIST, get(routes::bitstring_list))
        .route(route::AGGREGATION, get(routes::aggregation))
        .route(route::JWKS, get(routes::jwks))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET])
                .expose_headers([axum::http::header::ETAG, axum::http::header::CACHE_CONTROL])
                // No `Vary: Origin, Access-Control-Request-*`: the answers are the same
                // whatever those say (any origin, GET). The layer is cloned for every
                // request, and a list of headers to vary on is copied and joined each time.
                .vary(Vec::<axum::http::HeaderName>::new()),
        );
    let issuer = Router::new()
        .route(route::ISSUE, post(routes::issue))
        .route(route::REVOKE, post(routes::revoke))
        .route(route::REVOKE_BATCH, post(routes::revoke_batch))
        .route(route::SUSPEND, post(routes::suspend))
        .route(route::REINSTATE, post(routes::reinstate));
    Router::new()
        .merge(public)
        .merge(issuer)
        .route(route::HEALTHZ, get(routes::healthz))
        .route(route::READYZ, get(routes::readyz))
        .route(route::DATABASE, get(routes::database))
        .fallback(routes::not_found)
        // The middleware's state is cloned for every request: one Arc.
        .layer(middleware::from_fn_with_state(
            Arc::new(Edge {
                metrics: state.metrics.clone(),
                summary: state.summary.clone(),
                draining: state.draining.clone(),
                limit: state.request_timeout,
            }),
            edge,
        ))
        .layer(CompressionLayer::new().gzip(true))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // A 5xx is an answer, not an error of the process: a 503 is what an outage
                // or a dry pool is expected to answer, and a probe's 503 what a start is.
                // Their causes are logged once per change where they happen; each answer
                // only at debug, and counted in the summary line and the metrics.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(
            REQUEST_ID.clone(),
            RequestIds::new(),
        ))
        .with_state(state)
}

/// A running worker's background tasks.
#[derive(Debug)]
pub struct Worker {
    pub state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts the background tasks: notification listener, publisher, lease renewal.
    pub fn start(state: Arc<AppState>, zlib_level: u32) -> Self {
        let wake = Arc::new(Notify::new());
        let (events, listener) = state.store.listen(&publisher::CHANNELS);
        let publisher = Publisher {
            store: state.store.clone(),
            keys: state.keys.clone(),
            zlib_level,
            metrics: state.metrics.clone(),
            wake: wake.clone(),
            registered: Default::default(),
            copies: Default::default(),
        };
        let tasks = vec![
            listener,
            tokio::spawn(publisher::dispatch(
                events,
                state.cache.clone(),
                state.issuers.clone(),
                wake,
            )),
            tokio::spawn(publisher.run()),
            tokio::spawn(state.leases.clone().renew_forever()),
            tokio::spawn(state.keys.clone().watch()),
            tokio::spawn(state.summary.clone().run()),
        ];
        Self { state, tasks }
    }

    /// Stops the background tasks and gives the leases back.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.state.leases.release_all().await;
    }
}
