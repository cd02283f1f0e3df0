use tokio_postgres::error::SqlState;

/// Store failures. Callers map them once, at their edge (HTTP status, condition, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The lease was reclaimed or expired: the holder must claim another.
    #[error("lease is no longer held by this worker")]
    LeaseLost,
    /// Every position of the lease has been handed out.
    #[error("lease has no positions left")]
    LeaseExhausted,
    /// The same `(client_id, jti)` was issued before with another `statusExpiry`.
    #[error("idempotency key reused with a different statusExpiry")]
    IdempotencyConflict,
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A write from a stale view of a resource (an older generation, or a deleted
    /// resource): refused, nothing changed.
    #[error("superseded: {0}")]
    Superseded(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The schema's tables or functions are missing (the database was replaced by an
    /// empty one, or restored from before the service): retried once migrated again.
    #[error("database schema missing: {0}")]
    SchemaMissing(String),
    #[error("database error: {}", chain(.0))]
    Database(#[source] tokio_postgres::Error),
    /// A database error shared by several callers (one batch), as text.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<statuslist_format::FormatError> for StoreError {
    /// A stored value the format does not accept (an unknown list format, say).
    fn from(err: statuslist_format::FormatError) -> Self {
        StoreError::Corrupt(err.to_string())
    }
}

impl StoreError {
    /// Whether a retry later may succeed (the contract's 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::SchemaMissing(_)
        )
    }

    /// The SQL state, when the database raised one.
    pub(crate) fn sql_state(&self) -> Option<&SqlState> {
        match self {
            StoreError::Database(e) => e.code(),
            _ => None,
        }
    }
}

fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        // Class 08: connection exception; 57P0x: shutdown or startup in progress;
        // 53300: too many connections.
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code);
    }
    // No SQL state: an IO or protocol failure talking to the server.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.to_string().contains("connection")
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if connection_lost(&e) {
            StoreError::Unavailable(chain(&e))
        } else if e
            .code()
            .is_some_and(|c| [SqlState::UNDEFINED_TABLE, SqlState::UNDEFINED_FUNCTION].contains(c))
        {
            StoreError::SchemaMissing(chain(&e))
        } else {
            StoreError::Database(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            // Opening or checking a connection failed (refused, TLS, authentication,
            // startup): the database is unavailable to us, whatever the cause.
            PoolError::Backend(e) => StoreError::Unavailable(chain(&e)),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// An error and its sources on one line (tokio-postgres keeps the server's message, the
/// TLS failure and the IO error in the sources).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
