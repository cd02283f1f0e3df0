//! Registered issuers, cached: `/issue` and `/revoke` look their client up on every
//! request. Entries (misses included, so unknown `iss` values cost no query) live a few
//! seconds, and are dropped at once on `statuslist_config` (a StatusList changed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use statuslist_store::pools::Issuer;
use statuslist_store::{Store, StoreError};
use tokio::sync::RwLock;

/// How long an entry is trusted without a notification.
const TTL: Duration = Duration::from_secs(5);
/// Bound on entries (unknown `iss` values are cached too): past it the cache restarts.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct IssuerCache {
    entries: RwLock<HashMap<String, (Option<Issuer>, Instant)>>,
}

impl std::fmt::Debug for IssuerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerCache").finish_non_exhaustive()
    }
}

impl IssuerCache {
    pub async fn get(&self, store: &Store, client_id: &str) -> Result<Option<Issuer>, StoreError> {
        if let Some((issuer, at)) = self.entries.read().await.get(client_id)
            && at.elapsed() < TTL
        {
            return Ok(issuer.clone());
        }
        let issuer = store.issuer(client_id).await?;
        let mut entries = self.entries.write().await;
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(client_id.to_owned(), (issuer.clone(), Instant::now()));
        Ok(issuer)
    }

    pub async fn clear(&self) {
        self.entries.write().await.clear();
    }
}
