//! The operator: the StatusList controller ([`controller`]) over the reconcile core
//! ([`core`]), which works on PostgreSQL alone so `statuslist dev` can reuse it.
//!
//! Two replicas at once are safe without leader election: every database step is
//! idempotent and locked (provisioning holds the pool row, reclaim and retire lock their
//! rows), status is written with server-side apply by one field manager, and Events are
//! deduplicated by the recorder. A second replica only repeats work.

pub mod controller;
pub mod core;
pub mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

/// `/healthz`, `/readyz` (database reachable), `/metrics`.
pub fn router(ctx: Arc<controller::Context>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ctx): State<Arc<controller::Context>>| async move {
                match ctx.store.ping().await {
                    Ok(()) => (StatusCode::OK, "ready"),
                    Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(ctx): State<Arc<controller::Context>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    ctx.metrics.encode(),
                )
                    .into_response()
            }),
        )
        .with_state(ctx)
}
