//! Rendering and serving the published lists.
//!
//! Every worker runs a publisher: it claims lists that changed or near `exp` (one
//! renderer per list, `SKIP LOCKED`), renders and signs them off the async threads, and
//! stores them; the store notifies `statuslist_published`, and every worker drops its
//! cached copy. GETs are served from memory, never older than the last notified version.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use statuslist_format::bitstring::{self, CredentialMeta};
use statuslist_format::token::{self, CompressedList, TokenClaims};
use statuslist_format::{FormatError, SigningKey, StatusArray};
use statuslist_store::notify::{CHANNEL_CHANGED, CHANNEL_CONFIG, CHANNEL_PUBLISHED, Event};
use statuslist_store::{
    Artifact, ArtifactKind, ListFormat, PublishJob, Store, StoreError, StoredArtifact,
};
use tokio::sync::{Mutex, Notify, RwLock, broadcast};

use crate::metrics::Metrics;
use crate::signing::SigningKeys;

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Lists per publish transaction.
const BATCH: i64 = 8;
/// A publish pass runs at least this often, notifications or not.
const TICK: Duration = Duration::from_secs(1);
/// After a pass that published, the next starts no sooner than this: revocations
/// arriving meanwhile are covered by one render instead of one each, so a storm on one
/// list costs at most four renders a second (a 1,000,000-entry list at zlib 9 takes about
/// 23 ms: under a tenth of a core), while a revocation is still visible well within a
/// second (this, plus a render, plus the notification).
const COALESCE: Duration = Duration::from_millis(250);
/// A cached copy is checked against the database at least this often (retired and
/// deleted lists disappear within this delay; revocations are pushed, not polled).
const REVALIDATE: Duration = Duration::from_secs(5);

/// `"` + 32 hex digits of SHA-256(body) + `"`: strong, and changes with every byte.
fn etag(body: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// The origin part of a list URI (`https://host/base` of `https://host/base/t/ID`): the
/// issuer of the list.
fn issuer_of(uri: &str) -> &str {
    uri.rsplitn(3, '/').nth(2).unwrap_or(uri)
}

/// Renders and signs one list: JWT and CWT for a Token list, a `vc+jwt` for a Bitstring one.
pub fn render(
    job: &PublishJob,
    key: &SigningKey,
    level: u32,
    now: i64,
) -> Result<Vec<Artifact>, FormatError> {
    // A full job: every non-zero entry (see `apply` for the incremental path).
    let mut array = StatusArray::new(job.list.bits, job.list.size)?;
    for (idx, status) in &job.entries {
        array.set(*idx, *status)?;
    }
    render_array(job, &array, key, level, now)
}

/// The list's status array: `copy` (the renderer's own, at `job.since`) with the job's
/// changes applied, or built from every entry of a full job.
pub fn apply(job: &PublishJob, copy: Option<StatusArray>) -> Result<StatusArray, String> {
    let mut array = match (job.since, copy) {
        (Some(_), Some(copy)) => copy,
        (Some(v), None) => {
            return Err(format!(
                "changes since version {v} of list {} but no copy of it",
                job.list.id
            ));
        }
        (None, _) => StatusArray::new(job.list.bits, job.list.size).map_err(|e| e.to_string())?,
    };
    for (idx, status) in &job.entries {
        array.set(*idx, *status).map_err(|e| e.to_string())?;
    }
    Ok(array)
}

/// Renders and signs `array` as the list of `job`.
pub fn render_array(
    job: &PublishJob,
    array: &StatusArray,
    key: &SigningKey,
    level: u32,
    now: i64,
) -> Result<Vec<Artifact>, FormatError> {
    let exp = now + job.validity_seconds as i64;
    let ttl = job.ttl_seconds as i64;
    let artifact = |kind, body: Vec<u8>| Artifact {
        kind,
        etag: etag(&body),
        body,
        iat: now,
        exp,
        ttl,
        kid: key.kid().to_owned(),
    };
    match job.list.format {
        ListFormat::Token => {
            let compressed = CompressedList::new(array, level);
            let claims = TokenClaims {
                sub: job.list.uri.clone(),
                iss: Some(issuer_of(&job.list.uri).to_owned()),
                iat: now,
                exp: Some(exp),
                ttl: Some(job.ttl_seconds),
            };
            Ok(vec![
                artifact(
                    ArtifactKind::Jwt,
                    token::sign_jwt(&claims, &compressed, key)?.into_bytes(),
                ),
                artifact(
                    ArtifactKind::Cwt,
                    token::sign_cwt(&claims, &compressed, key)?,
                ),
            ])
        }
        ListFormat::Bitstring => {
            let meta = CredentialMeta {
                uri: job.list.uri.clone(),
                issuer: issuer_of(&job.list.uri).to_owned(),
                valid_from: now,
                valid_until: exp,
                ttl_seconds: Some(job.ttl_seconds),
            };
            Ok(vec![artifact(
                ArtifactKind::Vc,
                bitstring::sign_vc_jwt(&meta, array, level, key)?.into_bytes(),
            )])
        }
    }
}

/// A stored artifact ready to send, prepared once per version (not per request): the
/// body as shared bytes, its gzip encoding, and both strong ETags (a content coding is a
/// representation of its own).
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
}

