//! Group commit: concurrent requests of one kind are gathered into one multi-row
//! statement over `unnest(..)` and one commit — issuance (an `INSERT .. SELECT` with the
//! same fencing join and constraints as the single-row statement) and revocation (an
//! `UPDATE` that bumps each touched list's version once per batch, not once per entry).
//! A batch forms from whatever is queued while the previous ones run, so a lone request
//! never waits for company.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::StoreError;

/// Rows per statement at most.
const MAX_BATCH: usize = 64;
/// Requests that go straight to the database while fewer than this many are in
/// progress: batching only pays once the database is the bottleneck.
const DIRECT: usize = 8;

/// A statement that runs many rows at once.
pub(crate) trait Statement: Send + Sync + 'static {
    type Row: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// What a timeout or failure names.
    const WHAT: &'static str;
    /// The name of a batch's span (traces).
    const SPAN: &'static str;
    /// Which flusher a row goes to: `None`, any free one (one shared queue); `Some(key)`,
    /// always the same one for the same key, so that batches of different flushers touch
    /// disjoint rows (revocations: by list, so flushers never wait on each other's list
    /// row locks).
    fn shard(_row: &Self::Row) -> Option<u64> {
        None
    }
    /// Whether [`Statement::shard`] routes rows (one queue per flusher).
    const SHARDED: bool = false;
    /// Batches in flight at once (each on its own connection).
    const FLUSHERS: usize = 4;
    /// Runs one batch: one answer per row, in order.
    fn execute(
        client: &crate::Conn,
        rows: &[&Self::Row],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, StoreError>> + Send;
}

/// Issuance rows.
pub(crate) struct Insert;

impl Statement for Insert {
    type Row = Row;
    type Answer = bool;
    const WHAT: &'static str = "issuance batch";
    const SPAN: &'static str = "issuance.flush";
    /// Two: batches twice the size of four flushers' (at c=64, 8 rows on average with
    /// four), each paying its statement, lease-row lock and commit once. scripts/bench,
    /// c=64, 2026-12-06, three runs each: four flushers 6,203-6,678 issuances/s with
    /// PostgreSQL at 132-146 µs per issuance; two 6,665-7,907/s at 97-117 µs.
    const FLUSHERS: usize = 2;

    async fn execute(client: &crate::Conn, rows: &[&Row]) -> Result<Vec<bool>, StoreError> {
        let inserted = insert(client, rows).await?;
        Ok(rows
            .iter()
            .map(|r| inserted.contains(&(r.list_id.clone(), r.position)))
            .collect())
    }
}

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

/// One revocation: the entry `idx` of the list at `uri`, for `client_id`.
#[derive(Debug)]
pub(crate) struct RevokeRow {
    pub uri: String,
    pub idx: i64,
    pub client_id: String,
}

/// Revocation rows: `Some(revoked_at)` when this batch revoked the entry, `None` when it
/// changed nothing (already revoked, absent, another client's: the caller looks).
pub(crate) struct Revoke;

/// One call of `statuslist_revoke` (planned once per connection):
/// the lists locked in id order, then the revocations appended, each touched list's
/// version and count moved once per batch (one list-row lock and one commit per batch,
/// not per revocation); the store notifies the lists that changed after the commit. Each
/// revocation records the version its batch produced (the publisher reads changes since
/// the version it holds). One round trip: no lock is held
/// while the worker is away (a worker stopped mid-batch, SIGSTOP or a stalled VM, must
/// not hold other workers' revocations of those lists behind its locks). `FOR NO KEY
/// UPDATE` is what the version bump takes anyway; it does not block issuance.
pub(crate) const REVOKE_BATCH: &str = "SELECT out_n AS n, out_at AS at FROM statuslist_revoke($1::text[], $2::bigint[], $3::text[], $4)";

