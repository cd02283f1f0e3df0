//! What the worker answered, as one log line per many requests instead of one per
//! request: at the default level a busy worker writes a line per 1,000 answers or more
//! (at most one a minute), a quiet one a line an hour when it answered anything. Each
//! request's own line is at debug level (`RUST_LOG=statuslist_worker=debug`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;

/// Answers counted since the last summary line.
#[derive(Debug, Default)]
pub struct Summary {
    issued: AtomicU64,
    revoked: AtomicU64,
    other_ok: AtomicU64,
    client_errors: AtomicU64,
    unavailable: AtomicU64,
    server_errors: AtomicU64,
}

/// Answers a summary line covers at least (unless [`QUIET_INTERVAL`] passed).
pub const LINE_EVERY: u64 = 1_000;
/// Shortest time between two summary lines.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Longest time between two summary lines while anything was answered.
pub const QUIET_INTERVAL: Duration = Duration::from_secs(3_600);

impl Summary {
    /// Counts one answer of `route`.
    pub fn count(&self, route: &str, status: StatusCode) {
        let counter = match status.as_u16() {
            200..=399 if route == "/issue" => &self.issued,
            200..=399 if route == "/revoke" => &self.revoked,
            200..=399 => &self.other_ok,
            503 => &self.unavailable,
            400..=499 => &self.client_errors,
            _ => &self.server_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        [
            &self.issued,
            &self.revoked,
            &self.other_ok,
            &self.client_errors,
            &self.unavailable,
            &self.server_errors,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// Logs the counts and starts over.
    fn emit(&self, since: Duration) {
        // Taken before the macro: its fields are not evaluated when the level is off.
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let (issued, revoked, other_ok) = (
            take(&self.issued),
            take(&self.revoked),
            take(&self.other_ok),
        );
        let (client_errors, unavailable, server_errors) = (
            take(&self.client_errors),
            take(&self.unavailable),
            take(&self.server_errors),
        );
        tracing::info!(
            seconds = since.as_secs(),
            issued,
            revoked,
            other_ok,
            client_errors,
            unavailable,
            server_errors,
            "requests answered"
        );
    }

    /// Writes the summary lines until the task is aborted.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut last = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let since = last.elapsed();
            let total = self.total();
            if (total >= LINE_EVERY && since >= MIN_INTERVAL)
                || (total > 0 && since >= QUIET_INTERVAL)
            {
                self.emit(since);
                last = tokio::time::Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_kind_and_reset_by_a_line() {
        let s = Summary::default();
        s.count("/issue", StatusCode::OK);
        s.count("/revoke", StatusCode::ACCEPTED);
        s.count("/t/{id}", StatusCode::NOT_MODIFIED);
        s.count("/issue", StatusCode::UNAUTHORIZED);
        s.count("/issue", StatusCode::SERVICE_UNAVAILABLE);
        s.count("/issue", StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(s.issued.load(Ordering::Relaxed), 1);
        assert_eq!(s.revoked.load(Ordering::Relaxed), 1);
        assert_eq!(s.other_ok.load(Ordering::Relaxed), 1);
        assert_eq!(s.client_errors.load(Ordering::Relaxed), 1);
        assert_eq!(s.unavailable.load(Ordering::Relaxed), 1);
        assert_eq!(s.server_errors.load(Ordering::Relaxed), 1);
        assert_eq!(s.total(), 6);
        s.emit(Duration::from_secs(1));
        assert_eq!(s.total(), 0);
    }
}
