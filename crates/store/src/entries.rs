//! Issuance and revocation.

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::batch::{Failure, REVOKE_BATCH, Revoke, RevokeRow, Row, Statement};
use crate::leases::Lease;
use crate::{Result, Store, StoreError};

/// A validated `/issue` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub client_id: String,
    pub jti: Uuid,
    /// Unix seconds.
    pub status_expiry: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueOutcome {
    pub list_id: String,
    pub uri: String,
    pub idx: u64,
    /// False when this answers a repeat of an earlier request (same client and jti).
    pub created: bool,
}

/// The answer to [`Store::revoke_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchRevokeOutcome {
    /// Every entry revoked, in the request's order: each `Revoked` now (one commit) or
    /// `AlreadyRevoked` before.
    Revoked(Vec<RevokeOutcome>),
    /// Entry `position` (0-based) is absent or another client's: nothing was revoked.
    Refused { position: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked now, at this unix time.
    Revoked { at: i64 },
    /// Revoked before, at this unix time: nothing changed.
    AlreadyRevoked { at: i64 },
    /// No such entry for this client (absent, or another client's: one answer for both).
    NotFound,
}

/// A suspension or a reinstatement, and what [`Store::set_suspended`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// To SUSPENDED (status 2).
    Suspend,
    /// Back to VALID (status 0) from SUSPENDED.
    Reinstate,
}