impl Statement for Revoke {
    type Row = RevokeRow;
    type Answer = Option<i64>;
    const WHAT: &'static str = "revocation batch";
    const SPAN: &'static str = "revocation.flush";
    const SHARDED: bool = true;
    /// Two: one batch runs while the other commits, and the 64 revocations in flight
    /// under load form two batches of ~32 rather than four of ~16 over lists of their
    /// shard (each batch pays its lists' locks, lookups and row updates, and its own
    /// commit). Interleaved over 11 lists, one worker, paired runs on one database: 1
    /// flusher 5,644-7,026/s, 4 flushers 5,141-6,245/s (PostgreSQL 119-162 against
    /// 153-202 us per revocation); 2 and 1 within the noise of each other. One list goes
    /// to one flusher however many there are.
    const FLUSHERS: usize = 2;

    fn shard(row: &RevokeRow) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        row.uri.hash(&mut h);
        Some(h.finish())
    }

    async fn execute(
        client: &crate::Conn,
        rows: &[&RevokeRow],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        revoke_rows(client, rows).await
    }
}

async fn revoke_rows(
    client: &crate::Conn,
    rows: &[&RevokeRow],
) -> Result<Vec<Option<i64>>, StoreError> {
    let stmt = client.prepare_cached(REVOKE_BATCH).await?;
    let uris: Vec<&str> = rows.iter().map(|r| r.uri.as_str()).collect();
    let idxs: Vec<i64> = rows.iter().map(|r| r.idx).collect();
    let clients: Vec<&str> = rows.iter().map(|r| r.client_id.as_str()).collect();
    let mut answers = vec![None; rows.len()];
    for row in client
        .query(
            &stmt,
            // No channel: the store notifies after the commit.
            &[&uris, &idxs, &clients, &None::<&str>],
        )
        .await?
    {
        let (n, at): (i64, i64) = (row.try_get("n")?, row.try_get("at")?);
        let slot = usize::try_from(n - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
            .ok_or_else(|| {
                StoreError::Internal(format!("revocation batch: row {n} of {}", rows.len()))
            })?;
        *slot = Some(at);
    }
    Ok(answers)
}

type Reply<S> = oneshot::Sender<Result<<S as Statement>::Answer, Failure>>;
/// A queued row, its reply, and the span of the request that sent it (the batch's span
/// links to it).
type Queued<S> = (<S as Statement>::Row, Reply<S>, tracing::Span);
type Queue<S> = mpsc::UnboundedReceiver<Queued<S>>;

pub(crate) struct Batcher<S: Statement> {
    /// One queue shared by every flusher, or one queue per flusher (sharded statements).
    txs: Vec<mpsc::UnboundedSender<Queued<S>>>,
    /// Rows submitted and not answered yet.
    in_flight: Arc<AtomicUsize>,
}

/// The lease must be held by the row's holder and claim, unexpired, and claimed in the
/// database's current incarnation (a lease of before a failover issues nothing after it).
/// Each row's lease is read by its primary key, row by row (a lateral sub-select that the
/// planner cannot turn into a join): as one join, the plan the statement settles on once
/// prepared (a generic plan, which expects ten rows and one held lease) scanned every lease
/// of the database for each batch, a cost that grew with the lists. The rows come sorted by
/// lease, so the leases are locked in id order as before.
/// Each row's idempotency key first (a repeat of its `(client_id, jti)` inserts nothing),
/// then its entry, routed to its list's partition: one statement, so both or neither.
const INSERT_BATCH: &str = "
    WITH v AS (
        SELECT le.list_id, r.idx, r.position, r.client_id, r.jti, r.status_expiry
        FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::uuid[], $8::bigint[])
             AS r(lease_id, holder, token, idx, position, client_id, jti, status_expiry)
        CROSS JOIN LATERAL (
            SELECT l.list_id FROM leases l
            WHERE l.id = r.lease_id AND l.holder = r.holder AND l.token = r.token
              AND l.expires_at > now() AND r.position >= l.start_pos AND r.position < l.end_pos
              AND l.incarnation = (SELECT statuslist_incarnation())
            FOR KEY SHARE) le),
    k AS (INSERT INTO issuance_keys (client_id, jti, list_id, idx)
          SELECT client_id, jti, list_id, idx FROM v
          ON CONFLICT (client_id, jti) DO NOTHING
          RETURNING client_id, jti, list_id, idx)
    INSERT INTO entries (list_id, idx, position, client_id, jti, status_expiry)
    SELECT v.list_id, v.idx, v.position, v.client_id, v.jti, v.status_expiry
    FROM k JOIN v ON v.client_id = k.client_id AND v.jti = k.jti AND v.list_id = k.list_id AND v.idx = k.idx
    RETURNING list_id, position";

