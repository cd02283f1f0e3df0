//! The served cache: every list a worker answers GETs with, prepared once per version (body,
//! gzip encoding, strong ETags), revalidated against the database at least every 5 s and
//! dropped at once on a publish notification; the ids that name a servable list, and the
//! keys in the JWKS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use statuslist_format::unix_now;
use statuslist_store::{ArtifactKind, Store, StoreError, StoredArtifact};
use tokio::sync::{Mutex, RwLock};

/// A cached copy is checked against the database at least this often (retired and
/// deleted lists disappear within this delay; revocations are pushed, not polled).
const REVALIDATE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Served {
    pub stored: StoredArtifact,
    pub body: axum::body::Bytes,
    pub gzip: axum::body::Bytes,
    pub etag: String,
    pub gzip_etag: String,
}

impl Served {
    pub fn new(stored: StoredArtifact) -> Self {
        use std::io::Write;
        let body = axum::body::Bytes::from(stored.artifact.body.clone());
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len()),
            flate2::Compression::new(6),
        );
        // Writing into a Vec cannot fail.
        let gzip = encoder
            .write_all(&body)
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        let etag = stored.artifact.etag.clone();
        let gzip_etag = match etag.strip_suffix('"') {
            Some(open) => format!("{open}-gzip\""),
            None => format!("{etag}-gzip"),
        };
        Self {
            stored,
            body,
            gzip: gzip.into(),
            etag,
            gzip_etag,
        }
    }
}

struct Cached {
    artifact: Arc<Served>,
    checked: Instant,
}

/// How long the set of servable list ids is trusted without a full read (ids published
/// meanwhile are added by their notification).
const KNOWN_IDS_TTL: Duration = Duration::from_secs(5);

/// Ids of the lists that can be served, so that a GET of any other id is a 404 without a
/// query: unknown ids from the internet cost the database one read per
/// [`KNOWN_IDS_TTL`], not one each.
#[derive(Default)]
struct KnownIds {
    ids: HashSet<String>,
    read_at: Option<Instant>,
    /// Ids notified since the current full read started (it may not see them).
    recent: HashSet<String>,
}

type FillKey = (String, ArtifactKind);
/// `(kid, JWK JSON)` of the keys verifiers may need.
pub type KeysInUse = Arc<Vec<(String, String)>>;

/// The in-memory copies GETs are served from.
#[derive(Default)]
pub struct ArtifactCache {
    entries: RwLock<HashMap<FillKey, Cached>>,
    /// Highest version notified per list: a copy below it is never served.
    notified: RwLock<HashMap<String, i64>>,
    known: RwLock<KnownIds>,
    /// One full read of the known ids at a time.
    known_fill: Mutex<()>,
    /// One database read per list and kind at a time (single flight): concurrent misses
    /// of the same list wait for the first one's answer.
    fills: std::sync::Mutex<HashMap<FillKey, Arc<Mutex<()>>>>,
    /// The signing keys the database says verifiers may need, and when they were read:
    /// one read per [`KEYS_TTL`] however many JWKS requests (one reader at a time).
    keys_in_use: Mutex<Option<(Instant, KeysInUse)>>,
    /// Database reads made for GETs (artifact, id-set and key reads).
    queries: AtomicU64,
    /// The pools' Status List Aggregations.
    pub aggregations: crate::aggregation::Aggregations,
}

/// How long the database's keys in use are served without a new read. A key is announced
/// in the database the JWKS max-age before it first signs, so this delay costs nothing.
pub(crate) const KEYS_TTL: Duration = Duration::from_secs(5);

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache").finish_non_exhaustive()
    }
}

