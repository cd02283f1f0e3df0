//! What the server processes (`statuslist worker`, `statuslist operator`, the dev issuer)
//! share, owned by none of them: the log format and tracing set-up, the shutdown signal,
//! and the fingerprint of a mounted directory (to notice a Secret or ConfigMap update).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How log lines are written (`--log-format`, `LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

pub mod telemetry;

pub use telemetry::Telemetry;

/// Installs the process's tracing subscriber (once; later calls do nothing but return a
/// [`Telemetry`] that exports nothing): log lines as `format` says, filtered by
/// `RUST_LOG` (dependencies speak at warn unless it says otherwise: tokio_postgres logs
/// every server notice at info), and, when the environment configures an OTLP endpoint
/// ([`telemetry`]), this project's spans (down to debug) and its events at info and above
/// exported as `service` (unless `OTEL_SERVICE_NAME` names it), whatever `RUST_LOG` keeps
/// in the log. Runs inside a Tokio runtime (the export task is spawned on it). An
/// OpenTelemetry setting that cannot be honoured is an error.
pub fn init_tracing(format: LogFormat, service: &str) -> Result<Telemetry, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,tokio_postgres=warn,deadpool=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,tower=warn",
        )
    });
    let log = match format {
        // The enclosing spans once (`spans`), not also the innermost again (`span`).
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let settings = telemetry::Settings::from_env(|name| std::env::var(name).ok())?;
    if tracing::dispatcher::has_been_set() {
        // Installed already: no second exporter, whose tracer no subscriber would use.
        return Ok(Telemetry::default());
    }
    let (telemetry, tracer) = match settings {
        Some(settings) => {
            let (telemetry, tracer) = telemetry::start(settings, service)?;
            (telemetry, Some(tracer))
        }
        None => (Telemetry::default(), None),
    };
    // This project's spans down to debug (the inner ones: verification, JWKS fetch, lease
    // claim, store, batch flush, publication steps) and its events at info and above (as
    // span events). Decided once per call site, so nothing else pays per event.
    let exported = |meta: &tracing::Metadata<'_>| {
        meta.target().starts_with("statuslist")
            && *meta.level()
                <= if meta.is_span() {
                    tracing::Level::DEBUG
                } else {
                    tracing::Level::INFO
                }
    };
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::FilterFn::new(exported)
                    .with_max_level_hint(tracing_subscriber::filter::LevelFilter::DEBUG),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(spans)
        .try_init();
    if telemetry.enabled() {
        tracing::info!(service, "OpenTelemetry trace export on");
    }
    Ok(telemetry)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// What identifies a directory's content: names, modification times and sizes of its
/// entries, links followed (a mounted Secret or ConfigMap update swaps the `..data` link,
/// which changes them).
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| {
            let m = std::fs::metadata(e.path()).ok();
            (
                e.path(),
                m.as_ref().and_then(|m| m.modified().ok()),
                m.map_or(0, |m| m.len()),
            )
        })
        .collect();
    v.sort();
    v
}
