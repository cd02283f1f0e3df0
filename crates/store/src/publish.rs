//! Publish state: which lists need rendering, their sparse entries, the signed artifacts.

use std::future::Future;
use std::time::Duration;
use tracing::Instrument as _;

use crate::lists::{LIST_COLUMNS, ListInfo, list_from_row};
use crate::notify::CHANNEL_PUBLISHED;
use crate::{Result, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// Token list as `statuslist+jwt`.
    Jwt,
    /// Token list as `statuslist+cwt`.
    Cwt,
    /// Bitstring list as a `vc+jwt` credential.
    Vc,
}

impl ArtifactKind {
    fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Jwt => "jwt",
            ArtifactKind::Cwt => "cwt",
            ArtifactKind::Vc => "vc",
        }
    }
}

/// A signed rendering of a list, as the renderer produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub body: Vec<u8>,
    /// Strong ETag, quotes included.
    pub etag: String,
    pub iat: i64,
    pub exp: i64,
    /// Seconds a consumer may cache it.
    pub ttl: i64,
    /// `kid` of the key that signed it.
    pub kid: String,
}

/// One pool's servable lists ([`Store::pool_lists`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLists {
    pub pool: String,
    /// The pool's `ttlSeconds`: how long a copy may be cached.
    pub ttl_seconds: u64,
    /// List URIs, oldest list first.
    pub uris: Vec<String>,
}

/// An artifact as stored, with the list version it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub list: ListInfo,
    pub version: i64,
    pub artifact: Artifact,
}

/// A list to render: its settings and its non-zero entries — all of them, or (`since`)
/// only those changed after the version of the renderer's own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishJob {
    pub list: ListInfo,
    pub ttl_seconds: u64,
    pub validity_seconds: u64,
    /// `(idx, status)` with `status != 0`, in index order.
    pub entries: Vec<(u64, u8)>,
    /// `Some(v)`: `entries` holds only what changed after version `v`, to apply onto a
    /// copy of the list at `v`. `None`: every non-zero entry.
    pub since: Option<i64>,
}

/// What one [`Store::publish_due`] pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishReport {
    /// `(list id, version)` stored.
    pub published: Vec<(String, i64)>,
    /// For each stored version that published status changes: seconds from the oldest of
    /// them (its commit) to the store.
    pub change_delays: Vec<f64>,
    /// `(list id, error)` the renderer refused; retried on the next pass.
    pub failed: Vec<(String, String)>,
}

/// How long a publisher may render one list, by default (`StoreConfig::render_bound`).
pub const RENDER_BOUND: Duration = Duration::from_secs(15);
/// A claim lasts this long unless its holder, still rendering, extends it (every
/// [`CLAIM_HEARTBEAT`]): a publisher that dies mid-render holds its list up this long at
/// most.
const CLAIM_SECONDS: f64 = 3.0;
const CLAIM_HEARTBEAT: Duration = Duration::from_secs(1);
/// A list whose render failed is left alone this long, so it cannot starve the others.
const FAILED_BACKOFF_SECONDS: f64 = 10.0;

/// Storing a rendered list, in one statement (one round trip, one short transaction:
/// under load every extra round trip is time the row locks and the notification queue's
/// commit lock are held): the artifacts unless a newer version is stored, the list's
/// published version and `exp`, the claim released, the signing key's latest `exp`, and
/// the `published` notification; the delay of the oldest change it publishes first.
/// `statuslist_store_artifacts` (schema 19) holds the statement, planned once per
/// session: sent as a prepared statement, it was planned again at every call. The key's
/// `exp` is recorded rounded up to the minute: its row is written once a minute, not by
/// every publish (each passes the last `exp` by a second or more, and concurrent
/// publishes queued on that one row lock until each other's commit); the JWKS keeps a
/// key at most a minute past what it signed. The delay reads, of the list's revocations,
/// only the version range it publishes first (as a join, the planner could read all of
/// the list's revocations: 2.6-3.0 ms a publish in the interleaved revocation bench).
const STORE_ARTIFACTS: &str = "SELECT statuslist_store_artifacts($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) AS delay";

