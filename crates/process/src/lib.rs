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

/// Installs the process's tracing subscriber (once; later calls do nothing). `RUST_LOG`
/// filters; dependencies speak at warn unless it says otherwise (tokio_postgres logs every
/// server notice at info).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,tokio_postgres=warn,deadpool=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,tower=warn",
        )
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        // The enclosing spans once (`spans`), not also the innermost again (`span`).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
