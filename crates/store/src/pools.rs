//! Pools (one per StatusList resource) and their issuers.

use statuslist_format::Bits;
use tokio_postgres::Row;

use crate::lists::ListFormat;
use crate::notify::CHANNEL_CONFIG;
use crate::{Result, Store, StoreError};

/// The settings of a pool, as the StatusList spec gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub format: ListFormat,
    pub bits: Bits,
    /// Public origin; a list's URI is `{base_uri}/t/{ID}` or `{base_uri}/b/{ID}`.
    pub base_uri: String,
    pub entries_per_list: u64,
    pub min_free_entries: u64,
    pub lease_size: u64,
    pub ttl_seconds: u64,
    pub validity_seconds: u64,
    pub max_status_lifetime_seconds: u64,
    /// Whether issuers may suspend and reinstate entries (status 2); needs 2 bits or more.
    pub suspension: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    pub client_id: String,
    pub jwks_uri: String,
}

/// A pool as the operator writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Unique pool name (`namespace/name` of the resource).
    pub name: String,
    /// `metadata.generation` of the resource this was written from.
    pub generation: i64,
    /// `metadata.uid` of that resource; `None` for pools from manifest files, which are
    /// not fenced.
    pub uid: Option<String>,
    pub settings: PoolSettings,
    pub issuers: Vec<IssuerSpec>,
}

/// A pool as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub generation: i64,
    pub uid: Option<String>,
    pub settings: PoolSettings,
    /// False after the resource was deleted with `deletionPolicy: Retain`.
    pub issuing: bool,
}

/// A registered issuer and the pool it draws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub client_id: String,
    pub jwks_uri: String,
    pub pool: Pool,
}

/// An issuer of the spec whose `clientId` another pool already holds: not taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConflict {
    pub client_id: String,
    pub held_by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub conflicts: Vec<IssuerConflict>,
    /// Whether anything stored changed (and `statuslist_config` was notified).
    pub changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Stop issuing; keep entries, revocation and publishing.
    Retain,
    /// Remove the pool's rows; its URIs answer 404 (ids are still never reused).
    Delete,
}

const POOL_COLUMNS: &str = "p.name, p.generation, p.uid, p.format, p.bits, p.base_uri, p.entries_per_list, \
     p.min_free_entries, p.lease_size, p.ttl_seconds, p.validity_seconds, \
     p.max_status_lifetime_seconds, p.suspension, p.issuing";

fn u64_of(row: &Row, col: &str) -> Result<u64> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {col}")))
}

fn pool_from_row(row: &Row) -> Result<Pool> {
    let bits: i16 = row.try_get("bits")?;
    let format: String = row.try_get("format")?;
    Ok(Pool {
        name: row.try_get("name")?,
        generation: row.try_get("generation")?,
        uid: row.try_get("uid")?,
        issuing: row.try_get("issuing")?,
        settings: PoolSettings {
            format: format.parse()?,
            bits: Bits::try_from(bits as u64).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            base_uri: row.try_get("base_uri")?,
            entries_per_list: u64_of(row, "entries_per_list")?,
            min_free_entries: u64_of(row, "min_free_entries")?,
            lease_size: u64_of(row, "lease_size")?,
            ttl_seconds: u64_of(row, "ttl_seconds")?,
            validity_seconds: u64_of(row, "validity_seconds")?,
            max_status_lifetime_seconds: u64_of(row, "max_status_lifetime_seconds")?,
            suspension: row.try_get("suspension")?,
        },
    })
}

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Config(format!("{what} is too large")))
}