impl Store {
    /// Publishes up to `limit` lists whose published version is behind, or whose artifacts
    /// have less than half of the pool's `validitySeconds` left at `now` (unix seconds), so
    /// they are re-signed well before `exp`; one list at a time: claim it (a row with an
    /// owner and a deadline, `SKIP LOCKED`, so two publishers never render the same list
    /// and revocations never wait for one), read its statuses, render with `render` with
    /// no transaction open and within the render bound ([`RENDER_BOUND`] unless
    /// configured), then store the artifacts unless a
    /// newer version was stored meanwhile. A list that fails (or takes too long) is
    /// reported, left alone for a few seconds, and the pass goes on with the others.
    ///
    /// `copy` tells the version of the renderer's own copy of a list, if it keeps one:
    /// then only the entries changed since are read.
    pub async fn publish_due<F, Fut, E>(
        &self,
        limit: i64,
        now: i64,
        copy: impl Fn(&str) -> Option<i64>,
        mut render: F,
    ) -> Result<PublishReport>
    where
        F: FnMut(PublishJob) -> Fut,
        Fut: Future<Output = Result<Vec<Artifact>, E>>,
        E: std::fmt::Display,
    {
        let mut report = PublishReport::default();
        // Each list at most once per pass.
        let mut done: Vec<String> = Vec::new();
        for _ in 0..limit.max(0) {
            let token = uuid::Uuid::new_v4();
            let t0 = std::time::Instant::now();
            let Some(mut job) = self.bounded(self.claim_publish(now, token, &done)).await? else {
                break;
            };
            // One trace per list published: read, render (compress, sign), store.
            let span = tracing::debug_span!(
                "publish",
                list = %job.list.id,
                version = job.list.version,
                format = ?job.list.format,
                changes = tracing::field::Empty
            );
            // Read after the version: the content is at least as new as the version
            // claimed (a revocation commits its entries with the version bump that
            // covers them). The claim is kept while a large list is read.
            let since = copy(&job.list.id).filter(|v| *v <= job.list.version);
            job.entries = self
                .holding(
                    &job.list.id,
                    token,
                    self.bounded(self.entries_of(&job.list.id, since)),
                )
                .instrument(tracing::debug_span!(parent: &span, "publish.read"))
                .await?;
            span.record("changes", job.entries.len());
            job.since = since;
            let read = t0.elapsed();
            let (id, version) = (job.list.id.clone(), job.list.version);
            done.push(id.clone());
            let outcome = self
                .holding(
                    &id,
                    token,
                    tokio::time::timeout(self.render_bound, render(job)),
                )
                .instrument(tracing::debug_span!(parent: &span, "publish.render"))
                .await;
            let failure = match outcome {
                Ok(Ok(artifacts)) if !artifacts.is_empty() => {
                    let rendered = t0.elapsed();
                    let delay = self
                        .bounded(self.store_artifacts(&id, version, token, &artifacts))
                        .instrument(tracing::debug_span!(parent: &span, "publish.store"))
                        .await?;
                    report.change_delays.extend(delay);
                    tracing::debug!(list = %id, version, ?read, ?rendered, stored = ?t0.elapsed(), "published (times since the claim)");
                    report.published.push((id, version));
                    continue;
                }
                Ok(Ok(_)) => "renderer produced nothing".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("rendering took longer than {:?}", self.render_bound),
            };
            self.bounded(self.release_publish(&id, token)).await?;
            report.failed.push((id, failure));
        }
        Ok(report)
    }

