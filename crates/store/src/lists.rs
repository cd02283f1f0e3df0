//! Physical lists: provisioning (with its leases carved), capacity, lifecycle.

use statuslist_format::Bits;
use tokio_postgres::Row;

use crate::notify::CHANNEL_CONFIG;
use crate::{Result, Store, StoreError};

pub use statuslist_format::ListFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListState {
    /// Leases are being claimed.
    Active,
    /// Every position handed out; still served and revocable.
    Full,
    /// Every entry past its `statusExpiry`: entries removed, URI answers 404.
    Retired,
    /// Its pool was deleted with `deletionPolicy: Delete`.
    Deleted,
}

impl ListState {
    pub fn as_str(self) -> &'static str {
        match self {
            ListState::Active => "Active",
            ListState::Full => "Full",
            ListState::Retired => "Retired",
            ListState::Deleted => "Deleted",
        }
    }

    /// Whether the list is published and revocable.
    pub fn is_live(self) -> bool {
        matches!(self, ListState::Active | ListState::Full)
    }
}

impl std::str::FromStr for ListState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "Active" => Ok(ListState::Active),
            "Full" => Ok(ListState::Full),
            "Retired" => Ok(ListState::Retired),
            "Deleted" => Ok(ListState::Deleted),
            other => Err(StoreError::Corrupt(format!("unknown list state {other}"))),
        }
    }
}

/// A physical list (its secret stays inside the store and the lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListInfo {
    pub id: String,
    pub pool: Option<String>,
    pub uri: String,
    pub format: ListFormat,
    pub bits: Bits,
    pub size: u64,
    pub state: ListState,
    pub version: i64,
}

pub(crate) const LIST_COLUMNS: &str =
    "l.id, l.pool, l.uri, l.format, l.bits, l.size, l.state, l.version";

pub(crate) fn list_from_row(row: &Row) -> Result<ListInfo> {
    let bits: i16 = row.try_get("bits")?;
    let size: i64 = row.try_get("size")?;
    let format: String = row.try_get("format")?;
    let state: String = row.try_get("state")?;
    Ok(ListInfo {
        id: row.try_get("id")?,
        pool: row.try_get("pool")?,
        uri: row.try_get("uri")?,
        format: format.parse()?,
        bits: Bits::try_from(bits as u64).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        size: u64::try_from(size).map_err(|_| StoreError::Corrupt("negative size".into()))?,
        state: state.parse()?,
        version: row.try_get("version")?,
    })
}

/// Capacity of one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCapacity {
    pub id: String,
    pub uri: String,
    pub state: ListState,
    pub size: u64,
    /// Entries issued.
    pub allocated: u64,
    /// Entries with a non-zero status.
    pub revoked: u64,
    /// Positions not yet handed out.
    pub free: u64,
}

/// Capacity of a pool: its live (Active and Full) lists and their totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    pub lists: Vec<ListCapacity>,
    pub size: u64,
    pub allocated: u64,
    pub revoked: u64,
    pub free: u64,
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| StoreError::Config("no system randomness".into()))?;
    Ok(b)
}

/// Removes everything stored for the lists `ids` but their `lists` rows (kept, so that an
/// id is never reused) and their entries: leases, revocations, artifacts, publishing
/// state. The one place that knows which tables hold a list's rows (retirement, pool
/// deletion). The entries, a partition per list, and their idempotency keys go after
/// the list has left the live states (see [`Store::drop_dead_partitions`]).
pub(crate) async fn remove_list_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[String],
) -> Result<()> {
    for table in ["leases", "revocations", "artifacts", "list_publish"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE list_id = ANY($1)"),
            &[&ids],
        )
        .await?;
    }
    Ok(())
}

/// Positions of a dead list whose idempotency keys one statement removes.
const PURGE_CHUNK: i64 = 20_000;
/// How long dropping a partition waits for its lock on `entries` (issuances queue behind
/// it meanwhile) before giving up until the next sweep.
const DROP_LOCK_TIMEOUT: &str = "500ms";

