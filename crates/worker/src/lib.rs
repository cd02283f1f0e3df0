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
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use axum::routing::{get, post};
use statuslist_store::Store;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tracing::Instrument as _;

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
#[derive(Debug)]
struct RequestIds {
    base: u64,
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            base: uuid::Uuid::new_v4().as_u64_pair().0,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::from_u64_pair(self.base, n)
            .hyphenated()
            .encode_lower(&mut text);
        // Hex digits and hyphens: always a valid header value.
        HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// What [`EdgeService`] needs, shared by every route's copy as one `Arc`.
struct Edge {
    metrics: Metrics,
    summary: Arc<summary::Summary>,
    /// Set once the worker is stopping ([`AppState::draining`]).
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// [`AppState::request_timeout`].
    limit: Duration,
    ids: RequestIds,
}

/// Around every route, as one service: axum applies a layer to each route and clones
/// the layered route for every request, a boxed clone per layer; one layer is one clone
/// and one boxed future. It does:
/// - the request id: the caller's `x-request-id`, or one made here; echoed in the answer;
/// - the request's span ([`request_span`]), entered while the route runs;
/// - the time bound: a request past it gets the contract's 503 body;
/// - the metrics and the summary line's counts, by route and status (a timed-out request
///   counted as the 503 it was answered);
/// - while draining, `Connection: close` on every answer: the client's next request opens
///   a new connection, which the Service sends to another worker.
#[derive(Clone)]
struct EdgeLayer(Arc<Edge>);

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            edge: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct EdgeService<S> {
    inner: S,
    edge: Arc<Edge>,
}

type Answer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl<S> tower::Service<Request> for EdgeService<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let edge = self.edge.clone();
        let route = route_of(&request);
        let id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => edge.ids.make(),
        };
        let span = request_span(&request, route, &id);
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let mut response = match tokio::time::timeout(edge.limit, answer).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        tracing::warn!(
                            limit_ms = edge.limit.as_millis() as u64,
                            "request timed out"
                        );
                        axum::response::IntoResponse::into_response(error::ApiError::Unavailable)
                    }
                };
                let status = response.status();
                let elapsed = start.elapsed();
                if statuslist_process::telemetry::enabled() {
                    let span = tracing::Span::current();
                    span.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                // A 5xx is an answer, not an error of the process: a 503 is what an outage
                // or a dry pool is expected to answer, and a probe's 503 what a start is.
                // Their causes are logged once per change where they happen; each answer
                // only at debug, and counted in the summary line and the metrics.
                tracing::debug!(
                    status = status.as_u16(),
                    latency_us = elapsed.as_micros() as u64,
                    "finished processing request"
                );
                edge.metrics
                    .latency
                    .get_or_create(&RouteLabel { route })
                    .observe(elapsed.as_secs_f64());
                edge.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route,
                        status: status.as_u16(),
                    })
                    .inc();
                edge.summary.count(route, status);
                let headers = response.headers_mut();
                if !headers.contains_key(&REQUEST_ID) {
                    headers.insert(REQUEST_ID.clone(), id);
                }
                if edge.draining.load(std::sync::atomic::Ordering::Relaxed) {
                    headers.insert(
                        axum::http::header::CONNECTION,
                        HeaderValue::from_static("close"),
                    );
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The span of a request: method and path only (no query, no body, no token in the log).
/// When traces are exported it is also the OpenTelemetry server span, `POST /issue`,
/// continuing the caller's `traceparent`.
fn request_span(req: &Request, route: &'static str, id: &HeaderValue) -> tracing::Span {
    let id = id.to_str().unwrap_or("-");
    if !statuslist_process::telemetry::enabled() {
        return tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    }
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
    let compressed = CompressionLayer::new().gzip(true);
    let public = Router::new()
        .route(route::TOKEN_LIST, get(routes::token_list))
        .route(route::BITSTRING_LIST, get(routes::bitstring_list))
        // The lists bring their own gzip (encoded once per version); these two JSON
        // documents are compressed as they are answered.
        .route(
            route::AGGREGATION,
            get(routes::aggregation).layer(compressed.clone()),
        )
        .route(route::JWKS, get(routes::jwks).layer(compressed))
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
        // Every route's edge in one layer: a layer is applied to every route and cloned
        // with it for every request.
        .layer(EdgeLayer(Arc::new(Edge {
            metrics: state.metrics.clone(),
            summary: state.summary.clone(),
            draining: state.draining.clone(),
            limit: state.request_timeout,
            ids: RequestIds::new(),
        })))
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
