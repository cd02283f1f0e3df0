//! Group commit for issuance: concurrent issuances are gathered into one multi-row
//! `INSERT .. SELECT FROM unnest(..)`, with the same fencing join and constraints as the
//! single-row statement. A batch forms from whatever is queued while the previous ones
//! run, so a lone request never waits for company.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::StoreError;

/// Rows per statement at most.
const MAX_BATCH: usize = 64;
/// Batches in flight at once (each on its own connection).
const FLUSHERS: usize = 4;
/// Issuances that go straight to the database while fewer than this many are in
/// progress: batching only pays once the database is the bottleneck.
const DIRECT: usize = 8;

/// One row to insert, with the fencing facts of its lease.
#[derive(Debug)]
pub(crate) struct Row {
    pub lease_id: i64,
    pub holder: String,
    pub token: i64,
    pub list_id: String,
    pub idx: i64,
    pub position: i64,
    pub client_id: String,
    pub jti: Uuid,
    pub status_expiry: i64,
}

/// Why a row's batch did not decide it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The batch hit a constraint or lock conflict that one row caused: retry alone.
    RetryAlone,
    /// This row's slot or position is already taken.
    PositionUsed,
    Store(StoreError),
}

impl Failure {
    /// Classifies the error of a single-row insert.
    pub(crate) fn from_alone(e: StoreError) -> Self {
        if e.sql_state() == Some(&SqlState::UNIQUE_VIOLATION) {
            Failure::PositionUsed
        } else {
            Failure::Store(e)
        }
    }
}

type Reply = oneshot::Sender<Result<bool, Failure>>;

#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<(Row, Reply)>,
    /// Rows submitted and not answered yet.
    in_flight: Arc<AtomicUsize>,
}

const INSERT_BATCH: &str = "
    INSERT INTO entries (list_id, idx, position, client_id, jti, status_expiry)
    SELECT le.list_id, r.idx, r.position, r.client_id, r.jti, r.status_expiry
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::uuid[], $8::bigint[])
         AS r(lease_id, holder, token, idx, position, client_id, jti, status_expiry)
    JOIN leases le ON le.id = r.lease_id AND le.holder = r.holder AND le.token = r.token
        AND le.expires_at > now() AND r.position >= le.start_pos AND r.position < le.end_pos
    ORDER BY le.id
    FOR KEY SHARE OF le
    ON CONFLICT (client_id, jti) DO NOTHING
    RETURNING list_id, position";

impl Batcher {
    /// `timeout` bounds one batch's statement: past it the batch fails as unavailable
    /// and its connection is closed (it may be black-holed).
    pub(crate) fn start(pool: Pool, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..FLUSHERS {
            tokio::spawn(flusher(pool.clone(), rx.clone(), timeout));
        }
        Self {
            tx,
            in_flight: Arc::default(),
        }
    }

    /// Counts an issuance in progress until the guard drops, and tells whether it should
    /// go straight to the database (one hop fewer than through a flusher): true while
    /// fewer than [`DIRECT`] are in progress; the overflow is batched.
    pub(crate) fn enter(&self) -> (InFlight, bool) {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        (InFlight(self.in_flight.clone()), before < DIRECT)
    }

    /// Inserts `row`: `Ok(true)` inserted, `Ok(false)` nothing inserted (a repeat of its
    /// `(client_id, jti)`, or its lease is no longer held).
    pub(crate) async fn insert(&self, row: Row) -> Result<bool, Failure> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send((row, reply)).is_err() {
            return Err(Failure::Store(StoreError::Unavailable(
                "issuance batcher stopped".into(),
            )));
        }
        answer
            .await
            .unwrap_or(Err(Failure::Store(StoreError::Unavailable(
                "issuance batcher stopped".into(),
            ))))
    }
}

/// Decrements the in-flight count however the issuance ends (a timeout included).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn flusher(
    pool: Pool,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<(Row, Reply)>>>,
    timeout: Duration,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => batch.push(first),
                // Every sender (the store) is gone.
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        // Callers that gave up (timeout) need no row.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome =
            match tokio::time::timeout_at(deadline, execute(&pool, &batch, deadline)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(StoreError::Unavailable("issuance batch timed out".into())),
            };
        match outcome {
            Ok(inserted) => {
                for (row, reply) in batch {
                    let _ = reply.send(Ok(inserted.contains(&(row.list_id, row.position))));
                }
            }
            Err(e) => {
                let retry_alone = matches!(
                    e.sql_state(),
                    Some(s) if *s == SqlState::UNIQUE_VIOLATION || *s == SqlState::T_R_DEADLOCK_DETECTED
                ) && batch.len() > 1;
                let message = e.to_string();
                let unavailable = e.is_unavailable();
                let mut first = Some(e);
                for (_, reply) in batch {
                    let failure = if retry_alone {
                        Failure::RetryAlone
                    } else if let Some(e) = first.take() {
                        Failure::Store(e)
                    } else if unavailable {
                        Failure::Store(StoreError::Unavailable(message.clone()))
                    } else {
                        Failure::Store(StoreError::Internal(message.clone()))
                    };
                    let _ = reply.send(Err(failure));
                }
            }
        }
    }
}

async fn execute(
    pool: &Pool,
    batch: &[(Row, Reply)],
    deadline: tokio::time::Instant,
) -> Result<HashSet<(String, i64)>, StoreError> {
    let client = crate::Conn {
        object: Some(pool.get().await?),
        deadline,
    };
    let stmt = client.prepare_cached(INSERT_BATCH).await?;
    let col = |f: fn(&Row) -> i64| batch.iter().map(|(r, _)| f(r)).collect::<Vec<i64>>();
    let (lease_ids, tokens, idxs, positions, expiries) = (
        col(|r| r.lease_id),
        col(|r| r.token),
        col(|r| r.idx),
        col(|r| r.position),
        col(|r| r.status_expiry),
    );
    let holders: Vec<&str> = batch.iter().map(|(r, _)| r.holder.as_str()).collect();
    let clients: Vec<&str> = batch.iter().map(|(r, _)| r.client_id.as_str()).collect();
    let jtis: Vec<Uuid> = batch.iter().map(|(r, _)| r.jti).collect();
    let rows = client
        .query(
            &stmt,
            &[
                &lease_ids, &holders, &tokens, &idxs, &positions, &clients, &jtis, &expiries,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
