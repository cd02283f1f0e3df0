//! Publish state: which lists need rendering, their sparse entries, the signed artifacts.

use std::future::Future;

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

/// An artifact as stored, with the list version it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub list: ListInfo,
    pub version: i64,
    pub artifact: Artifact,
}

/// A list to render: its settings and every entry with a non-zero status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishJob {
    pub list: ListInfo,
    pub ttl_seconds: u64,
    pub validity_seconds: u64,
    /// `(idx, status)` with `status != 0`, in index order.
    pub entries: Vec<(u64, u8)>,
}

/// What one [`Store::publish_due`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// `(list id, version)` stored.
    pub published: Vec<(String, i64)>,
    /// `(list id, error)` the renderer refused; retried on the next pass.
    pub failed: Vec<(String, String)>,
}

impl Store {
    /// Claims up to `limit` lists whose published version is behind, or whose artifacts
    /// have less than half of the pool's `validitySeconds` left at `now` (unix seconds), so
    /// they are re-signed well before `exp`, renders each with `render` and
    /// stores the result, all in one transaction. The claim uses `SKIP LOCKED` on the
    /// list's publish row, so two renderers never hold the same list at once, and
    /// revocations (which touch the list row) never wait for a renderer.
    pub async fn publish_due<F, Fut, E>(
        &self,
        limit: i64,
        now: i64,
        mut render: F,
    ) -> Result<PublishReport>
    where
        F: FnMut(PublishJob) -> Fut,
        Fut: Future<Output = Result<Vec<Artifact>, E>>,
        E: std::fmt::Display,
    {
        // Bounded like every other operation: keep `limit` small enough for the renders.
        self.bounded(self.publish_pass(limit, now, &mut render))
            .await
    }

    async fn publish_pass<F, Fut, E>(
        &self,
        limit: i64,
        now: i64,
        render: &mut F,
    ) -> Result<PublishReport>
    where
        F: FnMut(PublishJob) -> Fut,
        Fut: Future<Output = Result<Vec<Artifact>, E>>,
        E: std::fmt::Display,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let claim = tx
            .query(
                &format!(
                    "SELECT {LIST_COLUMNS}, po.ttl_seconds, po.validity_seconds
                     FROM list_publish p
                     JOIN lists l ON l.id = p.list_id
                     JOIN pools po ON po.name = l.pool
                     WHERE l.state IN ('Active', 'Full')
                       AND (p.published_version < l.version OR p.exp IS NULL
                            OR p.exp <= $1 + po.validity_seconds / 2)
                     ORDER BY p.published_version < l.version DESC, p.exp NULLS FIRST, l.id
                     LIMIT $2
                     FOR UPDATE OF p SKIP LOCKED"
                ),
                &[&now, &limit],
            )
            .await?;
        let sparse = tx
            .prepare(
                "SELECT idx, status FROM entries WHERE list_id = $1 AND status <> 0 ORDER BY idx",
            )
            .await?;
        let mut report = PublishReport::default();
        for row in &claim {
            let list = list_from_row(row)?;
            let (ttl, validity): (i64, i64) = (
                row.try_get("ttl_seconds")?,
                row.try_get("validity_seconds")?,
            );
            // Read after the version: the content is at least as new as the version stored.
            let entries = tx
                .query(&sparse, &[&list.id])
                .await?
                .iter()
                .map(|r| {
                    let (idx, status): (i64, i16) = (r.try_get(0)?, r.try_get(1)?);
                    Ok((idx as u64, status as u8))
                })
                .collect::<Result<Vec<_>>>()?;
            let (id, version) = (list.id.clone(), list.version);
            let job = PublishJob {
                list,
                ttl_seconds: ttl as u64,
                validity_seconds: validity as u64,
                entries,
            };
            let artifacts = match render(job).await {
                Ok(a) if !a.is_empty() => a,
                Ok(_) => {
                    report.failed.push((id, "renderer produced nothing".into()));
                    continue;
                }
                Err(e) => {
                    report.failed.push((id, e.to_string()));
                    continue;
                }
            };
            for a in &artifacts {
                tx.execute(
                    "INSERT INTO artifacts (list_id, kind, version, body, etag, iat, exp, kid, ttl)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (list_id, kind) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body,
                         etag = EXCLUDED.etag, iat = EXCLUDED.iat, exp = EXCLUDED.exp, kid = EXCLUDED.kid,
                         ttl = EXCLUDED.ttl",
                    &[&id, &a.kind.as_str(), &version, &a.body, &a.etag, &a.iat, &a.exp, &a.kid, &a.ttl],
                )
                .await?;
            }
            let exp = artifacts.iter().map(|a| a.exp).min();
            tx.execute(
                "UPDATE list_publish SET published_version = $2, exp = $3 WHERE list_id = $1",
                &[&id, &version, &exp],
            )
            .await?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL_PUBLISHED, &format!("{id}:{version}")],
            )
            .await?;
            report.published.push((id, version));
        }
        tx.commit().await?;
        Ok(report)
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

    /// `(kid, JWK JSON)` of every registered key that signed an artifact still within its
    /// `exp` at `now`.
    pub async fn signing_keys_in_use(&self, now: i64) -> Result<Vec<(String, String)>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT k.kid, k.jwk FROM signing_keys k
                     WHERE EXISTS (SELECT 1 FROM artifacts a WHERE a.kid = k.kid AND a.exp > $1)
                     ORDER BY k.kid",
                    &[&now],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
        .await
    }
}