/// The partition of `entries` holding list `id`'s entries (see migrations/0015_schema.sql).
fn partition_of(id: &str) -> Result<String> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Corrupt(format!("not a list id: {id:?}")));
    }
    Ok(format!("entries_{}", id.to_ascii_lowercase()))
}

/// A random list id: 12 uppercase hex characters.
fn new_list_id() -> Result<String> {
    Ok(random_bytes::<6>()?
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect())
}

/// A pool's live lists with their figures, in O(lists + leases) rather than
/// O(entries): every position issued is either inside a held lease's range or outside
/// every lease range (a released or reclaimed lease starts past its highest issued
/// position, and spent ranges are deleted), so positions handed out are the list's size
/// minus its lease ranges plus what was issued inside held ones (an index range scan over
/// at most one lease per holder). "Allocated" is therefore positions used: issued, or
/// skipped for good after a reclaim. "Revoked" is the list's counter, moved by each
/// revocation batch.
const CAPACITY_QUERY: &str = "
    SELECT l.id, l.uri, l.state, l.size,
        l.size - coalesce(r.ranges, 0) + coalesce(h.in_held, 0) AS allocated,
        l.revoked,
        coalesce(r.ranges, 0) - coalesce(h.in_held, 0) AS free
    FROM lists l
    LEFT JOIN LATERAL (
        SELECT sum(le.end_pos - le.start_pos)::bigint AS ranges
        FROM leases le WHERE le.list_id = l.id) r ON true
    LEFT JOIN LATERAL (
        SELECT sum(statuslist_entries_in(le.list_id, le.start_pos, le.end_pos))::bigint AS in_held
        FROM leases le WHERE le.list_id = l.id AND le.holder IS NOT NULL) h ON true
    WHERE l.pool = $1 AND l.state IN ('Active', 'Full')
    ORDER BY l.created_at, l.id";

/// Whether the pool has an Active list, and its free positions (as in [`CAPACITY_QUERY`],
/// over Active lists only, without the per-list counts): what provisioning decides on.
/// The held leases are counted apart from the others, so that the per-lease count runs
/// for the few held leases only, not for every lease of the pool. Each count reads one
/// list's partition, planned alone (`statuslist_entries_in`): a subquery
/// on `entries` correlated on the lease would be planned over every partition there is.
const FREE_QUERY: &str = "
    SELECT EXISTS (SELECT 1 FROM lists WHERE pool = $1 AND state = 'Active'),
        (coalesce((SELECT sum(le.end_pos - le.start_pos)
                   FROM leases le JOIN lists l ON l.id = le.list_id
                   WHERE l.pool = $1 AND l.state = 'Active'), 0)
         - coalesce((SELECT sum(statuslist_entries_in(le.list_id, le.start_pos, le.end_pos))
                     FROM leases le JOIN lists l ON l.id = le.list_id
                     WHERE l.pool = $1 AND l.state = 'Active' AND le.holder IS NOT NULL), 0))::bigint";

fn capacity_from_rows(rows: &[Row]) -> Result<Capacity> {
    let mut cap = Capacity::default();
    for row in rows {
        let n = |c: &str| -> Result<u64> {
            let v: i64 = row.try_get(c)?;
            u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {c}")))
        };
        let state: String = row.try_get("state")?;
        let list = ListCapacity {
            id: row.try_get("id")?,
            uri: row.try_get("uri")?,
            state: state.parse()?,
            size: n("size")?,
            allocated: n("allocated")?,
            revoked: n("revoked")?,
            free: n("free")?,
        };
        cap.size += list.size;
        cap.allocated += list.allocated;
        cap.revoked += list.revoked;
        if list.state == ListState::Active {
            cap.free += list.free;
        }
        cap.lists.push(list);
    }
    Ok(cap)
}