impl Store {
    /// Writes a pool and its issuers in one transaction. A `clientId` held by another pool
    /// is reported in the outcome, never taken over. `format` and `bits` are immutable.
    ///
    /// Fenced by the resource's identity: an apply carrying the UID of a deleted resource,
    /// or an older generation of the resource that wrote the pool, is refused with
    /// [`StoreError::Superseded`] and changes nothing, so a writer with a stale view cannot
    /// resurrect a deleted pool, re-enable a retained one or roll back its issuers. A new
    /// resource of the same name (a new UID) takes the pool over and resumes issuance.
    /// Nothing is written, and nobody notified, when nothing changed.
    pub async fn apply_pool(&self, spec: &PoolSpec) -> Result<ApplyOutcome> {
        let s = &spec.settings;
        if s.suspension && s.bits.get() < 2 {
            return Err(StoreError::Config(format!(
                "pool {}: suspension needs 2 bits per entry or more",
                spec.name
            )));
        }
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            if let Some(uid) = &spec.uid
                && tx
                    .query_opt("SELECT 1 FROM deleted_resources WHERE uid = $1", &[uid])
                    .await?
                    .is_some()
            {
                return Err(StoreError::Superseded(format!(
                    "pool {}: resource {uid} was deleted",
                    spec.name
                )));
            }
            let existing = tx
                .query_opt(
                    "SELECT format, bits, uid, generation FROM pools WHERE name = $1 FOR UPDATE",
                    &[&spec.name],
                )
                .await?;
            if let Some(row) = &existing {
                let (format, bits): (String, i16) = (row.try_get(0)?, row.try_get(1)?);
                let (uid, generation): (Option<String>, i64) = (row.try_get(2)?, row.try_get(3)?);
                if spec.uid.is_some() && uid == spec.uid && spec.generation < generation {
                    return Err(StoreError::Superseded(format!(
                        "pool {}: generation {} is older than the stored {generation}",
                        spec.name, spec.generation
                    )));
                }
                if format != s.format.as_str() || bits != i16::from(s.bits.get()) {
                    return Err(StoreError::Config(format!(
                        "pool {}: format and bits are immutable ({format}/{bits} stored)",
                        spec.name
                    )));
                }
            }
            let written = tx
                .execute(
                    "INSERT INTO pools AS p (name, format, bits, base_uri, entries_per_list, min_free_entries,
                         lease_size, ttl_seconds, validity_seconds, max_status_lifetime_seconds, generation, uid, issuing, suspension)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, true, $13)
                     ON CONFLICT (name) DO UPDATE SET
                         base_uri = EXCLUDED.base_uri, entries_per_list = EXCLUDED.entries_per_list,
                         min_free_entries = EXCLUDED.min_free_entries, lease_size = EXCLUDED.lease_size,
                         ttl_seconds = EXCLUDED.ttl_seconds, validity_seconds = EXCLUDED.validity_seconds,
                         max_status_lifetime_seconds = EXCLUDED.max_status_lifetime_seconds,
                         generation = EXCLUDED.generation, uid = EXCLUDED.uid, issuing = true,
                         suspension = EXCLUDED.suspension, updated_at = now()
                     WHERE (p.base_uri, p.entries_per_list, p.min_free_entries, p.lease_size, p.ttl_seconds,
                            p.validity_seconds, p.max_status_lifetime_seconds, p.generation, p.uid, p.issuing,
                            p.suspension)
                         IS DISTINCT FROM
                           (EXCLUDED.base_uri, EXCLUDED.entries_per_list, EXCLUDED.min_free_entries,
                            EXCLUDED.lease_size, EXCLUDED.ttl_seconds, EXCLUDED.validity_seconds,
                            EXCLUDED.max_status_lifetime_seconds, EXCLUDED.generation, EXCLUDED.uid, true,
                            EXCLUDED.suspension)",
                    &[
                        &spec.name,
                        &s.format.as_str(),
                        &i16::from(s.bits.get()),
                        &s.base_uri,
                        &to_i64(s.entries_per_list, "entriesPerList")?,
                        &to_i64(s.min_free_entries, "minFreeEntries")?,
                        &to_i64(s.lease_size, "leaseSize")?,
                        &to_i64(s.ttl_seconds, "ttlSeconds")?,
                        &to_i64(s.validity_seconds, "validitySeconds")?,
                        &to_i64(s.max_status_lifetime_seconds, "maxStatusLifetimeSeconds")?,
                        &spec.generation,
                        &spec.uid,
                        &s.suspension,
                    ],
                )
                .await?;
            let mut outcome = ApplyOutcome {
                changed: written > 0,
                ..ApplyOutcome::default()
            };
            let mut kept: Vec<&str> = Vec::new();
            for issuer in &spec.issuers {
                // Insert, or update only a row this pool already owns (and only if it differs).
                let row = tx
                    .query_one(
                        "WITH up AS (
                             INSERT INTO issuers (client_id, pool, jwks_uri) VALUES ($1, $2, $3)
                             ON CONFLICT (client_id) DO UPDATE SET jwks_uri = EXCLUDED.jwks_uri
                             WHERE issuers.pool = EXCLUDED.pool AND issuers.jwks_uri <> EXCLUDED.jwks_uri
                             RETURNING pool)
                         SELECT (SELECT pool FROM up) AS written,
                                (SELECT pool FROM issuers WHERE client_id = $1) AS held",
                        &[&issuer.client_id, &spec.name, &issuer.jwks_uri],
                    )
                    .await?;
                let written: Option<String> = row.try_get("written")?;
                let held_by: Option<String> = row.try_get("held")?;
                if written.is_some() {
                    outcome.changed = true;
                    kept.push(&issuer.client_id);
                } else if held_by.as_deref() == Some(spec.name.as_str()) {
                    kept.push(&issuer.client_id);
                } else {
                    outcome.conflicts.push(IssuerConflict {
                        client_id: issuer.client_id.clone(),
                        held_by: held_by.unwrap_or_default(),
                    });
                }
            }
            let removed = tx
                .execute("DELETE FROM issuers WHERE pool = $1 AND NOT (client_id = ANY($2))", &[&spec.name, &kept])
                .await?;
            outcome.changed |= removed > 0;
            if outcome.changed {
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL_CONFIG, &spec.name]).await?;
            }
            tx.commit().await?;
            Ok(outcome)
        })
        .await
    }

    /// Handles the deletion of a pool's resource under `policy`. With the resource's `uid`
    /// the deletion is remembered (later applies carrying it are refused), and a pool that
    /// a newer resource of the same name has since taken over is left alone.
    pub async fn delete_pool(
        &self,
        name: &str,
        uid: Option<&str>,
        policy: DeletionPolicy,
    ) -> Result<()> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            if let Some(uid) = uid {
                tx.execute(
                    "INSERT INTO deleted_resources (uid, pool) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&uid, &name],
                )
                .await?;
                let owner = tx
                    .query_opt("SELECT uid FROM pools WHERE name = $1 FOR UPDATE", &[&name])
                    .await?;
                if let Some(row) = owner {
                    let owner: Option<String> = row.try_get(0)?;
                    if owner.is_some_and(|o| o != uid) {
                        tx.commit().await?;
                        return Ok(());
                    }
                }
            }
            // Every held lease is taken back (waiting for in-flight issuances), so its holder
            // is fenced out; claims check `issuing`, so no new issuance starts.
            let held = tx
                .query(
                    "SELECT le.id FROM leases le JOIN lists l ON l.id = le.list_id
                     WHERE l.pool = $1 AND le.holder IS NOT NULL ORDER BY le.id FOR UPDATE OF le",
                    &[&name],
                )
                .await?;
            let held: Vec<i64> = held.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
            crate::leases::return_remainder(&tx, &held).await?;
            match policy {
                DeletionPolicy::Retain => {
                    tx.execute("UPDATE pools SET issuing = false, updated_at = now() WHERE name = $1", &[&name])
                        .await?;
                }
                DeletionPolicy::Delete => {
                    let ids: Vec<String> = tx
                        .query("SELECT id FROM lists WHERE pool = $1", &[&name])
                        .await?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect::<Result<_, _>>()?;
                    crate::lists::remove_list_rows(&tx, &ids).await?;
                    tx.execute(
                        "UPDATE lists SET state = 'Deleted', retired_at = now(), pool = NULL WHERE pool = $1",
                        &[&name],
                    )
                    .await?;
                    // Issuers go with the pool (ON DELETE CASCADE).
                    tx.execute("DELETE FROM pools WHERE name = $1", &[&name]).await?;
                }
            }
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL_CONFIG, &name]).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn pool(&self, name: &str) -> Result<Option<Pool>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {POOL_COLUMNS} FROM pools p WHERE p.name = $1"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&name])
                .await?
                .as_ref()
                .map(pool_from_row)
                .transpose()
        })
        .await
    }

    /// Every pool, for the operator's periodic pass.
    pub async fn pools(&self) -> Result<Vec<Pool>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {POOL_COLUMNS} FROM pools p ORDER BY p.name"),
                    &[],
                )
                .await?;
            rows.iter().map(pool_from_row).collect()
        })
        .await
    }

    /// The issuer registered under `client_id`, with its pool.
    pub async fn issuer(&self, client_id: &str) -> Result<Option<Issuer>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT i.client_id, i.jwks_uri, {POOL_COLUMNS}
                     FROM issuers i JOIN pools p ON p.name = i.pool WHERE i.client_id = $1"
                ))
                .await?;
            match client.query_opt(&stmt, &[&client_id]).await? {
                None => Ok(None),
                Some(row) => Ok(Some(Issuer {
                    client_id: row.try_get("client_id")?,
                    jwks_uri: row.try_get("jwks_uri")?,
                    pool: pool_from_row(&row)?,
                })),
            }
        })
        .await
    }
}