/// How long the database's keys in use are served without a new read. A key is announced
/// in the database the JWKS max-age before it first signs, so this delay costs nothing.
const KEYS_TTL: Duration = Duration::from_secs(5);

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

    async fn on_published(&self, id: &str, version: i64) {
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

    async fn clear(&self) {
        self.entries.write().await.clear();
        // Notifications may have been missed: read the ids again on the next miss.
        self.known.write().await.read_at = None;
    }
}

pub struct Publisher {
    pub store: Store,
    pub keys: Arc<SigningKeys>,
    pub zlib_level: u32,
    pub metrics: Metrics,
    pub wake: Arc<Notify>,
    /// Key ids this process has recorded in the database (see `register`).
    /// Keys registered by this process, with the schema epoch they were registered in.
    pub registered: std::sync::Mutex<(u64, std::collections::HashSet<String>)>,
    /// This publisher's copy of each list it rendered, with the version it reflects: a
    /// re-render reads and applies only what changed since.
    pub copies: Arc<std::sync::Mutex<Copies>>,
}

/// Status arrays kept between renders, bounded in bytes (over the bound, the copies are
/// dropped and rebuilt from full reads as lists are rendered again).
#[derive(Debug, Default)]
pub struct Copies {
    lists: HashMap<String, (i64, StatusArray)>,
    bytes: usize,
}

/// Memory for [`Copies`] at most.
const COPIES_MAX_BYTES: usize = 256 << 20;

impl Copies {
    fn version(&self, id: &str) -> Option<i64> {
        self.lists.get(id).map(|(v, _)| *v)
    }

    fn take(&mut self, id: &str) -> Option<StatusArray> {
        let (_, array) = self.lists.remove(id)?;
        self.bytes -= array.as_bytes().len();
        Some(array)
    }

    fn put(&mut self, id: String, version: i64, array: StatusArray) {
        let size = array.as_bytes().len();
        if self.bytes + size > COPIES_MAX_BYTES {
            self.lists.clear();
            self.bytes = 0;
        }
        if size <= COPIES_MAX_BYTES {
            self.bytes += size;
            if let Some((_, old)) = self.lists.insert(id, (version, array)) {
                self.bytes -= old.as_bytes().len();
            }
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// One pass: renders what is due. Returns how many lists were stored.
    pub async fn pass(&self) -> Result<usize, StoreError> {
        let now = unix_now();
        let key = self.signer().await?;
        let level = self.zlib_level;
        let copies = self.copies.clone();
        let versions = self.copies.clone();
        let report = self
            .store
            .publish_due(
                BATCH,
                now,
                move |id| {
                    versions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .version(id)
                },
                |job| {
                    let (key, copies) = (key.clone(), copies.clone());
                    async move {
                        // Compression and signing are CPU work: keep them off the async threads.
                        tokio::task::spawn_blocking(move || {
                            let copy = copies
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .take(&job.list.id);
                            let array = apply(&job, copy)?;
                            let artifacts = render_array(&job, &array, &key, level, now)
                                .map_err(|e| e.to_string())?;
                            copies.lock().unwrap_or_else(|p| p.into_inner()).put(
                                job.list.id.clone(),
                                job.list.version,
                                array,
                            );
                            Ok::<_, String>(artifacts)
                        })
                        .await
                        .map_err(|e| e.to_string())?
                    }
                },
            )
            .await?;
        for (id, err) in &report.failed {
            tracing::error!(list = %id, error = %err, "rendering failed");
        }
        self.metrics.published.inc_by(report.published.len() as u64);
        Ok(report.published.len())
    }

    /// The key to sign with. Every key of the directory is announced first (its public
    /// JWK recorded, so every worker's JWKS carries it from then on); the newest signs
    /// once it has been announced for the JWKS `max-age` (plus [`KEYS_TTL`]), so that no verifier holding an
    /// older JWKS meets a token signed with a key it does not know. Until then the newest
    /// key that has been announced that long signs, or (none that old) the one announced
    /// longest ago: a fresh installation signs with its only key at once.
    async fn signer(&self) -> Result<Arc<SigningKey>, StoreError> {
        let keys = self.keys.all();
        for key in keys.iter() {
            self.register(key).await?;
        }
        let kids: Vec<String> = keys.iter().map(|k| k.kid().to_owned()).collect();
        let ages: HashMap<String, i64> = self
            .store
            .signing_key_ages(&kids)
            .await?
            .into_iter()
            .collect();
        // Announced for the max-age, plus the time other workers may serve a JWKS read
        // from the database before the announcement.
        let wait = (self.keys.jwks_max_age + KEYS_TTL).as_secs() as i64;
        let announced = |k: &SigningKey| ages.get(k.kid()).is_some_and(|age| *age >= wait);
        // Else the key announced longest ago (the likeliest in a verifier's JWKS), and on
        // a fresh installation the newest.
        let signer = keys
            .iter()
            .find(|k| announced(k))
            .or_else(|| {
                keys.iter()
                    .filter(|k| ages.contains_key(k.kid()))
                    .max_by_key(|k| ages[k.kid()])
            })
            .cloned()
            .unwrap_or_else(|| self.keys.current());
        if signer.kid() != keys[0].kid() {
            tracing::debug!(
                signing = signer.kid(),
                announced = keys[0].kid(),
                "new key announced; not signing with it yet"
            );
        }
        Ok(signer)
    }

    /// Records a key's public JWK (once per process): from then on every worker
    /// publishes it, until the last token it signed has expired.
    async fn register(&self, key: &SigningKey) -> Result<(), StoreError> {
        let known = {
            let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            // The schema was created again (the database replaced or restored): what this
            // process registered went with the old tables.
            let epoch = self.store.schema_epoch();
            if registered.0 != epoch {
                *registered = (epoch, Default::default());
            }
            registered.1.contains(key.kid())
        };
        if !known {
            let jwk = serde_json::to_string(&key.public_jwk())
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            self.store.register_signing_key(key.kid(), &jwk).await?;
            self.registered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .insert(key.kid().to_owned());
        }
        Ok(())
    }

    /// Publishes until the process stops: on every change notification (coalesced, see
    /// [`COALESCE`]), and every second.
    pub async fn run(self) {
        loop {
            let started = Instant::now();
            let notified = self.wake.notified();
            match self.pass().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        self.metrics
                            .publish_lag
                            .set(started.elapsed().as_secs_f64());
                        tokio::time::sleep_until((started + COALESCE).into()).await;
                    }
                }
                Err(err) if err.is_unavailable() => {
                    tracing::debug!(error = %err, "publish pass: database unavailable")
                }
                Err(err) => tracing::warn!(error = %err, "publish pass failed"),
            }
            let _ = tokio::time::timeout(TICK, notified).await;
        }
    }
}

