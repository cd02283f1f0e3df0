//! Leases: a worker claims a range `[start, end)` of a list's positions, hands out
//! `idx = permute(secret, position)` from it, renews it while alive and releases it on
//! shutdown. A lease that is not renewed expires and its unused remainder is put back.
//!
//! Fencing: every issuance checks, inside its own statement, that the lease is still
//! held by this worker with this claim's token and not expired, and takes a `FOR KEY
//! SHARE` lock on the lease row; release takes `FOR UPDATE`, so it waits for in-flight
//! issuances and every issuance after it fails; reclaim skips a lease an issuance is
//! writing to (`SKIP LOCKED`) and takes it on a later pass.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Transaction;
use statuslist_format::Permutation;

use crate::lists::{LIST_COLUMNS, ListInfo, list_from_row, random_bytes};
use crate::{Result, Store, StoreError};

/// A claimed lease, held in memory by the worker that claimed it.
pub struct Lease {
    pub id: i64,
    pub list: ListInfo,
    pub worker: String,
    /// Fencing token of this claim.
    pub token: i64,
    pub start: u64,
    pub end: u64,
    permutation: Permutation,
    cursor: Mutex<Cursor>,
}

struct Cursor {
    next: u64,
    /// Positions taken but not used (an idempotent replay): handed out again first.
    returned: Vec<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("list", &self.list.id)
            .field("range", &(self.start..self.end))
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Positions not handed out yet.
    pub fn remaining(&self) -> u64 {
        let c = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        self.end - c.next + c.returned.len() as u64
    }

    pub(crate) fn take_position(&self) -> Option<u64> {
        let mut c = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = c.returned.pop() {
            return Some(p);
        }
        (c.next < self.end).then(|| {
            c.next += 1;
            c.next - 1
        })
    }

    pub(crate) fn give_back(&self, position: u64) {
        self.cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .returned
            .push(position);
    }

    pub(crate) fn index_of(&self, position: u64) -> Result<u64> {
        self.permutation
            .forward(position)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Moves each lease's start past the highest position issued in it, then frees it (or
/// deletes it when nothing is left). The caller holds `FOR UPDATE` locks on `ids`, and this
/// statement's fresh snapshot sees every issuance that committed before them.
pub(crate) async fn return_remainder(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    tx.execute(
        "WITH r AS (
             SELECT le.id, le.end_pos, GREATEST(le.start_pos, coalesce(
                 statuslist_next_position(le.list_id, le.start_pos, le.end_pos), le.start_pos)) AS new_start
             FROM leases le WHERE le.id = ANY($1)),
         gone AS (DELETE FROM leases le USING r WHERE le.id = r.id AND r.new_start >= r.end_pos)
         UPDATE leases le SET start_pos = r.new_start, holder = NULL, expires_at = NULL
         FROM r WHERE le.id = r.id AND r.new_start < r.end_pos",
        &[&ids],
    )
    .await?;
    Ok(())
}

/// The lease claim statements, built once: `$1` pool, `$2` holder, `$3` TTL seconds, and
/// for the first `$4` a random point in [0, 1).
///
/// Only lists provisioned in the database's current incarnation, and the lease takes it
/// (issuance checks it): see [`crate::failover`].
///
/// One Active list of the pool with a free lease, at random (a pool has a few), and in it
/// the first free lease at or after the random rank, wrapping around: one index descent
/// on `leases_free_rank`, however many leases the list has. Only when that finds nothing
/// (every free lease of that list being claimed by others at this instant) are all the
/// pool's free leases considered.
fn claim_statements() -> &'static [String; 3] {
    static STATEMENTS: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    STATEMENTS.get_or_init(|| {
        let claim = |pick: &str| {
            format!(
                "WITH cl AS (SELECT l.id FROM lists l JOIN pools p ON p.name = l.pool
                             WHERE l.pool = $1 AND l.state = 'Active' AND p.issuing
                               AND l.incarnation = statuslist_incarnation()
                               AND EXISTS (SELECT 1 FROM leases f WHERE f.list_id = l.id AND f.holder IS NULL)
                             ORDER BY random() LIMIT 1)
                 UPDATE leases le SET holder = $2, token = le.token + 1,
                     expires_at = now() + make_interval(secs => $3), incarnation = l.incarnation
                 FROM lists l
                 WHERE l.id = le.list_id AND le.id = ({pick})
                 RETURNING le.id AS lease_id, le.start_pos, le.end_pos, le.token, l.secret, {LIST_COLUMNS}"
            )
        };
        [
            claim(
                "SELECT c.id FROM leases c WHERE c.list_id = (SELECT id FROM cl) AND c.holder IS NULL
                   AND c.rank >= $4 ORDER BY c.rank LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
            ),
            claim(
                "SELECT c.id FROM leases c WHERE c.list_id = (SELECT id FROM cl) AND c.holder IS NULL
                 ORDER BY c.rank LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
            ),
            claim(
                "SELECT c.id FROM leases c
                 JOIN lists cl ON cl.id = c.list_id
                 JOIN pools p ON p.name = cl.pool
                 WHERE cl.pool = $1 AND cl.state = 'Active' AND p.issuing AND c.holder IS NULL
                   AND cl.incarnation = statuslist_incarnation()
                 ORDER BY random() LIMIT 1
                 FOR UPDATE OF c SKIP LOCKED",
            ),
        ]
    })
}