impl Store {
    pub async fn list(&self, id: &str) -> Result<Option<ListInfo>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {LIST_COLUMNS} FROM lists l WHERE l.id = $1"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&id])
                .await?
                .as_ref()
                .map(list_from_row)
                .transpose()
        })
        .await
    }

    /// Capacity figures of a pool's live lists.
    pub async fn capacity(&self, pool: &str) -> Result<Capacity> {
        self.bounded(async {
            let client = self.client().await?;
            capacity_from_rows(&client.query(CAPACITY_QUERY, &[&pool]).await?)
        })
        .await
    }

    /// Whether `pool` would get a list from [`Store::ensure_capacity`] now: it is issuing
    /// and has no Active list or fewer free entries than its `minFreeEntries`, or an
    /// Active list of an earlier incarnation of the database (a pass seals it, then counts
    /// again). A pool not in the database needs one too (a pass applies it first). Read
    /// without locks: what a worker's capacity request is checked with before the
    /// operator runs a pass over every pool (a request comes with every lease three
    /// quarters spent, most of them while the pool has plenty).
    pub async fn needs_capacity(&self, pool: &str) -> Result<bool> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT p.issuing, p.min_free_entries,
                            EXISTS (SELECT 1 FROM lists l WHERE l.pool = p.name AND l.state = 'Active'
                                      AND l.incarnation <> statuslist_incarnation())
                     FROM pools p WHERE p.name = $1",
                )
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&pool]).await? else {
                return Ok(true);
            };
            let (issuing, min_free, unsealed): (bool, i64, bool) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !issuing {
                return Ok(false);
            }
            if unsealed {
                return Ok(true);
            }
            let stmt = client.prepare_cached(FREE_QUERY).await?;
            let free = client.query_one(&stmt, &[&pool]).await?;
            let (has_active, free): (bool, i64) = (free.try_get(0)?, free.try_get(1)?);
            Ok(!has_active || free < min_free)
        })
        .await
    }

    /// Provisions a new list when the pool's free capacity is below `minFreeEntries` (or
    /// it has no list at all). The pool row is locked, so concurrent callers provision at
    /// most one list between them. Returns the new list, if any.
    pub async fn ensure_capacity(&self, pool: &str) -> Result<Option<ListInfo>> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT format, bits, base_uri, entries_per_list, min_free_entries, lease_size
                     FROM pools WHERE name = $1 AND issuing FOR UPDATE",
                    &[&pool],
                )
                .await?
            else {
                return Ok(None);
            };
            let free = tx.query_one(FREE_QUERY, &[&pool]).await?;
            let (has_active, free): (bool, i64) = (free.try_get(0)?, free.try_get(1)?);
            let min_free: i64 = row.try_get("min_free_entries")?;
            if has_active && free >= min_free {
                return Ok(None);
            }
            let format: ListFormat = row.try_get::<_, String>("format")?.parse()?;
            let bits: i16 = row.try_get("bits")?;
            let base_uri: String = row.try_get("base_uri")?;
            let size: i64 = row.try_get("entries_per_list")?;
            let lease_size: i64 = row.try_get("lease_size")?;
            let secret = random_bytes::<32>()?;
            let base = base_uri.trim_end_matches('/');
            // A random 48-bit id collides with an existing one with negligible odds; the
            // primary key makes that a retry, never a reuse.
            let (id, uri) = loop {
                let id = new_list_id()?;
                let uri = format!("{base}/{}/{id}", format.path());
                let inserted = tx
                    .execute(
                        "INSERT INTO lists (id, pool, uri, format, bits, size, secret)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        &[&id, &pool, &uri, &format.as_str(), &bits, &size, &secret.as_slice()],
                    )
                    .await?;
                if inserted == 1 {
                    break (id, uri);
                }
            };
            tx.execute(
                "INSERT INTO leases (list_id, start_pos, end_pos)
                 SELECT $1, s, LEAST(s + $2::bigint, $3::bigint) FROM generate_series(0::bigint, $3::bigint - 1, $2::bigint) AS s",
                &[&id, &lease_size, &size],
            )
            .await?;
            tx.execute("INSERT INTO list_publish (list_id) VALUES ($1)", &[&id]).await?;
            tx.execute("SELECT statuslist_add_entries_partition($1)", &[&id]).await?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL_CONFIG, &pool]).await?;
            tx.commit().await?;
            tracing::info!(pool, list = %id, %uri, "provisioned list");
            Ok(Some(ListInfo {
                id,
                pool: Some(pool.to_owned()),
                uri,
                format,
                bits: Bits::try_from(bits as u64).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                size: size as u64,
                state: ListState::Active,
                version: 0,
            }))
        })
        .await
    }

    /// Marks Full the pool's Active lists whose every position has been handed out (no
    /// lease left, so nothing more is issued into them), and records each one's latest
    /// `statusExpiry`, final from then on: once per list, not once per reconcile. The
    /// latest expiry is read before any lock (a list without leases never gets another
    /// entry), and the rows are locked in id order, as revocation batches lock them: a
    /// batch over two lists being marked must not deadlock with this.
    pub async fn mark_full(&self, pool: &str) -> Result<Vec<String>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "WITH c AS (SELECT l.id, coalesce(statuslist_latest_expiry(l.id), 0) AS m
                                FROM lists l
                                WHERE l.pool = $1 AND l.state = 'Active'
                                  AND NOT EXISTS (SELECT 1 FROM leases le WHERE le.list_id = l.id)),
                          k AS (SELECT id FROM lists WHERE id IN (SELECT id FROM c) AND state = 'Active'
                                ORDER BY id FOR NO KEY UPDATE)
                     UPDATE lists l SET state = 'Full', max_status_expiry = c.m
                     FROM c JOIN k ON k.id = c.id WHERE l.id = c.id
                     RETURNING l.id",
                    &[&pool],
                )
                .await?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
        .await
    }

    /// Retires the pool's lists whose every entry's `statusExpiry` is before `now` (unix
    /// seconds): entries, leases and artifacts removed, state Retired, id kept so it is
    /// never reused. That covers Full lists; Active lists with no lease held, when they
    /// have entries (an empty Active list of an issuing pool is its capacity) or their
    /// pool no longer issues (deleted with `Retain`). A Full list is judged by the latest
    /// `statusExpiry` recorded when it became Full (one comparison, no entry read).
    pub async fn retire_expired(&self, pool: &str, now: i64) -> Result<Vec<String>> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let candidates = "
                SELECT l.id FROM lists l JOIN pools p ON p.name = l.pool
                WHERE l.pool = $1
                  AND ((l.state = 'Full' AND l.max_status_expiry < $2)
                       OR (l.state = 'Active'
                           AND (NOT p.issuing OR statuslist_has_entries(l.id, NULL))
                           AND NOT statuslist_has_entries(l.id, $2)))
                ORDER BY l.id
                FOR UPDATE OF l";
            let rows = tx.query(candidates, &[&pool, &now]).await?;
            let mut ids: Vec<String> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
            if ids.is_empty() {
                tx.commit().await?;
                return Ok(ids);
            }
            // Lock every lease of those lists (waiting for issuances in flight, which hold
            // a key-share lock), then keep only the lists nobody holds a lease on and
            // that still have no live entry.
            let leases = tx
                .query(
                    "SELECT list_id, holder IS NOT NULL FROM leases WHERE list_id = ANY($1) ORDER BY id FOR UPDATE",
                    &[&ids],
                )
                .await?;
            for row in &leases {
                let (list, held): (String, bool) = (row.try_get(0)?, row.try_get(1)?);
                if held {
                    ids.retain(|id| *id != list);
                }
            }
            let live = tx
                .query(
                    "SELECT DISTINCT list_id FROM entries WHERE list_id = ANY($1) AND status_expiry >= $2",
                    &[&ids, &now],
                )
                .await?;
            for row in &live {
                let list: String = row.try_get(0)?;
                ids.retain(|id| *id != list);
            }
            if !ids.is_empty() {
                remove_list_rows(&tx, &ids).await?;
                tx.execute("UPDATE lists SET state = 'Retired', retired_at = now() WHERE id = ANY($1)", &[&ids])
                    .await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&crate::notify::CHANNEL_CONFIG, &pool])
                    .await?;
            }
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    /// Removes the entries of lists no longer live (retired, or their pool deleted), and
    /// their idempotency keys: the keys in chunks of [`PURGE_CHUNK`] positions, each a
    /// statement of its own (bounded work, nothing held between them), then the list's
    /// partition in one drop. Works for at most about `budget` and goes on where it
    /// stopped on the next call (a restart begins the list's keys again, harmlessly).
    /// Returns the lists whose partition is gone.
    pub async fn drop_dead_partitions(&self, budget: std::time::Duration) -> Result<Vec<String>> {
        let started = std::time::Instant::now();
        let dead = self
            .bounded(async {
                let client = self.client().await?;
                let rows = client
                    .query(
                        "SELECT l.id, l.size FROM pg_inherits i
                         JOIN pg_class c ON c.oid = i.inhrelid
                         JOIN lists l ON l.id = upper(substr(c.relname, 9))
                         WHERE i.inhparent = 'entries'::regclass AND c.relname LIKE 'entries\\_%'
                           AND l.state IN ('Retired', 'Deleted')
                         ORDER BY l.id",
                        &[],
                    )
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        let mut dropped = Vec::new();
        for (id, size) in dead {
            let part = partition_of(&id)?;
            let mut from = self.purged_to(&id);
            while from < size {
                if started.elapsed() >= budget {
                    return Ok(dropped);
                }
                let to = from.saturating_add(PURGE_CHUNK);
                self.bounded(async {
                    let client = self.client().await?;
                    client
                        .execute(
                            &format!(
                                "DELETE FROM issuance_keys k USING {part} e
                                 WHERE e.position >= $1 AND e.position < $2
                                   AND k.client_id = e.client_id AND k.jti = e.jti AND k.list_id = e.list_id"
                            ),
                            &[&from, &to],
                        )
                        .await?;
                    Ok(())
                })
                .await?;
                from = to;
                self.set_purged_to(&id, from);
            }
            let drop = self
                .bounded(async {
                    let mut client = self.client().await?;
                    let tx = client.transaction().await?;
                    tx.execute(
                        "SELECT statuslist_drop_entries_partition($1, $2)",
                        &[&id, &DROP_LOCK_TIMEOUT],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await;
            match drop {
                Ok(()) => {
                    self.forget_purged(&id);
                    tracing::info!(list = %id, "entries of a dead list dropped");
                    dropped.push(id);
                }
                Err(e)
                    if e.sql_state()
                        == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
                {
                    tracing::info!(list = %id, "entries not dropped yet: entries is busy; next sweep");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(dropped)
    }

    /// Pools whose resource was deleted with `Retain`: they no longer issue, and are kept
    /// until every list has retired.
    pub async fn retained_pools(&self) -> Result<Vec<String>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT name FROM pools WHERE NOT issuing ORDER BY name",
                    &[],
                )
                .await?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
        .await
    }

    /// Removes a pool that no longer issues and has no live list left (its issuers go
    /// with it); false when it issues again or still has lists.
    pub async fn remove_drained_pool(&self, pool: &str) -> Result<bool> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let removed = tx
                .execute(
                    "DELETE FROM pools p WHERE p.name = $1 AND NOT p.issuing
                       AND NOT EXISTS (SELECT 1 FROM lists l WHERE l.pool = p.name AND l.state IN ('Active', 'Full'))",
                    &[&pool],
                )
                .await?;
            if removed > 0 {
                tx.execute("SELECT pg_notify($1, $2)", &[&crate::notify::CHANNEL_CONFIG, &pool])
                    .await?;
            }
            tx.commit().await?;
            Ok(removed > 0)
        })
        .await
    }
}
