//! Status List Aggregation (draft -20 section 9): one JSON document per pool,
//! `{"status_lists": [uri, ...]}`, listing the pool's lists that can be served (live and
//! rendered), oldest first. Every Token list names its pool's document in
//! `status_list.aggregation_uri`, so a verifier or wallet holding one credential can
//! prefetch every list of that credential type (offline verification, caching).
//!
//! Per pool, not per issuer: a pool is one credential type, and its lists are shared by
//! its issuers, so a document per issuer would list the same lists and tell who issues
//! how much. The document says no more than the lists themselves (every list is public
//! at its URI) except their number, which grows with issuance volume (draft section
//! 12.4); a pool's path segment is a digest of its name, so namespaces and resource names
//! stay out of URLs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statuslist_store::{Store, StoreError};
use tokio::sync::Mutex;

/// The path segment of a pool's document: 12 upper-case hex digits of SHA-256 of the pool
/// name (`namespace/name`), stable across restarts, databases and workers.
pub fn id(pool: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("statuslist aggregation\0{pool}").as_bytes(),
    );
    d.as_ref()[..6].iter().map(|b| format!("{b:02X}")).collect()
}

/// The document's URI for a pool whose lists live under `base` (`https://host/base`).
pub fn uri(base: &str, pool: &str) -> String {
    format!("{base}/a/{}", id(pool))
}

/// One pool's document, prepared once per read.
#[derive(Debug, PartialEq, Eq)]
pub struct Aggregation {
    pub body: axum::body::Bytes,
    /// Strong: SHA-256 of the body.
    pub etag: String,
    /// The pool's `ttlSeconds`.
    pub max_age: u64,
}

/// How long the documents are served without a new read: a list published meanwhile
/// joins its pool's document within this delay.
pub const AGGREGATION_TTL: Duration = Duration::from_secs(5);

type Index = Arc<HashMap<String, Arc<Aggregation>>>;

/// Every pool's document, read in one query at most once per [`AGGREGATION_TTL`] (one
/// reader at a time); with the database down, the last read is served (and read again
/// one period later).
#[derive(Default)]
pub struct Aggregations {
    held: Mutex<Option<(Instant, Index)>>,
}

impl std::fmt::Debug for Aggregations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregations").finish_non_exhaustive()
    }
}

impl Aggregations {
    /// The document with path segment `wanted`; `None` for no such pool.
    pub async fn get(
        &self,
        store: &Store,
        wanted: &str,
    ) -> Result<Option<Arc<Aggregation>>, StoreError> {
        let mut held = self.held.lock().await;
        if let Some((at, index)) = held.as_ref()
            && at.elapsed() < AGGREGATION_TTL
        {
            return Ok(index.get(wanted).cloned());
        }
        match store.pool_lists().await {
            Ok(pools) => {
                let index: Index = Arc::new(
                    pools
                        .into_iter()
                        .map(|p| {
                            let body = serde_json::json!({ "status_lists": p.uris }).to_string();
                            let doc = Aggregation {
                                etag: crate::render::etag(body.as_bytes()),
                                body: body.into(),
                                max_age: p.ttl_seconds,
                            };
                            (id(&p.pool), Arc::new(doc))
                        })
                        .collect(),
                );
                let found = index.get(wanted).cloned();
                *held = Some((Instant::now(), index));
                Ok(found)
            }
            // The database down: the last read, trusted for another period (not one
            // failed read per request).
            Err(err) => match held.take() {
                Some((_, index)) if err.is_unavailable() => {
                    let found = index.get(wanted).cloned();
                    *held = Some((Instant::now(), index));
                    Ok(found)
                }
                last => {
                    *held = last;
                    Err(err)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_opaque_and_distinct() {
        let a = id("wallet/driving-licence");
        assert_eq!(a, id("wallet/driving-licence"));
        assert_eq!(a.len(), 12);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert!(!a.contains("wallet"));
        assert_ne!(a, id("wallet/veteran-card"));
        assert_eq!(
            uri("https://status.example", "wallet/driving-licence"),
            format!("https://status.example/a/{a}")
        );
    }
}
