//! Registered issuers, cached: `/issue` and `/revoke` look their client up on every
//! request. Entries (misses too, kept apart and bounded, so unknown `iss` values cost no
//! query and cannot flush the registered ones) live a few seconds, and are dropped at once
//! on `statuslist_config` (a StatusList changed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statuslist_store::pools::Issuer;
use statuslist_store::{Store, StoreError};
use tokio::sync::RwLock;

/// How long an entry is trusted without a notification.
const TTL: Duration = Duration::from_secs(5);
/// Bound on registered issuers cached (registrations are made by platform teams, so this
/// is far above any real count; past it the registered cache restarts).
const MAX_REGISTERED: usize = 100_000;
/// Bound on unknown `iss` values remembered (each at most [`crate::request::MAX_ISS_LEN`]
/// bytes): past it only the unknown ones are forgotten, never the registered issuers.
const MAX_UNKNOWN: usize = 10_000;

#[derive(Default)]
struct Entries {
    registered: HashMap<String, (Arc<Issuer>, Instant)>,
    /// `iss` values that named no issuer, and when they were looked up.
    unknown: HashMap<String, Instant>,
}

/// Registered issuers, and a bounded memory of unknown ones: a flood of random `iss`
/// values costs one query each at most once per [`TTL`] and cannot evict a registered
/// issuer.
#[derive(Default)]
pub struct IssuerCache {
    entries: RwLock<Entries>,
}

impl std::fmt::Debug for IssuerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerCache").finish_non_exhaustive()
    }
}

impl IssuerCache {
    pub async fn get(
        &self,
        store: &Store,
        client_id: &str,
    ) -> Result<Option<Arc<Issuer>>, StoreError> {
        {
            let entries = self.entries.read().await;
            if let Some((issuer, at)) = entries.registered.get(client_id)
                && at.elapsed() < TTL
            {
                return Ok(Some(issuer.clone()));
            }
            if entries
                .unknown
                .get(client_id)
                .is_some_and(|at| at.elapsed() < TTL)
            {
                return Ok(None);
            }
        }
        let issuer = store.issuer(client_id).await?.map(Arc::new);
        let mut entries = self.entries.write().await;
        match &issuer {
            Some(found) => {
                if entries.registered.len() >= MAX_REGISTERED {
                    entries.registered.clear();
                }
                entries.unknown.remove(client_id);
                entries
                    .registered
                    .insert(client_id.to_owned(), (found.clone(), Instant::now()));
            }
            None => {
                if entries.unknown.len() >= MAX_UNKNOWN {
                    // Expired ones first; if all are recent (a flood), all of them.
                    entries.unknown.retain(|_, at| at.elapsed() < TTL);
                    if entries.unknown.len() >= MAX_UNKNOWN {
                        entries.unknown.clear();
                    }
                }
                entries.registered.remove(client_id);
                entries.unknown.insert(client_id.to_owned(), Instant::now());
            }
        }
        Ok(issuer)
    }

    /// Whether `client_id` is cached as a registered issuer (fresh or due for a re-read:
    /// not evicted).
    pub async fn holds(&self, client_id: &str) -> bool {
        self.entries.read().await.registered.contains_key(client_id)
    }

    /// How many unknown `iss` values are remembered.
    pub async fn unknown_count(&self) -> usize {
        self.entries.read().await.unknown.len()
    }

    pub async fn clear(&self) {
        let mut entries = self.entries.write().await;
        entries.registered.clear();
        entries.unknown.clear();
    }
}
