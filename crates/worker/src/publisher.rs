//! The publisher loop and notification dispatch.
//!
//! Every worker runs a publisher: it claims lists that changed or near `exp` (one
//! renderer per list, `SKIP LOCKED`), renders and signs them off the async threads, and
//! stores them; the store notifies `statuslist_published`, and every worker drops its
//! cached copy (`served`). Rendering itself is `render`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statuslist_format::unix_now;
use statuslist_format::{SigningKey, StatusArray};
use statuslist_store::notify::{CHANNEL_CHANGED, CHANNEL_CONFIG, CHANNEL_PUBLISHED, Event};
use statuslist_store::{Store, StoreError};
use tokio::sync::{Notify, broadcast};

use crate::metrics::Metrics;
use crate::render::{apply, render_array};
use crate::served::{ArtifactCache, KEYS_TTL};
use crate::signing::SigningKeys;

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
                        let span = tracing::Span::current();
                        // Compression and signing are CPU work: keep them off the async threads.
                        tokio::task::spawn_blocking(move || {
                            let _in = span.enter();
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
        // While the PKCS#11 signer fails, it has said so once (and says when it works
        // again); each list it could not sign is not a line of its own.
        let signer_down = self.keys.token().is_some_and(|t| t.failing());
        for (id, err) in &report.failed {
            if signer_down {
                tracing::debug!(list = %id, error = %err, "rendering waits for the signer");
            } else {
                tracing::error!(list = %id, error = %err, "rendering failed");
            }
        }
        self.metrics.published.inc_by(report.published.len() as u64);
        for delay in &report.change_delays {
            self.metrics.publish_delay.observe(delay.max(0.0));
        }
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
