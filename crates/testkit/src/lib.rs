//! What every test crate of the workspace shares. Tests wait on conditions, never on
//! time: [`eventually`] polls a check until it holds, and fails with what it waited for.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with
/// `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(100), timeout, what, check).await
}

/// [`eventually`], polling every `every` (for what must be seen quickly: a revocation
/// becoming visible, a port opening).
pub async fn eventually_every<T, F, Fut>(
    every: Duration,
    timeout: Duration,
    what: &str,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match within(every, timeout, check).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` every `every` until it returns `Some`; `None` once `timeout` has passed
/// without it (for a caller whose failure must say more than what it waited for).
pub async fn within<T, F, Fut>(every: Duration, timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await; // polling a condition
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::{eventually, eventually_every};

    #[tokio::test]
    async fn returns_what_the_check_found() {
        let calls = AtomicU32::new(0);
        let found = eventually_every(
            Duration::from_millis(1),
            Duration::from_secs(10),
            "3",
            || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move { (n == 3).then_some(n) }
            },
        )
        .await;
        assert_eq!(found, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn fails_naming_what_it_waited_for() {
        eventually(Duration::from_millis(1), "nothing", || async { None::<()> }).await;
    }
}