impl<S: Statement> Batcher<S> {
    /// `timeout` bounds one batch's statement: past it the batch fails as unavailable
    /// and its connection is closed (it may be black-holed).
    pub(crate) fn start(pool: Pool, timeout: Duration) -> Self {
        let sharded = S::SHARDED;
        let mut txs = Vec::new();
        let mut shared = None;
        for _ in 0..S::FLUSHERS {
            let rx = match (&shared, sharded) {
                (Some(rx), false) => Arc::clone(rx),
                _ => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    txs.push(tx);
                    let rx = Arc::new(Mutex::new(rx));
                    if !sharded {
                        shared = Some(rx.clone());
                    }
                    rx
                }
            };
            tokio::spawn(flusher::<S>(pool.clone(), rx, timeout));
        }
        Self {
            txs,
            in_flight: Arc::default(),
        }
    }

    /// Counts a request in progress until the guard drops, and tells whether it should
    /// go straight to the database (one hop fewer than through a flusher): true while
    /// fewer than [`DIRECT`] are in progress; the overflow is batched.
    pub(crate) fn enter(&self) -> (InFlight, bool) {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        (InFlight(self.in_flight.clone()), before < DIRECT)
    }

    /// Runs `row` in the next batch. For issuance: `Ok(true)` inserted, `Ok(false)`
    /// nothing inserted (a repeat of its `(client_id, jti)`, or its lease is no longer
    /// held).
    pub(crate) async fn submit(&self, row: S::Row) -> Result<S::Answer, Failure> {
        let stopped = || Failure::Store(StoreError::Unavailable(format!("{} stopped", S::WHAT)));
        let (reply, answer) = oneshot::channel();
        let queue = S::shard(&row).map_or(0, |k| (k % self.txs.len() as u64) as usize);
        let Some(tx) = self.txs.get(queue) else {
            return Err(stopped());
        };
        if tx.send((row, reply, tracing::Span::current())).is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Decrements the in-flight count however the issuance ends (a timeout included).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn flusher<S: Statement>(pool: Pool, rx: Arc<Mutex<Queue<S>>>, timeout: Duration) {
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
        batch.retain(|(_, reply, _)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // A trace of its own, linked to each request it carries.
        let span = tracing::debug_span!(
            "flush",
            otel.name = S::SPAN,
            db.operation.batch.size = batch.len()
        );
        for (_, _, from) in &batch {
            span.follows_from(from);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let run = async {
            let client = crate::Conn::get(&pool, deadline).await?;
            let rows: Vec<&S::Row> = batch.iter().map(|(row, _, _)| row).collect();
            S::execute(&client, &rows).await
        };
        let outcome = match tokio::time::timeout_at(deadline, run.instrument(span)).await {
            Ok(Ok(answers)) if answers.len() != batch.len() => Err(StoreError::Internal(format!(
                "{}: {} answers for {} rows",
                S::WHAT,
                answers.len(),
                batch.len()
            ))),
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(format!("{} timed out", S::WHAT))),
        };
        match outcome {
            Ok(answers) => {
                for ((_, reply, _), answer) in batch.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                // A deadlock is retried even for a batch of one: it says nothing about the
                // row, only about the moment (the caller retries alone, a few times).
                let retry_alone = match e.sql_state() {
                    Some(s) if *s == SqlState::T_R_DEADLOCK_DETECTED => true,
                    Some(s) if *s == SqlState::UNIQUE_VIOLATION => batch.len() > 1,
                    _ => false,
                };
                let message = e.to_string();
                let unavailable = e.is_unavailable();
                let mut first = Some(e);
                for (_, reply, _) in batch {
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

async fn insert(
    client: &crate::Conn,
    batch: &[&Row],
) -> Result<HashSet<(String, i64)>, StoreError> {
    let stmt = client.prepare_cached(INSERT_BATCH).await?;
    // In lease order: the statement locks each row's lease as it reads the row.
    let mut batch = batch.to_vec();
    batch.sort_by_key(|r| r.lease_id);
    let col = |f: fn(&Row) -> i64| batch.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let (lease_ids, tokens, idxs, positions, expiries) = (
        col(|r| r.lease_id),
        col(|r| r.token),
        col(|r| r.idx),
        col(|r| r.position),
        col(|r| r.status_expiry),
    );
    let holders: Vec<&str> = batch.iter().map(|r| r.holder.as_str()).collect();
    let clients: Vec<&str> = batch.iter().map(|r| r.client_id.as_str()).collect();
    let jtis: Vec<Uuid> = batch.iter().map(|r| r.jti).collect();
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

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::{TestDb, scans};

    /// Token pool `p` of lists of `entries`, leases of `lease`.
    async fn pool(client: &tokio_postgres::Client, entries: i64, lease: i64) {
        client
            .execute(
                "INSERT INTO pools (name, format, bits, base_uri, entries_per_list, min_free_entries, lease_size,
                                    ttl_seconds, validity_seconds, max_status_lifetime_seconds, generation)
                 VALUES ('p', 'Token', 1, 'https://x.test', $1, 10, $2, 60, 3600, 86400, 1)",
                &[&entries, &lease],
            )
            .await
            .expect("pool p");
    }

    /// One batch interleaved over two lists, each entry found through its issuance key:
    /// an entry counts only for the row naming its list. Found: an entry of
    /// each list, in either order. Not found: an index its own list lacks while the other
    /// list's row in the same batch holds it (both ways), another client's entry, a path
    /// that ends in the list's id but is not its URI, a list never made, an id that
    /// cannot be a list's, and a row repeated in the batch (the first answers for it).
    #[tokio::test]
    async fn a_batch_counts_an_entry_only_for_the_row_that_names_its_list() {
        let db = TestDb::new().await;
        let client = db.client().await;
        pool(&client, 100, 10).await;
        client
            .batch_execute(
                "INSERT INTO issuers (client_id, pool, jwks_uri) VALUES ('a', 'p', 'https://x.test/a'),
                                                                        ('b', 'p', 'https://x.test/b');
                 INSERT INTO lists (id, pool, uri, format, bits, size, secret)
                 VALUES ('AAAAAAAAAAAA', 'p', 'https://x.test/t/AAAAAAAAAAAA', 'Token', 1, 100, '\\x00000000000000000000000000000000'),
                        ('BBBBBBBBBBBB', 'p', 'https://x.test/t/BBBBBBBBBBBB', 'Token', 1, 100, '\\x00000000000000000000000000000000');
                 SELECT statuslist_add_entries_partition('AAAAAAAAAAAA');
                 SELECT statuslist_add_entries_partition('BBBBBBBBBBBB');
                 INSERT INTO entries (list_id, idx, position, status_expiry, jti, client_id)
                 VALUES ('AAAAAAAAAAAA', 1, 1, 0, gen_random_uuid(), 'a'),
                        ('AAAAAAAAAAAA', 2, 2, 0, gen_random_uuid(), 'a'),
                        ('AAAAAAAAAAAA', 4, 4, 0, gen_random_uuid(), 'b'),
                        ('BBBBBBBBBBBB', 1, 1, 0, gen_random_uuid(), 'a'),
                        ('BBBBBBBBBBBB', 3, 3, 0, gen_random_uuid(), 'a');
                 -- Each entry's issuance key, as issuance writes them.
                 INSERT INTO issuance_keys (client_id, jti, list_id, idx)
                 SELECT client_id, jti, list_id, idx FROM entries;",
            )
            .await
            .expect("two lists");
        let (a, b) = (
            "https://x.test/t/AAAAAAAAAAAA",
            "https://x.test/t/BBBBBBBBBBBB",
        );
        let row = |uri: &str, idx: i64| RevokeRow {
            uri: uri.to_owned(),
            idx,
            client_id: "a".to_owned(),
        };
        let rows = [
            row(a, 1),
            row(b, 3),
            row(a, 3),
            row(b, 2),
            row(a, 2),
            row(a, 4),
            row("https://x.test/u/AAAAAAAAAAAA", 1),
            row("https://x.test/t/000000000000", 1),
            row("https://x.test/t/not-a-list", 1),
            row(a, 1),
        ];
        let refs: Vec<&RevokeRow> = rows.iter().collect();
        let conn = db.store.client().await.expect("a connection");
        let answers = revoke_rows(&conn, &refs).await.expect("the batch");
        let revoked: Vec<bool> = answers.iter().map(Option::is_some).collect();
        assert_eq!(
            revoked,
            [
                true, true, false, false, true, false, false, false, false, false
            ]
        );
        let versions: Vec<(String, i64, i64)> = client
            .query("SELECT id, version, revoked FROM lists ORDER BY id", &[])
            .await
            .expect("lists")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            versions,
            [
                ("AAAAAAAAAAAA".to_owned(), 1, 2),
                ("BBBBBBBBBBBB".to_owned(), 1, 1)
            ]
        );
    }

    /// Each row's lease is read by its key, whatever plan the prepared statement settles
    /// on (the generic one is forced here): among 2,000 leases no scan of the table. The
    /// fence holds row by row: a row of another claim (token) or outside its lease's range
    /// inserts nothing; the others do, whichever order they come in.
    #[tokio::test]
    async fn an_issuance_batch_reads_only_the_leases_it_names() {
        let db = TestDb::new().await;
        let client = db.client().await;
        pool(&client, 300_000, 100).await;
        client
            .batch_execute(
                "INSERT INTO lists (id, pool, uri, format, bits, size, secret)
                 VALUES ('AAAAAAAAAAAA', 'p', 'https://x.test/t/AAAAAAAAAAAA', 'Token', 1, 300000, '\\x00000000000000000000000000000000');
                 SELECT statuslist_add_entries_partition('AAAAAAAAAAAA');
                 INSERT INTO leases (id, list_id, start_pos, end_pos, holder, token, expires_at, incarnation)
                 VALUES (1, 'AAAAAAAAAAAA', 0, 100, 'w', 7, now() + interval '1 hour', statuslist_incarnation()),
                        (2, 'AAAAAAAAAAAA', 100, 200, 'w', 8, now() + interval '1 hour', statuslist_incarnation());
                 INSERT INTO leases (id, list_id, start_pos, end_pos)
                 SELECT 2 + g, 'AAAAAAAAAAAA', 100 * (g + 1), 100 * (g + 2) FROM generate_series(1, 2000) g;
                 ANALYZE leases;",
            )
            .await
            .expect("a list and its leases");
        let row = |lease_id: i64, token: i64, position: i64| Row {
            lease_id,
            holder: "w".to_owned(),
            token,
            list_id: "AAAAAAAAAAAA".to_owned(),
            idx: 1_000 + position,
            position,
            client_id: "a".to_owned(),
            jti: Uuid::new_v4(),
            status_expiry: 0,
        };
        let rows = [
            row(2, 8, 150),
            row(1, 7, 5),
            row(2, 8, 151),
            // Another claim of lease 1.
            row(1, 6, 6),
            // Lease 1's claim, a position of lease 2's range.
            row(1, 7, 152),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let conn = db.store.client().await.expect("a connection");
        conn.batch_execute("SET plan_cache_mode = force_generic_plan; BEGIN")
            .await
            .expect("begin");
        // The view holds the session's earlier transactions' counts too: the batch's own
        // are the difference.
        let before = scans(&***conn, "leases").await;
        let inserted = insert(&conn, &refs).await.expect("the batch");
        let after = scans(&***conn, "leases").await;
        let answers: Vec<bool> = rows
            .iter()
            .map(|r| inserted.contains(&(r.list_id.clone(), r.position)))
            .collect();
        assert_eq!(answers, [true, true, true, false, false]);
        let (scanned, probed) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(scanned, 0, "leases scanned");
        assert_eq!(probed, rows.len() as i64, "leases probed");
        conn.batch_execute("ROLLBACK; RESET plan_cache_mode")
            .await
            .expect("rollback");
    }
}