/// Routes notifications: a change wakes the publisher, a publish invalidates the cached
/// list, a configuration change the cached issuers, a reconnect (notifications may have
/// been missed) both.
pub async fn dispatch(
    mut events: broadcast::Receiver<Event>,
    cache: Arc<ArtifactCache>,
    issuers: Arc<crate::issuers::IssuerCache>,
    wake: Arc<Notify>,
) {
    loop {
        match events.recv().await {
            Ok(Event::Notification { channel, payload }) => match channel.as_str() {
                CHANNEL_CHANGED => wake.notify_one(),
                CHANNEL_PUBLISHED => {
                    if let Some((id, version)) = payload.split_once(':')
                        && let Ok(version) = version.parse()
                    {
                        cache.on_published(id, version).await;
                    }
                }
                CHANNEL_CONFIG => {
                    issuers.clear().await;
                    wake.notify_one();
                }
                _ => {}
            },
            Ok(Event::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                cache.clear().await;
                issuers.clear().await;
                wake.notify_one();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Channels a worker listens on.
pub const CHANNELS: [&str; 3] = [CHANNEL_CHANGED, CHANNEL_PUBLISHED, CHANNEL_CONFIG];

#[cfg(test)]
mod tests {
    use super::*;
    use statuslist_format::Bits;
    use statuslist_store::{ListInfo, ListState};

    /// The largest list the CRD allows, 2^24 entries of 8 bits (16 MiB raw), renders
    /// correctly (its time is printed; the render bound is 15 s).
    #[test]
    fn the_largest_list_renders_and_decodes() {
        let size = 1u64 << 24;
        let entries: Vec<(u64, u8)> = (0..100_000u64)
            .map(|i| ((i * 2_654_435_761) % size, (i % 255 + 1) as u8))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let job = PublishJob {
            list: ListInfo {
                id: "AAAAAAAAAAAA".into(),
                pool: Some("p".into()),
                uri: "https://status.example.test/t/AAAAAAAAAAAA".into(),
                format: ListFormat::Token,
                bits: Bits::Eight,
                size,
                state: ListState::Active,
                version: 1,
            },
            ttl_seconds: 300,
            validity_seconds: 86_400,
            entries: entries.clone(),
            since: None,
        };
        let key = SigningKey::generate().expect("key");
        let started = Instant::now();
        let artifacts = render(&job, &key, token::DEFAULT_ZLIB_LEVEL, unix_now()).expect("render");
        let took = started.elapsed();
        let jwt = artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::Jwt)
            .expect("jwt");
        let text = std::str::from_utf8(&jwt.body).expect("text");
        let verified = token::verify_jwt(text, key.verifying_key()).expect("verify");
        for (idx, status) in entries.iter().step_by(997) {
            assert_eq!(verified.list.get(*idx).expect("idx"), *status);
        }
        assert_eq!(
            verified.list.get(size - 1).expect("last"),
            entries.iter().find(|e| e.0 == size - 1).map_or(0, |e| e.1)
        );
        println!(
            "2^24 x 8-bit list, {} set: rendered (JWT + CWT, zlib {}) in {took:?}, JWT {} bytes",
            entries.len(),
            token::DEFAULT_ZLIB_LEVEL,
            jwt.body.len()
        );
    }
}
