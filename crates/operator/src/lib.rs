//! The operator: the StatusList controller ([`controller`]) over the reconcile core
//! ([`core`]), which works on PostgreSQL alone so `statuslist dev` can reuse it, and
//! [`leader`]: leader election on a Kubernetes Lease, so one replica reconciles at a time.
//! Writes from a replica with a stale view are refused by the database (the pool's UID and
//! generation fence); `tests/tests/operator.rs` shows both against a real API server.

pub mod controller;
pub mod core;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod process;
pub mod uninstall;

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