impl StatusChange {
    fn status(self) -> i16 {
        match self {
            StatusChange::Suspend => 2,
            StatusChange::Reinstate => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChangeOutcome {
    /// Changed now, at this unix time.
    Changed { at: i64 },
    /// It had that status already: the time of its latest change (`None`: a reinstatement
    /// of an entry never suspended).
    Unchanged { at: Option<i64> },
    /// Revoked at this unix time: final, nothing changed.
    Revoked { at: i64 },
    /// The entry's pool does not allow suspension.
    Disabled,
    /// No such entry for this client (absent, or another client's: one answer for both).
    NotFound,
}

/// What `(client_id, jti)` names.
enum Lookup {
    Found(IssueOutcome),
    Absent,
    /// It named an entry of a list no longer live; the key is removed.
    Cleared,
}

/// Upper bound on positions skipped in one issuance because an earlier holder of the
/// range used them (only after a reclaim raced an issuance, see `leases`).
const MAX_POSITION_RETRIES: usize = 64;

impl Store {
    /// Issues one entry from `lease`, or returns the original answer to a repeated request.
    ///
    /// The fencing check, the lease lock and the insert are one `INSERT .. SELECT`, grouped
    /// with concurrent issuances into one statement (group commit, see `batch`).
    /// `(client_id, jti)` makes concurrent duplicates produce one entry; `(list_id, idx)`
    /// and `(list_id, position)` make a double allocation impossible even if everything
    /// above failed.
    #[tracing::instrument(level = "debug", name = "issuance.store", skip_all, fields(list = %lease.list.id, batched = tracing::field::Empty))]
    pub async fn issue(&self, lease: &Lease, req: &IssueRequest) -> Result<IssueOutcome> {
        self.bounded(async {
            for _ in 0..MAX_POSITION_RETRIES {
                let Some(position) = lease.take_position() else {
                    // A repeat needs no position: answer it even from a spent lease.
                    return match self.find_existing(req).await? {
                        Some(found) => Ok(found),
                        None => Err(StoreError::LeaseExhausted),
                    };
                };
                let idx = lease.index_of(position)?;
                let row = Row {
                    lease_id: lease.id,
                    holder: lease.worker.clone(),
                    token: lease.token,
                    list_id: lease.list.id.clone(),
                    idx: idx as i64,
                    position: position as i64,
                    client_id: req.client_id.clone(),
                    jti: req.jti,
                    status_expiry: req.status_expiry,
                };
                let batcher = self.batcher();
                let (_in_flight, alone) = batcher.enter();
                tracing::Span::current().record("batched", !alone);
                let mut outcome = if alone {
                    Err(Failure::RetryAlone)
                } else {
                    batcher.submit(row).await
                };
                if let Err(Failure::RetryAlone) = outcome {
                    outcome = self
                        .insert_alone(lease, position, idx, req)
                        .await
                        .map_err(Failure::from_alone);
                }
                let inserted = match outcome {
                    Ok(inserted) => inserted,
                    Err(Failure::PositionUsed) => {
                        // The slot or position was used by an earlier holder of this range:
                        // skip it, never reuse it.
                        tracing::warn!(
                            lease = lease.id,
                            position,
                            "position already used; skipping"
                        );
                        continue;
                    }
                    Err(Failure::Store(e)) => return Err(e),
                    Err(Failure::RetryAlone) => {
                        return Err(StoreError::Internal(
                            "single-row insert asked to retry".into(),
                        ));
                    }
                };
                if inserted {
                    self.journal_issued(
                        &lease.list.id,
                        idx as i64,
                        position as i64,
                        &req.client_id,
                        req.jti,
                        req.status_expiry,
                    );
                    return Ok(IssueOutcome {
                        list_id: lease.list.id.clone(),
                        uri: lease.list.uri.clone(),
                        idx,
                        created: true,
                    });
                }
                // Nothing inserted: a repeat, or the lease is no longer ours. The position
                // was not used either way.
                lease.give_back(position);
                return match self.lookup(req).await? {
                    Lookup::Found(found) => Ok(found),
                    // The key named a retired list's entry and is gone now: issue anew.
                    Lookup::Cleared => continue,
                    Lookup::Absent => Err(StoreError::LeaseLost),
                };
            }
            Err(StoreError::Corrupt(format!(
                "lease {}: {MAX_POSITION_RETRIES} positions in a row already used",
                lease.id
            )))
        })
        .await
    }

    /// The single-row form of the batch statement, for a row whose batch failed.
    async fn insert_alone(
        &self,
        lease: &Lease,
        position: u64,
        idx: u64,
        req: &IssueRequest,
    ) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH v AS (
                     SELECT le.list_id FROM leases le
                     WHERE le.id = $1 AND le.holder = $2 AND le.token = $3 AND le.expires_at > now()
                       AND $5 >= le.start_pos AND $5 < le.end_pos
                       AND le.incarnation = statuslist_incarnation()
                     FOR KEY SHARE OF le),
                 k AS (INSERT INTO issuance_keys (client_id, jti, list_id, idx)
                       SELECT $6, $7, v.list_id, $4 FROM v
                       ON CONFLICT (client_id, jti) DO NOTHING
                       RETURNING list_id)
                 INSERT INTO entries (list_id, idx, position, client_id, jti, status_expiry)
                 SELECT k.list_id, $4, $5, $6, $7, $8 FROM k
                 RETURNING idx",
            )
            .await?;
        let (idx, position) = (idx as i64, position as i64);
        let row = client
            .query_opt(
                &stmt,
                &[
                    &lease.id,
                    &lease.worker,
                    &lease.token,
                    &idx,
                    &position,
                    &req.client_id,
                    &req.jti,
                    &req.status_expiry,
                ],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn find_existing(&self, req: &IssueRequest) -> Result<Option<IssueOutcome>> {
        match self.lookup(req).await? {
            Lookup::Found(found) => Ok(Some(found)),
            Lookup::Absent | Lookup::Cleared => Ok(None),
        }
    }

    /// The entry already issued for `(client_id, jti)`, if any, checked against the
    /// request's `statusExpiry`. A key whose list is no longer live (retired or deleted,
    /// its partition not dropped yet) is removed: past its list's life a `jti` is new
    /// again, as it was when retirement removed entries row by row.
    async fn lookup(&self, req: &IssueRequest) -> Result<Lookup> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT list_id, idx FROM issuance_keys WHERE client_id = $1 AND jti = $2",
            )
            .await?;
        let Some(key) = client.query_opt(&stmt, &[&req.client_id, &req.jti]).await? else {
            return Ok(Lookup::Absent);
        };
        let (list_id, idx): (String, i64) = (key.try_get("list_id")?, key.try_get("idx")?);
        // Not a cached statement: planned with the list id known, so that it reads that
        // list's partition alone (a generic plan would hold every partition).
        let row = client
            .query_opt(
                "SELECT e.status_expiry, l.uri, l.state IN ('Active', 'Full') AS live,
                        EXISTS (SELECT 1 FROM issuers i WHERE i.client_id = e.client_id AND i.pool = l.pool) AS ours
                 FROM lists l LEFT JOIN entries e ON e.list_id = l.id AND e.list_id = $1 AND e.idx = $2
                 WHERE l.id = $1",
                &[&list_id, &idx],
            )
            .await?;
        let live = match &row {
            Some(row) => row.try_get::<_, bool>("live")?,
            None => false,
        };
        let Some(row) = row.filter(|_| live) else {
            client
                .execute(
                    "DELETE FROM issuance_keys WHERE client_id = $1 AND jti = $2 AND list_id = $3",
                    &[&req.client_id, &req.jti, &list_id],
                )
                .await?;
            return Ok(Lookup::Cleared);
        };
        let Some(expiry) = row.try_get::<_, Option<i64>>("status_expiry")? else {
            return Err(StoreError::Corrupt(format!(
                "issuance key of {}/{} names entry {idx} of list {list_id}, which is not stored",
                req.client_id, req.jti
            )));
        };
        // Issued under another registration of this clientId (since removed from that
        // pool and registered elsewhere): not this issuer's to see. Answered as a changed
        // request, which says nothing about the entry.
        let ours: bool = row.try_get("ours")?;
        if expiry != req.status_expiry || !ours {
            return Err(StoreError::IdempotencyConflict);
        }
        Ok(Lookup::Found(IssueOutcome {
            list_id,
            uri: row.try_get("uri")?,
            idx: idx as u64,
            created: false,
        }))
    }

    /// Looks up a repeat of `req` without issuing (the worker answers replays even when it
    /// holds no lease).
    pub async fn find_issued(&self, req: &IssueRequest) -> Result<Option<IssueOutcome>> {
        self.bounded(self.find_existing(req)).await
    }

    /// Revokes entry `idx` of the list at `uri` for `client_id`. Final: INVALID never goes
    /// back. Authority is the registration, not the bare clientId: the entry must be
    /// `client_id`'s and its list in the pool `client_id` is registered in now, so a
    /// clientId dropped by one pool and registered in another has no power over what it
    /// issued under the first. Bumps the list's version in the same statement and wakes the publishers;
    /// concurrent revocations share one statement and one commit (see `batch`).
    #[tracing::instrument(level = "debug", name = "revocation.store", skip_all, fields(batched = tracing::field::Empty))]
    pub async fn revoke(&self, uri: &str, idx: u64, client_id: &str) -> Result<RevokeOutcome> {
        let Ok(idx) = i64::try_from(idx) else {
            return Ok(RevokeOutcome::NotFound);
        };
        self.bounded(async {
            let row = RevokeRow {
                uri: uri.to_owned(),
                idx,
                client_id: client_id.to_owned(),
            };
            let revoker = self.revoker();
            let (_in_flight, alone) = revoker.enter();
            tracing::Span::current().record("batched", !alone);
            let mut outcome = if alone {
                Err(Failure::RetryAlone)
            } else {
                revoker.submit(row).await
            };
            // Alone (no company, or its batch hit a conflict one row caused). A deadlock
            // with another writer of the list row is retried, a few times.
            let mut attempts = 0;
            while let Err(Failure::RetryAlone) = outcome {
                attempts += 1;
                let client = self.client().await?;
                let row = RevokeRow {
                    uri: uri.to_owned(),
                    idx,
                    client_id: client_id.to_owned(),
                };
                outcome = match Revoke::execute(&client, &[&row]).await {
                    Ok(answers) => Ok(answers.into_iter().next().flatten()),
                    Err(e) if attempts < 4 && e.sql_state() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {
                        Err(Failure::RetryAlone)
                    }
                    Err(e) => Err(Failure::Store(e)),
                };
            }
            // A list's URI ends in its id (see `ensure_capacity`); the URI is matched too.
            let list_id = uri.rsplit('/').next().unwrap_or_default();
            match outcome {
                Ok(Some(at)) => {
                    // Committed: now the publishers may hear of it.
                    self.changes().changed(list_id);
                    self.journal_revoked(list_id, idx, at);
                    return Ok(RevokeOutcome::Revoked { at });
                }
                Ok(None) => {}
                Err(Failure::Store(e)) => return Err(e),
                Err(Failure::RetryAlone | Failure::PositionUsed) => {
                    return Err(StoreError::Internal("single revocation asked to retry".into()));
                }
            }
            // Not a cached statement: planned with the list id known, so that it reads that
            // list's partition alone.
            let client = self.client().await?;
            let found = client
                .query_opt(
                    "SELECT extract(epoch FROM rv.revoked_at)::bigint AS at
                     FROM entries e JOIN lists l ON l.id = e.list_id
                     JOIN issuers i ON i.client_id = e.client_id AND i.pool = l.pool
                     LEFT JOIN revocations rv ON rv.list_id = e.list_id AND rv.idx = e.idx AND rv.status = 1
                     WHERE e.list_id = $4 AND l.id = $4 AND l.uri = $1 AND l.state IN ('Active', 'Full')
                       AND e.idx = $2 AND e.client_id = $3",
                    &[&uri, &idx, &client_id, &list_id],
                )
                .await?;
            match found {
                Some(row) => {
                    let at: Option<i64> = row.try_get("at")?;
                    let at = at.ok_or_else(|| StoreError::Corrupt("revoked entry without revoked_at".into()))?;
                    Ok(RevokeOutcome::AlreadyRevoked { at })
                }
                None => Ok(RevokeOutcome::NotFound),
            }
        })
        .await
    }

    /// Suspends or reinstates entry `idx` of the list at `uri` for `client_id`: the same
    /// authority as [`Store::revoke`], in a pool that allows suspension. Moves the list's
    /// version and wakes the publishers when the status changed; a revoked entry stays
    /// revoked. One statement (`statuslist_set_status`).
    #[tracing::instrument(level = "debug", name = "status.store", skip_all)]
    pub async fn set_suspended(
        &self,
        uri: &str,
        idx: u64,
        client_id: &str,
        change: StatusChange,
    ) -> Result<StatusChangeOutcome> {
        let Ok(idx) = i64::try_from(idx) else {
            return Ok(StatusChangeOutcome::NotFound);
        };
        self.bounded(async {
            let mut attempts = 0;
            let row = loop {
                attempts += 1;
                let client = self.client().await?;
                let stmt = client
                    .prepare_cached(
                        "SELECT out_outcome, out_at, out_at_us FROM statuslist_set_status($1, $2, $3, $4)",
                    )
                    .await?;
                match client
                    .query_one(&stmt, &[&uri, &idx, &client_id, &change.status()])
                    .await
                {
                    Err(e)
                        if attempts < 4 && e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {}
                    outcome => break outcome?,
                }
            };
            let (outcome, at, at_us): (String, Option<i64>, Option<i64>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let time =
                || at.ok_or_else(|| StoreError::Corrupt(format!("{outcome} without a time")));
            Ok(match outcome.as_str() {
                "changed" => {
                    let at = time()?;
                    // Committed: now the publishers may hear of it.
                    let list_id = uri.rsplit('/').next().unwrap_or_default();
                    self.changes().changed(list_id);
                    let at_us = at_us.unwrap_or(at.saturating_mul(1_000_000));
                    self.journal_status(list_id, idx, at_us, change.status());
                    StatusChangeOutcome::Changed { at }
                }
                "unchanged" => StatusChangeOutcome::Unchanged { at },
                "revoked" => StatusChangeOutcome::Revoked { at: time()? },
                "disabled" => StatusChangeOutcome::Disabled,
                "absent" => StatusChangeOutcome::NotFound,
                other => {
                    return Err(StoreError::Internal(format!(
                        "statuslist_set_status answered {other}"
                    )));
                }
            })
        })
        .await
    }

    /// Revokes every entry of `entries` (`(uri, idx)`, the same rules as [`Store::revoke`]
    /// for each) in one transaction, or none: when one is absent or another client's, the
    /// transaction is rolled back and its position returned. Entries revoked before keep
    /// their time; a repeated entry gets the same answer twice. Publishers hear of the
    /// lists and the failover journal of the entries only after the commit.
    #[tracing::instrument(level = "debug", name = "revocation.batch", skip_all, fields(entries = entries.len()))]
    pub async fn revoke_all(
        &self,
        entries: &[(String, u64)],
        client_id: &str,
    ) -> Result<BatchRevokeOutcome> {
        let mut idxs = Vec::with_capacity(entries.len());
        for (position, (_, idx)) in entries.iter().enumerate() {
            match i64::try_from(*idx) {
                Ok(idx) => idxs.push(idx),
                Err(_) => return Ok(BatchRevokeOutcome::Refused { position }),
            }
        }
        let uris: Vec<&str> = entries.iter().map(|(uri, _)| uri.as_str()).collect();
        let clients = vec![client_id; entries.len()];
        self.bounded(async {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.revoke_all_once(&uris, &idxs, &clients).await {
                    Err(e)
                        if attempts < 4
                            && e.sql_state() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {}
                    outcome => return outcome,
                }
            }
        })
        .await
    }

    async fn revoke_all_once(
        &self,
        uris: &[&str],
        idxs: &[i64],
        clients: &[&str],
    ) -> Result<BatchRevokeOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(REVOKE_BATCH).await?;
        // Locks the lists (in id order, as every revocation does) and revokes what is
        // the client's and not revoked yet; row n of the answer is entry n - 1.
        let mut now: Vec<Option<i64>> = vec![None; uris.len()];
        for row in tx
            .query(&stmt, &[&uris, &idxs, &clients, &None::<&str>])
            .await?
        {
            let (n, at): (i64, i64) = (row.try_get("n")?, row.try_get("at")?);
            let slot = usize::try_from(n - 1)
                .ok()
                .and_then(|i| now.get_mut(i))
                .ok_or_else(|| StoreError::Internal(format!("revocation of a batch: row {n}")))?;
            *slot = Some(at);
        }
        // The others must be the client's and revoked before: read per list (planned
        // with the list id known, so that it reads that list's partition alone).
        let mut before: std::collections::HashMap<(&str, i64), i64> = Default::default();
        let mut lists: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
        for (n, at) in now.iter().enumerate() {
            if at.is_none() {
                lists.entry(uris[n]).or_default().push(idxs[n]);
            }
        }
        for (uri, wanted) in &lists {
            let list_id = uri.rsplit('/').next().unwrap_or_default();
            for row in tx
                .query(
                    "SELECT e.idx, extract(epoch FROM rv.revoked_at)::bigint AS at
                     FROM entries e JOIN lists l ON l.id = e.list_id
                     JOIN issuers i ON i.client_id = e.client_id AND i.pool = l.pool
                     JOIN revocations rv ON rv.list_id = e.list_id AND rv.idx = e.idx AND rv.status = 1
                     WHERE e.list_id = $4 AND l.id = $4 AND l.uri = $1 AND l.state IN ('Active', 'Full')
                       AND e.idx = ANY ($2) AND e.client_id = $3",
                    &[uri, wanted, &clients[0], &list_id],
                )
                .await?
            {
                before.insert((uri, row.try_get("idx")?), row.try_get("at")?);
            }
        }
        let mut outcomes: Vec<RevokeOutcome> = Vec::with_capacity(uris.len());
        let mut first: std::collections::HashMap<(&str, i64), usize> = Default::default();
        for (position, at) in now.iter().enumerate() {
            let entry = (uris[position], idxs[position]);
            let earlier = *first.entry(entry).or_insert(position);
            match (at, before.get(&entry)) {
                // An entry twice in the batch: answered as its first occurrence.
                (None, _) if earlier < position => outcomes.push(outcomes[earlier]),
                (Some(at), _) => outcomes.push(RevokeOutcome::Revoked { at: *at }),
                (None, Some(at)) => outcomes.push(RevokeOutcome::AlreadyRevoked { at: *at }),
                (None, None) => {
                    tx.rollback().await?;
                    return Ok(BatchRevokeOutcome::Refused { position });
                }
            }
        }
        tx.commit().await?;
        for (position, at) in now.iter().enumerate() {
            if let Some(at) = at {
                let list_id = uris[position].rsplit('/').next().unwrap_or_default();
                self.changes().changed(list_id);
                self.journal_revoked(list_id, idxs[position], *at);
            }
        }
        Ok(BatchRevokeOutcome::Revoked(outcomes))
    }
}
