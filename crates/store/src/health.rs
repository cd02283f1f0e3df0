//! The database's health as seen by the notification listener's dedicated connection
//! (connected, and answering its heartbeat in time). Operations are refused at once
//! while it is down, so that a black-holed database costs callers no waiting; with no
//! listener running, nothing is known and nothing is refused.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
enum State {
    #[default]
    Unknown,
    Up,
    Down(String),
}

/// Shared by every clone of a [`crate::Store`]: the state, the connection count, and the
/// latest heartbeat's round trip in microseconds (0: none yet).
#[derive(Debug, Clone, Default)]
pub struct Health(
    Arc<Mutex<State>>,
    Arc<tokio::sync::watch::Sender<u64>>,
    Arc<std::sync::atomic::AtomicU64>,
);

impl Health {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while setting a plain value.
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    pub(crate) fn up(&self) {
        let connected = self.with(|s| {
            if matches!(s, State::Down(_)) {
                tracing::info!("database reachable again");
            }
            !matches!(std::mem::replace(s, State::Up), State::Up)
        });
        if connected {
            self.1.send_modify(|n| *n += 1);
        }
    }

    /// Records a heartbeat's round trip (the notification connection's `SELECT 1`).
    pub(crate) fn round_trip(&self, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.2.store(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// The latest heartbeat's round trip, while the database is up.
    pub fn latency(&self) -> Option<std::time::Duration> {
        let micros = self.2.load(std::sync::atomic::Ordering::Relaxed);
        (micros > 0 && self.is_up() == Some(true)).then(|| std::time::Duration::from_micros(micros))
    }

    /// Counts the (re)connections of the notification listener: each is a chance that
    /// the database is another one than before (restored, replaced, failed over).
    pub(crate) fn connections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    pub(crate) fn down(&self, reason: &str) {
        self.with(|s| {
            if !matches!(s, State::Down(_)) {
                tracing::warn!(%reason, "database unreachable");
            }
            *s = State::Down(reason.to_owned());
        });
    }

    pub(crate) fn unknown(&self) {
        self.with(|s| *s = State::Unknown);
    }

    /// Why the database is considered unreachable, while it is.
    pub fn down_reason(&self) -> Option<String> {
        self.with(|s| match s {
            State::Down(reason) => Some(reason.clone()),
            _ => None,
        })
    }

    /// `Some(true)` connected and answering, `Some(false)` unreachable, `None` not watched.
    pub fn is_up(&self) -> Option<bool> {
        self.with(|s| match s {
            State::Unknown => None,
            State::Up => Some(true),
            State::Down(_) => Some(false),
        })
    }
}
