//! The worker's leases: one per pool it issues for, claimed on demand, renewed in the
//! background, released on shutdown; capacity is asked for before it runs dry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use statuslist_store::notify::CHANNEL_CAPACITY;
use statuslist_store::pools::Pool;
use statuslist_store::{IssueOutcome, IssueRequest, Lease, Store, StoreError};
use tokio::sync::Mutex;
use tracing::Instrument as _;

/// One pool's slot: the lease held for it, behind its own lock (held across a claim, so
/// that concurrent requests of this worker claim one lease, and a pool whose claim is
/// slow, or finds no capacity, delays no other pool).
type Slot = Arc<Mutex<Option<Arc<Lease>>>>;

pub struct Leases {
    store: Store,
    worker: String,
    ttl: Duration,
    held: std::sync::Mutex<HashMap<String, Slot>>,
    /// Leases for which capacity was already asked.
    asked: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// Pools found without free capacity: logged when one runs dry and when it has
    /// capacity again, not once per refused request.
    dry: std::sync::Mutex<std::collections::HashSet<String>>,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// Claims and replays that fail this many times in a row give up with 503.
const ATTEMPTS: usize = 4;

/// Why an issuance got no entry: the pool has no lease to give (503, retry later), or the
/// store failed (see `ApiError::from_store`).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no lease can be claimed in the pool")]
    NoCapacity,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Leases {
    pub fn new(
        store: Store,
        worker: String,
        ttl: Duration,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            store,
            worker,
            ttl,
            held: Default::default(),
            asked: Default::default(),
            dry: Default::default(),
            metrics,
        }
    }

    /// Issues from the pool's lease, claiming one when needed. A repeated request is
    /// answered even when the pool has no capacity left.
    pub async fn issue(&self, pool: &Pool, req: &IssueRequest) -> Result<IssueOutcome, IssueError> {
        for _ in 0..ATTEMPTS {
            let Some(lease) = self.lease(pool).await? else {
                if let Some(found) = self.store.find_issued(req).await? {
                    return Ok(found);
                }
                if self.dry_set().insert(pool.name.clone()) {
                    tracing::warn!(pool = %pool.name, "no lease can be claimed (the pool has no free capacity): /issue answers 503 until the operator provisions a list");
                }
                return Err(IssueError::NoCapacity);
            };
            match self.store.issue(&lease, req).await {
                Ok(out) => {
                    if self.dry_set().remove(&pool.name) {
                        tracing::info!(pool = %pool.name, "the pool has free capacity again");
                    }
                    // Ask for capacity while a quarter of the lease is left, not when dry.
                    let low = lease.remaining() * 4 <= lease.end - lease.start;
                    if low
                        && self
                            .asked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(lease.id)
                    {
                        self.ask_for_capacity(&pool.name).await;
                    }
                    return Ok(out);
                }
                Err(StoreError::LeaseLost) => self.drop_lease(&pool.name, &lease, false).await,
                Err(StoreError::LeaseExhausted) => self.drop_lease(&pool.name, &lease, true).await,
                Err(err) => return Err(err.into()),
            }
        }
        tracing::warn!(pool = %pool.name, attempts = ATTEMPTS, "503: every lease tried was lost or used up meanwhile");
        Err(IssueError::NoCapacity)
    }

    fn dry_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.dry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, pool: &str) -> Slot {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pool.to_owned())
            .or_default()
            .clone()
    }

    /// Every pool's lease slot.
    fn slots(&self) -> Vec<(String, Slot)> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect()
    }

    async fn lease(&self, pool: &Pool) -> Result<Option<Arc<Lease>>, StoreError> {
        let slot = self.slot(&pool.name);
        let mut held = slot.lock().await;
        if let Some(lease) = held.as_ref() {
            return Ok(Some(lease.clone()));
        }
        if !pool.issuing {
            return Ok(None);
        }
        let claimed = self
            .store
            .claim_lease(&pool.name, &self.worker, self.ttl)
            .instrument(tracing::debug_span!("lease.claim", pool = %pool.name))
            .await;
        let outcome = match &claimed {
            Ok(Some(_)) => "claimed",
            Ok(None) => "none_free",
            Err(_) => "failed",
        };
        self.metrics
            .lease_claims
            .get_or_create(&crate::metrics::OutcomeLabel { outcome })
            .inc();
        match claimed {
            Ok(Some(lease)) => {
                let lease = Arc::new(lease);
                *held = Some(lease.clone());
                self.metrics.leases_held.inc();
                Ok(Some(lease))
            }
            Ok(None) => {
                drop(held);
                self.ask_for_capacity(&pool.name).await;
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    async fn drop_lease(&self, pool: &str, lease: &Arc<Lease>, release: bool) {
        let slot = self.slot(pool);
        let mut held = slot.lock().await;
        let mine = held.as_ref().is_some_and(|l| Arc::ptr_eq(l, lease));
        if mine {
            *held = None;
            self.metrics.leases_held.dec();
        }
        drop(held);
        // Only the request that took the spent lease out of its slot gives it back, and
        // without waiting for it: the release locks the lease row, so it waits for the
        // issuances still writing to it, while this request needs only the next lease.
        // (Every request that met the spent lease used to release it, each waiting:
        // 672 releases of 47 leases in one 8-second run of scripts/bench.)
        if release && mine {
            let (store, lease) = (self.store.clone(), lease.clone());
            tokio::spawn(async move {
                if let Err(err) = store.release_lease(&lease).await {
                    tracing::warn!(error = %err, lease = lease.id, "releasing a spent lease failed; it will expire");
                }
            });
        }
    }

    async fn ask_for_capacity(&self, pool: &str) {
        if let Err(err) = self.store.notify(CHANNEL_CAPACITY, pool).await {
            tracing::warn!(error = %err, pool, "capacity request failed");
        }
    }

    /// Renews every held lease; a lost one is forgotten.
    pub async fn renew_all(&self) {
        let mut leases: Vec<(String, Arc<Lease>)> = Vec::new();
        for (pool, slot) in self.slots() {
            if let Some(lease) = slot.lock().await.clone() {
                leases.push((pool, lease));
            }
        }
        for (pool, lease) in leases {
            match self.store.renew_lease(&lease, self.ttl).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost) => {
                    tracing::warn!(lease = lease.id, pool, "lease lost");
                    self.drop_lease(&pool, &lease, false).await;
                }
                Err(err) => tracing::warn!(error = %err, lease = lease.id, "lease renewal failed"),
            }
        }
    }

    /// Renews every `ttl / 3` until the process stops.
    pub async fn renew_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.renew_all().await;
        }
    }

    /// Gives every lease's unused remainder back (graceful shutdown).
    pub async fn release_all(&self) {
        let mut leases: Vec<Arc<Lease>> = Vec::new();
        for (_, slot) in self.slots() {
            leases.extend(slot.lock().await.take());
        }
        self.metrics.leases_held.set(0);
        for lease in leases {
            if let Err(err) = self.store.release_lease(&lease).await {
                tracing::warn!(error = %err, lease = lease.id, "release failed; the lease will expire");
            }
        }
    }
}