impl Store {
    /// Claims a free lease of one of `pool`'s active lists, chosen at random, for `ttl`.
    /// When none is free, expired leases of the pool are reclaimed first. `None`: the pool
    /// has no free capacity (or is not issuing).
    pub async fn claim_lease(
        &self,
        pool: &str,
        worker: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.bounded(async {
            if let Some(lease) = self.try_claim(pool, worker, ttl).await? {
                return Ok(Some(lease));
            }
            if self.reclaim_pool(Some(pool)).await? > 0
                && let Some(lease) = self.try_claim(pool, worker, ttl).await?
            {
                return Ok(Some(lease));
            }
            // After a failover: the lists of the earlier incarnation are sealed here, and
            // their pools given fresh ones, without waiting for the operator.
            if self.seal_and_replace().await?.is_empty() {
                return Ok(None);
            }
            self.try_claim(pool, worker, ttl).await
        })
        .await
    }

    async fn try_claim(&self, pool: &str, worker: &str, ttl: Duration) -> Result<Option<Lease>> {
        let client = self.client().await?;
        let [after, from_start, any] = claim_statements();
        let point = (u64::from_le_bytes(random_bytes::<8>()?) >> 11) as f64 / (1u64 << 53) as f64;
        let ttl = seconds(ttl);
        let stmt = client.prepare_cached(after).await?;
        let mut row = client
            .query_opt(&stmt, &[&pool, &worker, &ttl, &point])
            .await?;
        for sql in [from_start, any] {
            if row.is_some() {
                break;
            }
            let stmt = client.prepare_cached(sql).await?;
            row = client.query_opt(&stmt, &[&pool, &worker, &ttl]).await?;
        }
        let Some(row) = row else {
            return Ok(None);
        };
        let list = list_from_row(&row)?;
        let secret: Vec<u8> = row.try_get("secret")?;
        let permutation = Permutation::new(&secret, list.size)
            .map_err(|e| StoreError::Corrupt(format!("list {}: {e}", list.id)))?;
        let (start, end): (i64, i64) = (row.try_get("start_pos")?, row.try_get("end_pos")?);
        let (start, end) = (start as u64, end as u64);
        let lease = Lease {
            id: row.try_get("lease_id")?,
            list,
            worker: worker.to_owned(),
            token: row.try_get("token")?,
            start,
            end,
            permutation,
            cursor: Mutex::new(Cursor {
                next: start,
                returned: Vec::new(),
            }),
        };
        tracing::debug!(?lease, "claimed lease");
        Ok(Some(lease))
    }

    /// Extends the lease by `ttl` from now. [`StoreError::LeaseLost`] when it expired or
    /// was reclaimed meanwhile: stop issuing from it.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
                     WHERE id = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
                )
                .await?;
            match client
                .execute(
                    &stmt,
                    &[&lease.id, &lease.worker, &lease.token, &seconds(ttl)],
                )
                .await?
            {
                1 => Ok(()),
                _ => Err(StoreError::LeaseLost),
            }
        })
        .await
    }

    /// Gives the lease's unused remainder back (graceful shutdown, or exhausted lease).
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let held = tx
                .query_opt(
                    "SELECT id FROM leases WHERE id = $1 AND holder = $2 AND token = $3 FOR UPDATE",
                    &[&lease.id, &lease.worker, &lease.token],
                )
                .await?;
            if held.is_some() {
                return_remainder(&tx, &[lease.id]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Puts back the unused remainder of every expired lease (of every pool). Returns how
    /// many leases were reclaimed.
    pub async fn reclaim_expired_leases(&self) -> Result<u64> {
        self.bounded(self.reclaim_pool(None)).await
    }

    async fn reclaim_pool(&self, pool: Option<&str>) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Skips leases an issuance is still writing to (it holds FOR KEY SHARE) and
        // leases another reclaim has locked: never waits behind another session (one
        // stopped mid-transaction holds its locks until it resumes); what is skipped is
        // reclaimed by a later pass.
        let rows = tx
            .query(
                "SELECT le.id FROM leases le JOIN lists l ON l.id = le.list_id
                 WHERE le.holder IS NOT NULL AND le.expires_at <= now()
                   AND ($1::text IS NULL OR l.pool = $1)
                 ORDER BY le.id FOR UPDATE OF le SKIP LOCKED",
                &[&pool],
            )
            .await?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if !ids.is_empty() {
            return_remainder(&tx, &ids).await?;
            tracing::info!(count = ids.len(), "reclaimed expired leases");
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Forces the lease to expire now (tests and fault injection).
    #[doc(hidden)]
    pub async fn expire_lease_now(&self, lease_id: i64) -> Result<()> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE leases SET expires_at = now() - interval '1 second' WHERE id = $1 AND holder IS NOT NULL",
                    &[&lease_id],
                )
                .await?;
            Ok(())
        })
        .await
    }
}