impl ArtifactCache {
    /// The current artifact of a live list, or `None` (unknown, retired, not rendered yet).
    /// With the database down, a cached copy is served until its `exp`, unless a newer
    /// version is known to exist.
    pub async fn get(
        &self,
        store: &Store,
        id: &str,
        kind: ArtifactKind,
    ) -> Result<Option<Arc<Served>>, StoreError> {
        let key = (id.to_owned(), kind);
        let floor = self
            .notified
            .read()
            .await
            .get(id)
            .copied()
            .unwrap_or(i64::MIN);
        let now = unix_now();
        let cached = self.cached(&key).await;
        let usable = |c: &Option<(Arc<Served>, Instant)>| match c {
            Some((artifact, checked))
                if artifact.stored.version >= floor
                    && artifact.stored.artifact.exp > now
                    && checked.elapsed() < REVALIDATE =>
            {
                Some(artifact.clone())
            }
            _ => None,
        };
        if let Some(artifact) = usable(&cached) {
            return Ok(Some(artifact));
        }
        if cached.is_none() && !self.may_serve(store, id).await {
            return Ok(None);
        }
        // Single flight: the first miss reads, the others wait and take its copy.
        let fill = self.fill_lock(&key);
        let _filling = fill.lock().await;
        let cached = self.cached(&key).await;
        if let Some(artifact) = usable(&cached) {
            return Ok(Some(artifact));
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        let read = store.artifact(id, kind).await;
        self.fill_done(&key, &fill);
        match read {
            Ok(Some(fresh)) => {
                // Unchanged since the last look: keep the prepared copy.
                let fresh = match &cached {
                    Some((c, _))
                        if c.stored.version == fresh.version && c.etag == fresh.artifact.etag =>
                    {
                        c.clone()
                    }
                    _ => Arc::new(Served::new(fresh)),
                };
                self.entries.write().await.insert(
                    key,
                    Cached {
                        artifact: fresh.clone(),
                        checked: Instant::now(),
                    },
                );
                Ok(Some(fresh))
            }
            Ok(None) => {
                self.entries.write().await.remove(&key);
                self.known.write().await.ids.remove(id);
                Ok(None)
            }
            Err(err) => match cached {
                Some((artifact, _))
                    if err.is_unavailable()
                        && artifact.stored.version >= floor
                        && artifact.stored.artifact.exp > now =>
                {
                    Ok(Some(artifact))
                }
                _ => Err(err),
            },
        }
    }

    /// How many cached artifacts could be served now without the database (not past
    /// their `exp`, no newer version known).
    pub async fn servable(&self) -> usize {
        let now = unix_now();
        let notified = self.notified.read().await;
        self.entries
            .read()
            .await
            .iter()
            .filter(|((id, _), c)| {
                c.artifact.stored.artifact.exp > now
                    && c.artifact.stored.version >= notified.get(id).copied().unwrap_or(i64::MIN)
            })
            .count()
    }

    /// The prepared copy of `key` and when it was last checked, if cached.
    async fn cached(&self, key: &FillKey) -> Option<(Arc<Served>, Instant)> {
        self.entries
            .read()
            .await
            .get(key)
            .map(|c| (c.artifact.clone(), c.checked))
    }

    /// Whether `id` may have an artifact: in the set of servable ids, read in full at
    /// most once per [`KNOWN_IDS_TTL`] (one reader at a time). With the database down
    /// the answer is yes (the read that follows decides).
    async fn may_serve(&self, store: &Store, id: &str) -> bool {
        let fresh = |k: &KnownIds| k.read_at.is_some_and(|t| t.elapsed() < KNOWN_IDS_TTL);
        {
            let known = self.known.read().await;
            if fresh(&known) {
                return known.ids.contains(id);
            }
        }
        let _filling = self.known_fill.lock().await;
        {
            let known = self.known.read().await;
            if fresh(&known) {
                return known.ids.contains(id);
            }
        }
        let started = Instant::now();
        self.known.write().await.recent.clear();
        self.queries.fetch_add(1, Ordering::Relaxed);
        match store.servable_list_ids().await {
            Ok(ids) => {
                let mut known = self.known.write().await;
                // Lists published while the read ran may be missing from it: keep them.
                let mut fresh: HashSet<String> = ids.into_iter().collect();
                fresh.extend(known.recent.drain());
                known.ids = fresh;
                known.read_at = Some(started);
                known.ids.contains(id)
            }
            Err(_) => true,
        }
    }

    fn fill_lock(&self, key: &FillKey) -> Arc<Mutex<()>> {
        self.fills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Forgets a key's fill lock once no other request waits on it.
    fn fill_done(&self, key: &FillKey, fill: &Arc<Mutex<()>>) {
        let mut fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        // Held here and in the map: nobody else has it.
        if Arc::strong_count(fill) <= 2 {
            fills.remove(key);
        }
    }

    /// `(kid, JWK JSON)` of every key in use per the database (see
    /// [`Store::signing_keys_in_use`]), from memory when read in the last [`KEYS_TTL`].
    /// `None` when the database cannot be read and nothing was read before.
    pub async fn keys_in_use(&self, store: &Store) -> Option<KeysInUse> {
        let mut held = self.keys_in_use.lock().await;
        if let Some((at, keys)) = held.as_ref()
            && at.elapsed() < KEYS_TTL
        {
            return Some(keys.clone());
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        match store.signing_keys_in_use(unix_now()).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *held = Some((Instant::now(), keys.clone()));
                Some(keys)
            }
            Err(err) => {
                tracing::warn!(error = %err, "JWKS: the database's keys could not be read");
                // The last read, if any, until the database answers again.
                held.as_ref().map(|(_, keys)| keys.clone())
            }
        }
    }

    /// Database reads made on behalf of GETs so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    pub(crate) async fn on_published(&self, id: &str, version: i64) {
        let mut notified = self.notified.write().await;
        let floor = notified.entry(id.to_owned()).or_insert(version);
        *floor = (*floor).max(version);
        drop(notified);
        {
            let mut known = self.known.write().await;
            known.ids.insert(id.to_owned());
            known.recent.insert(id.to_owned());
        }
        self.entries.write().await.retain(|(list, _), _| list != id);
    }

    pub(crate) async fn clear(&self) {
        self.entries.write().await.clear();
        // Notifications may have been missed: read the ids again on the next miss.
        self.known.write().await.read_at = None;
    }
}