    /// Claims the most urgent due list for `CLAIM_SECONDS`: its settings, no entries yet.
    async fn claim_publish(
        &self,
        now: i64,
        token: uuid::Uuid,
        done: &[String],
    ) -> Result<Option<PublishJob>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE list_publish p SET claimed_by = $2,
                     claimed_until = now() + make_interval(secs => $3)
                 FROM lists l JOIN pools po ON po.name = l.pool
                 WHERE l.id = p.list_id AND p.list_id = (
                     SELECT c.list_id FROM list_publish c
                     JOIN lists cl ON cl.id = c.list_id
                     JOIN pools cp ON cp.name = cl.pool
                     WHERE cl.state IN ('Active', 'Full')
                       AND (c.claimed_until IS NULL OR c.claimed_until < now())
                       AND c.list_id <> ALL($4)
                       AND (c.published_version < cl.version OR c.exp IS NULL
                            OR c.exp <= $1 + cp.validity_seconds / 2)
                     ORDER BY c.published_version < cl.version DESC, c.exp NULLS FIRST, cl.id
                     LIMIT 1
                     FOR UPDATE OF c SKIP LOCKED)
                 RETURNING {LIST_COLUMNS}, po.ttl_seconds, po.validity_seconds"
            ))
            .await?;
        let Some(row) = client
            .query_opt(&stmt, &[&now, &token, &CLAIM_SECONDS, &done])
            .await?
        else {
            return Ok(None);
        };
        let list = list_from_row(&row)?;
        let (ttl, validity): (i64, i64) = (
            row.try_get("ttl_seconds")?,
            row.try_get("validity_seconds")?,
        );
        Ok(Some(PublishJob {
            list,
            ttl_seconds: ttl as u64,
            validity_seconds: validity as u64,
            entries: Vec::new(),
            since: None,
        }))
    }

    /// The non-zero entries of a list, or (`since`) those changed after that version.
    async fn entries_of(&self, list_id: &str, since: Option<i64>) -> Result<Vec<(u64, u8)>> {
        let client = self.client().await?;
        let rows = match since {
            Some(v) => {
                // Planned at every call (a custom plan, for the version bound), unlike the
                // store (schema 19): a generic plan of this one scans the whole table where
                // one list holds most revocations (0.46 ms a call against 0.18 ms planned
                // per call, one client; docs/performance.md).
                let changed = client
                    .prepare_cached(
                        "SELECT idx, status FROM revocations WHERE list_id = $1 AND version > $2 ORDER BY idx",
                    )
                    .await?;
                client.query(&changed, &[&list_id, &v]).await?
            }
            None => {
                let sparse = client
                    .prepare_cached(
                        "SELECT idx, status FROM revocations WHERE list_id = $1 ORDER BY idx",
                    )
                    .await?;
                client.query(&sparse, &[&list_id]).await?
            }
        };
        rows.iter()
            .map(|r| {
                let (idx, status): (i64, i16) = (r.try_get(0)?, r.try_get(1)?);
                Ok((idx as u64, status as u8))
            })
            .collect()
    }

    /// Runs `work` while keeping the claim on `id` alive: extended every
    /// [`CLAIM_HEARTBEAT`], so a publisher that dies holds its list up for
    /// `CLAIM_SECONDS` at most, however long a render may take.
    async fn holding<T>(&self, id: &str, token: uuid::Uuid, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = tokio::time::sleep(CLAIM_HEARTBEAT) => {
                    // A failure here only risks a second renderer, whose older result
                    // can never win.
                    let _ = self.bounded(self.extend_publish(id, token)).await;
                }
            }
        }
    }

    /// Stores a render of `version`: each artifact unless a newer version is already
    /// there; the publish state moves forward only; the claim is given back.
    async fn store_artifacts(
        &self,
        id: &str,
        version: i64,
        token: uuid::Uuid,
        artifacts: &[Artifact],
    ) -> Result<Option<f64>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(STORE_ARTIFACTS).await?;
        let kinds: Vec<&str> = artifacts.iter().map(|a| a.kind.as_str()).collect();
        let bodies: Vec<&[u8]> = artifacts.iter().map(|a| a.body.as_slice()).collect();
        let etags: Vec<&str> = artifacts.iter().map(|a| a.etag.as_str()).collect();
        let iats: Vec<i64> = artifacts.iter().map(|a| a.iat).collect();
        let exps: Vec<i64> = artifacts.iter().map(|a| a.exp).collect();
        let kids: Vec<&str> = artifacts.iter().map(|a| a.kid.as_str()).collect();
        let ttls: Vec<i64> = artifacts.iter().map(|a| a.ttl).collect();
        let exp = exps.iter().copied().min();
        let payload = format!("{id}:{version}");
        let row = client
            .query_one(
                &stmt,
                &[
                    &id,
                    &version,
                    &kinds,
                    &bodies,
                    &etags,
                    &iats,
                    &exps,
                    &kids,
                    &ttls,
                    &exp,
                    &token,
                    &CHANNEL_PUBLISHED,
                    &payload,
                ],
            )
            .await?;
        Ok(row.try_get("delay")?)
    }

    /// Extends a claim while its render goes on.
    async fn extend_publish(&self, id: &str, token: uuid::Uuid) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE list_publish SET claimed_until = now() + make_interval(secs => $3)
                 WHERE list_id = $1 AND claimed_by = $2",
                &[&id, &token, &CLAIM_SECONDS],
            )
            .await?;
        Ok(())
    }

    /// Gives a claim back after a failed render, with a short backoff.
    async fn release_publish(&self, id: &str, token: uuid::Uuid) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE list_publish SET claimed_by = NULL,
                     claimed_until = now() + make_interval(secs => $3)
                 WHERE list_id = $1 AND claimed_by = $2",
                &[&id, &token, &FAILED_BACKOFF_SECONDS],
            )
            .await?;
        Ok(())
    }

    /// Live lists whose stored artifacts are older than their version (a status change
    /// not published yet), and how many seconds the oldest has waited since its first
    /// unpublished change: the publishing backlog of the whole database.
    pub async fn publish_backlog(&self) -> Result<(i64, f64)> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT count(*),
                            coalesce(extract(epoch FROM clock_timestamp() - min(
                                (SELECT min(r.revoked_at) FROM revocations r
                                 WHERE r.list_id = c.list_id AND r.version > c.published_version))), 0)::float8
                     FROM list_publish c JOIN lists l ON l.id = c.list_id
                     WHERE l.state IN ('Active', 'Full') AND c.published_version < l.version",
                )
                .await?;
            let row = client.query_one(&stmt, &[]).await?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
        .await
    }

    /// Ids of every live list with a stored artifact: what GETs can be answered for
    /// (workers answer other ids with 404 without asking the database each time).
    pub async fn servable_list_ids(&self) -> Result<Vec<String>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT DISTINCT a.list_id FROM artifacts a JOIN lists l ON l.id = a.list_id
                     WHERE l.state IN ('Active', 'Full')",
                )
                .await?;
            client
                .query(&stmt, &[])
                .await?
                .iter()
                .map(|r| r.try_get(0).map_err(Into::into))
                .collect()
        })
        .await
    }

    /// Every pool with the URIs of its lists that can be served (live and rendered),
    /// oldest first: the Status List Aggregations (draft -20 section 9). Pools without
    /// such a list are there with none.
    pub async fn pool_lists(&self) -> Result<Vec<PoolLists>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT p.name, p.ttl_seconds, l.uri
                     FROM pools p
                     LEFT JOIN lists l ON l.pool = p.name AND l.state IN ('Active', 'Full')
                         AND EXISTS (SELECT 1 FROM artifacts a WHERE a.list_id = l.id)
                     ORDER BY p.name, l.created_at, l.id",
                )
                .await?;
            let mut out: Vec<PoolLists> = Vec::new();
            for row in client.query(&stmt, &[]).await? {
                let pool: String = row.try_get(0)?;
                let ttl: i64 = row.try_get(1)?;
                let uri: Option<String> = row.try_get(2)?;
                if out.last().is_none_or(|p| p.pool != pool) {
                    out.push(PoolLists {
                        pool,
                        ttl_seconds: ttl.max(0) as u64,
                        uris: Vec::new(),
                    });
                }
                if let (Some(uri), Some(last)) = (uri, out.last_mut()) {
                    last.uris.push(uri);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The stored artifact of a live list (`None` for unknown, retired or deleted lists,
    /// and for a list not rendered yet).
    pub async fn artifact(
        &self,
        list_id: &str,
        kind: ArtifactKind,
    ) -> Result<Option<StoredArtifact>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {LIST_COLUMNS}, a.version AS artifact_version, a.body, a.etag, a.iat, a.exp, a.kid, a.ttl
                     FROM artifacts a JOIN lists l ON l.id = a.list_id
                     WHERE a.list_id = $1 AND a.kind = $2 AND l.state IN ('Active', 'Full')"
                ))
                .await?;
            let Some(row) = client.query_opt(&stmt, &[&list_id, &kind.as_str()]).await? else {
                return Ok(None);
            };
            Ok(Some(StoredArtifact {
                list: list_from_row(&row)?,
                version: row.try_get("artifact_version")?,
                artifact: Artifact {
                    kind,
                    body: row.try_get("body")?,
                    etag: row.try_get("etag")?,
                    iat: row.try_get("iat")?,
                    exp: row.try_get("exp")?,
                    kid: row.try_get("kid")?,
                    ttl: row.try_get("ttl")?,
                },
            }))
        })
        .await
    }

    /// Records the public JWK (JSON) of a key about to sign artifacts.
    pub async fn register_signing_key(&self, kid: &str, jwk: &str) -> Result<()> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute("INSERT INTO signing_keys (kid, jwk) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING", &[&kid, &jwk])
                .await?;
            Ok(())
        })
        .await
    }

    /// `(kid, JWK JSON)` of every registered key a verifier may need at `now`: announced
    /// and not signing yet (for a week at most: a key removed before it ever signed goes
    /// away), or having signed something whose `exp` is still ahead.
    pub async fn signing_keys_in_use(&self, now: i64) -> Result<Vec<(String, String)>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT kid, jwk FROM signing_keys
                     WHERE (last_exp IS NULL AND first_used > now() - interval '7 days') OR last_exp > $1
                     ORDER BY kid",
                    &[&now],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
        .await
    }

    /// Seconds since each of `kids` was first announced (registered), for those that are.
    pub async fn signing_key_ages(&self, kids: &[String]) -> Result<Vec<(String, i64)>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT kid, extract(epoch FROM now() - first_used)::bigint FROM signing_keys WHERE kid = ANY($1)",
                    &[&kids],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
        .await
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn artifact(kind: ArtifactKind, body: &str) -> Artifact {
        Artifact {
            kind,
            body: body.as_bytes().to_vec(),
            etag: format!("\"{body}\""),
            iat: 1,
            exp: 2_000_000_000,
            ttl: 60,
            kid: "k".into(),
        }
    }

    /// A pool `p` and its Token list `AAAAAAAAAAAA` of `size` entries of `bits` bits at
    /// `version`, its publish row at `published`.
    async fn a_list(
        client: &tokio_postgres::Client,
        bits: i16,
        size: i64,
        version: i64,
        published: i64,
    ) {
        client
            .batch_execute(&format!(
                "INSERT INTO pools (name, format, bits, base_uri, entries_per_list, min_free_entries, lease_size,
                                    ttl_seconds, validity_seconds, max_status_lifetime_seconds, generation)
                 VALUES ('p', 'Token', {bits}, 'https://x.test', {size}, 10, 10, 60, 3600, 86400, 1);
                 INSERT INTO lists (id, pool, uri, format, bits, size, secret, version)
                 VALUES ('AAAAAAAAAAAA', 'p', 'https://x.test/t/AAAAAAAAAAAA', 'Token', {bits}, {size},
                         '\\x00000000000000000000000000000000', {version});
                 INSERT INTO list_publish (list_id, published_version) VALUES ('AAAAAAAAAAAA', {published});"
            ))
            .await
            .expect("a list");
    }

    /// A render that finishes late (its claim long gone, a newer version stored since)
    /// changes nothing.
    #[tokio::test]
    async fn an_older_render_never_replaces_a_newer_one() {
        let db = TestDb::new().await;
        let client = db.client().await;
        a_list(&client, 2, 100, 2, -1).await;
        let id = "AAAAAAAAAAAA";
        let (new, old) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        db.store
            .store_artifacts(id, 2, new, &[artifact(ArtifactKind::Jwt, "v2")])
            .await
            .expect("store v2");
        db.store
            .store_artifacts(id, 1, old, &[artifact(ArtifactKind::Jwt, "v1")])
            .await
            .expect("store v1, late");
        let stored = db
            .store
            .artifact(id, ArtifactKind::Jwt)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!((stored.version, stored.artifact.body), (2, b"v2".to_vec()));
        let published: i64 = client
            .query_one(
                "SELECT published_version FROM list_publish WHERE list_id = $1",
                &[&id],
            )
            .await
            .expect("row")
            .get(0);
        assert_eq!(published, 2);
    }

    /// Storing a version reads, of the list's revocations, only those it publishes first
    /// (for the delay it reports), however many the list has. With the published version
    /// as a join, and statistics from before the list's revocations (a list being revoked
    /// in now), the plan read every revocation of the list up to the version. The plan is
    /// the generic one (schema 19), planned before the bounds are known; what it read is
    /// the transaction's own counts of the table.
    #[tokio::test]
    async fn storing_a_version_reads_only_the_revocations_it_publishes_first() {
        let db = TestDb::new().await;
        let mut client = db.client().await;
        a_list(&client, 1, 10_000, 2001, 2000).await;
        client
            .batch_execute(
                "-- The statistics know another list's revocations; this list's came after
                 -- them (a list being revoked in now): 2,000 published, one not yet.
                 INSERT INTO revocations (list_id, idx, version)
                 SELECT 'BBBBBBBBBBBB', v, v FROM generate_series(1, 5000) AS v;
                 ANALYZE revocations;
                 INSERT INTO revocations (list_id, idx, version)
                 SELECT 'AAAAAAAAAAAA', v, v FROM generate_series(1, 2001) AS v;",
            )
            .await
            .expect("a list with revocations");
        let a = artifact(ArtifactKind::Jwt, "v2001");
        let tx = client.transaction().await.expect("begin");
        let delay: Option<f64> = tx
            .query_one(
                STORE_ARTIFACTS,
                &[
                    &"AAAAAAAAAAAA",
                    &2001_i64,
                    &vec!["jwt"],
                    &vec![a.body.as_slice()],
                    &vec![a.etag.as_str()],
                    &vec![a.iat],
                    &vec![a.exp],
                    &vec![a.kid.as_str()],
                    &vec![a.ttl],
                    &a.exp,
                    &uuid::Uuid::new_v4(),
                    &CHANNEL_PUBLISHED,
                    &"AAAAAAAAAAAA:2001",
                ],
            )
            .await
            .expect("store")
            .get(0);
        assert!(delay.is_some_and(|d| d >= 0.0), "{delay:?}");
        // Rows of the table this transaction read: by scanning it, through an index.
        let read = tx
            .query_one(
                "SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables
                 WHERE relname = 'revocations'",
                &[],
            )
            .await
            .expect("the transaction's counts");
        let (scanned, fetched): (i64, i64) = (read.get(0), read.get(1));
        tx.rollback().await.expect("rollback");
        assert_eq!((scanned, fetched), (0, 1), "revocations scanned, fetched");
    }

    /// A renderer holding version V reads only what changed after it, in index order,
    /// with each entry's current status.
    #[tokio::test]
    async fn the_changes_since_a_version_are_those_after_it() {
        let db = TestDb::new().await;
        let client = db.client().await;
        a_list(&client, 2, 100, 5, -1).await;
        client
            .batch_execute(
                "INSERT INTO revocations (list_id, idx, status, version)
                 VALUES ('AAAAAAAAAAAA', 9, 1, 1), ('AAAAAAAAAAAA', 3, 2, 3),
                        ('AAAAAAAAAAAA', 7, 1, 4), ('AAAAAAAAAAAA', 1, 1, 5);",
            )
            .await
            .expect("revocations");
        let changed = db
            .store
            .entries_of("AAAAAAAAAAAA", Some(3))
            .await
            .expect("changes");
        assert_eq!(changed, [(1, 1), (7, 1)]);
        let all = db
            .store
            .entries_of("AAAAAAAAAAAA", None)
            .await
            .expect("all");
        assert_eq!(all, [(1, 1), (3, 2), (7, 1), (9, 1)]);
    }
}
