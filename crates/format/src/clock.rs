//! The one clock of the service: whole seconds since the Unix epoch, as every `iat`,
//! `exp`, `statusExpiry` and database time in seconds is written.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now (0 for a clock set before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_this_code_was_written() {
        // 2026-12-06T00:00:00Z.
        assert!(super::unix_now() > 1_796_515_200);
    }
}
