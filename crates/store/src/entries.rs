//! Issuance and revocation.

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::batch::{Failure, Revoke, RevokeRow, Row, Statement};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked now, at this unix time.
    Revoked { at: i64 },
    /// Revoked before, at this unix time: nothing changed.
    AlreadyRevoked { at: i64 },
    /// No such entry for this client (absent, or another client's: one answer for both).
    NotFound,
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
                return match self.find_existing(req).await? {
                    Some(found) => Ok(found),
                    None => Err(StoreError::LeaseLost),
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
                "INSERT INTO entries (list_id, idx, position, client_id, jti, status_expiry)
                 SELECT le.list_id, $4, $5, $6, $7, $8 FROM leases le
                 WHERE le.id = $1 AND le.holder = $2 AND le.token = $3 AND le.expires_at > now()
                   AND $5 >= le.start_pos AND $5 < le.end_pos
                 FOR KEY SHARE OF le
                 ON CONFLICT (client_id, jti) DO NOTHING
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
        let client = self.client().await?;
        self.existing(&client, req).await
    }

    /// The entry already issued for `(client_id, jti)`, if any, checked against the
    /// request's `statusExpiry`.
    async fn existing(
        &self,
        client: &deadpool_postgres::Object,
        req: &IssueRequest,
    ) -> Result<Option<IssueOutcome>> {
        let stmt = client
            .prepare_cached(
                "SELECT e.list_id, e.idx, e.status_expiry, l.uri,
                        EXISTS (SELECT 1 FROM issuers i WHERE i.client_id = e.client_id AND i.pool = l.pool) AS ours
                 FROM entries e JOIN lists l ON l.id = e.list_id
                 WHERE e.client_id = $1 AND e.jti = $2",
            )
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&req.client_id, &req.jti]).await? else {
            return Ok(None);
        };
        let expiry: i64 = row.try_get("status_expiry")?;
        // Issued under another registration of this clientId (since removed from that
        // pool and registered elsewhere): not this issuer's to see. Answered as a changed
        // request, which says nothing about the entry.
        let ours: bool = row.try_get("ours")?;
        if expiry != req.status_expiry || !ours {
            return Err(StoreError::IdempotencyConflict);
        }
        let idx: i64 = row.try_get("idx")?;
        Ok(Some(IssueOutcome {
            list_id: row.try_get("list_id")?,
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
            match outcome {
                Ok(Some(at)) => return Ok(RevokeOutcome::Revoked { at }),
                Ok(None) => {}
                Err(Failure::Store(e)) => return Err(e),
                Err(Failure::RetryAlone | Failure::PositionUsed) => {
                    return Err(StoreError::Internal("single revocation asked to retry".into()));
                }
            }
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT extract(epoch FROM rv.revoked_at)::bigint AS at
                     FROM entries e JOIN lists l ON l.id = e.list_id
                     JOIN issuers i ON i.client_id = e.client_id AND i.pool = l.pool
                     LEFT JOIN revocations rv ON rv.list_id = e.list_id AND rv.idx = e.idx
                     WHERE l.uri = $1 AND l.state IN ('Active', 'Full') AND e.idx = $2 AND e.client_id = $3",
                )
                .await?;
            match client.query_opt(&stmt, &[&uri, &idx, &client_id]).await? {
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
}
