//! The reconcile core: everything a StatusList means for PostgreSQL, with no Kubernetes
//! in it. The controller calls it with resources from the apiserver; `statuslist dev`
//! and `statuslist operator --manifests` with resources read from files.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use statuslist_crd::conditions::{
    CAPACITY_LOW, DATABASE_READY, FAILOVER_RESTORED, INVALID_SPEC, ISSUER_CONFLICT, READY,
    REPLICATION_SYNCHRONOUS,
};
use statuslist_crd::{
    BITSTRING_MIN_ENTRIES, DeletionPolicy, Format, ListStatus, MAX_BASE_URI, MAX_CLIENT_ID,
    MAX_ENTRIES_PER_LIST, MAX_ISSUERS, MAX_JWKS_URI, MAX_LEASE_SIZE, MAX_STATUS_LIFETIME_SECONDS,
    MAX_VALIDITY_SECONDS, MIN_ENTRIES_PER_LIST, MIN_LEASE_SIZE, MIN_VALIDITY_SECONDS,
    StatusListSpec, StatusListStatus, Totals,
};
use statuslist_format::Bits;
use statuslist_store::failover::{FailoverReport, Replication};
use statuslist_store::notify::Event;
use statuslist_store::pools::IssuerConflict;
use statuslist_store::{
    Capacity, IssuerSpec, ListInfo, ListState, PoolSettings, PoolSpec, Store, StoreError,
};
use tokio::sync::broadcast;

/// The pool name of a resource: unique across namespaces.
pub fn pool_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Checks a spec as the CRD's schema and CEL rules do (for resources that bypassed the
/// apiserver, or came from files) and turns it into the store's pool. Every problem is
/// listed, for the `InvalidSpec` condition.
pub fn pool_spec(
    pool: String,
    generation: i64,
    spec: &StatusListSpec,
) -> Result<PoolSpec, Vec<String>> {
    let mut problems = Vec::new();
    let bits = Bits::try_from(spec.bits).map_err(|_| "bits must be 1, 2, 4 or 8".to_owned());
    if let Err(p) = &bits {
        problems.push(p.clone());
    }
    if spec.suspension && spec.bits < 2 {
        problems.push("suspension needs bits of 2 or more (status 2 is SUSPENDED)".into());
    }
    let entries = spec.entries_per_list();
    if spec.format == Format::Bitstring && entries < BITSTRING_MIN_ENTRIES {
        problems.push(format!(
            "entriesPerList must be at least {BITSTRING_MIN_ENTRIES} for a Bitstring list"
        ));
    }
    if !(MIN_ENTRIES_PER_LIST..=MAX_ENTRIES_PER_LIST).contains(&entries) {
        problems.push(format!(
            "entriesPerList must be between {MIN_ENTRIES_PER_LIST} and {MAX_ENTRIES_PER_LIST}"
        ));
    }
    if !(MIN_LEASE_SIZE..=MAX_LEASE_SIZE).contains(&spec.lease_size) || spec.lease_size > entries {
        problems.push(format!(
            "leaseSize must be between {MIN_LEASE_SIZE} and {MAX_LEASE_SIZE}, and must not exceed entriesPerList"
        ));
    }
    if spec.min_free_entries() >= entries {
        problems.push("minFreeEntries must be less than entriesPerList".into());
    }
    let base = spec.base_uri.as_str();
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    if base.len() > MAX_BASE_URI
        || !rest.is_some_and(|r| {
            !r.is_empty()
                && !r.starts_with('/')
                && !r.contains(['?', '#'])
                && !r.contains(char::is_whitespace)
        })
    {
        problems.push(format!(
            "baseUri must be an absolute http(s) URI without query or fragment, at most {MAX_BASE_URI} characters"
        ));
    }
    if !(MIN_VALIDITY_SECONDS..=MAX_VALIDITY_SECONDS).contains(&spec.validity_seconds) {
        problems.push(format!(
            "validitySeconds must be between {MIN_VALIDITY_SECONDS} and {MAX_VALIDITY_SECONDS}"
        ));
    }
    if spec.ttl_seconds == 0 || spec.ttl_seconds > spec.validity_seconds {
        problems.push("ttlSeconds must be at least 1 and must not exceed validitySeconds".into());
    }
    if !(1..=MAX_STATUS_LIFETIME_SECONDS).contains(&spec.max_status_lifetime_seconds) {
        problems.push(format!(
            "maxStatusLifetimeSeconds must be between 1 and {MAX_STATUS_LIFETIME_SECONDS}"
        ));
    }
    if spec.issuers.len() > MAX_ISSUERS {
        problems.push(format!("at most {MAX_ISSUERS} issuers"));
    }
    let mut seen = std::collections::HashSet::new();
    for issuer in &spec.issuers {
        if issuer.client_id.is_empty() || issuer.client_id.len() > MAX_CLIENT_ID {
            problems.push(format!("clientId must be 1 to {MAX_CLIENT_ID} characters"));
        }
        if !seen.insert(issuer.client_id.as_str()) {
            problems.push(format!("clientId {} appears twice", issuer.client_id));
        }
        let uri = issuer.jwks_uri.as_str();
        let rest = uri
            .strip_prefix("https://")
            .or_else(|| uri.strip_prefix("http://"));
        let host_ok = rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty() && !r.contains(char::is_whitespace)
        });
        if uri.len() > MAX_JWKS_URI || !host_ok {
            problems.push(format!(
                "jwksUri of {} must be an absolute http(s) URI of at most {MAX_JWKS_URI} characters",
                issuer.client_id
            ));
        }
    }
    let Ok(bits) = bits else { return Err(problems) };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PoolSpec {
        name: pool,
        generation,
        uid: None,
        settings: PoolSettings {
            format: spec.format,
            bits,
            base_uri: base.trim_end_matches('/').to_owned(),
            entries_per_list: entries,
            min_free_entries: spec.min_free_entries(),
            lease_size: spec.lease_size,
            ttl_seconds: spec.ttl_seconds,
            validity_seconds: spec.validity_seconds,
            max_status_lifetime_seconds: spec.max_status_lifetime_seconds,
            suspension: spec.suspension,
        },
        issuers: spec
            .issuers
            .iter()
            .map(|i| IssuerSpec {
                client_id: i.client_id.clone(),
                jwks_uri: i.jwks_uri.clone(),
            })
            .collect(),
    })
}

/// What one reconcile of a pool did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolReport {
    pub conflicts: Vec<IssuerConflict>,
    pub provisioned: Vec<ListInfo>,
    pub full: Vec<String>,
    pub retired: Vec<String>,
    pub reclaimed: u64,
    pub capacity: Capacity,
    pub min_free_entries: u64,
    /// Lists this pass sealed because they were issuing before a failover.
    pub sealed: Vec<String>,
    /// The pool's latest failover, if one ever sealed its lists.
    pub failover: Option<FailoverReport>,
    /// What the database shows of its replication (`None`: it could not be read).
    pub replication: Option<Replication>,
}

/// How long after a failover the workers that held leases have to write their
/// acknowledgements back before the ones that did not are reported.
pub const RESTORE_GRACE_SECONDS: i64 = 60;

impl PoolReport {
    pub fn capacity_low(&self) -> bool {
        self.capacity.free < self.min_free_entries
    }

    /// Whether [`provision`] would add a list: capacity is low and the pool holds every
    /// issuer of its spec (a pool in IssuerConflict provisions nothing).
    pub fn needs_list(&self) -> bool {
        let active = self
            .capacity
            .lists
            .iter()
            .any(|l| l.state == ListState::Active);
        (self.capacity_low() || !active) && self.conflicts.is_empty()
    }
}

/// Time a pass spends at most removing the entries of dead lists (a retired list of
/// 1,000,000 entries takes a few passes).
const PURGE_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// Brings the database in line with the pool except for provisioning: pool and issuers
/// written, expired leases reclaimed, spent lists marked Full, expired lists retired (and
/// the entries of dead lists removed, a bounded share per pass), and the capacity
/// measured. Every step is idempotent and locked, so two reconcilers running at once
/// leave what one would.
#[tracing::instrument(level = "debug", name = "pool.prepare", skip_all, fields(pool = %pool.name))]
pub async fn prepare(store: &Store, pool: &PoolSpec, now: i64) -> Result<PoolReport, StoreError> {
    let outcome = store.apply_pool(pool).await?;
    // After a failover, before anything counts capacity: the lists issuing before it
    // issue no more (every pool's, by whichever process gets there first).
    let sealed: Vec<String> = store
        .seal_past_incarnations()
        .await?
        .into_iter()
        .filter(|(p, _)| p.as_deref() == Some(pool.name.as_str()))
        .map(|(_, l)| l)
        .collect();
    let reclaimed = store.reclaim_expired_leases().await?;
    let full = store.mark_full(&pool.name).await?;
    let retired = store.retire_expired(&pool.name, now).await?;
    store.drop_dead_partitions(PURGE_BUDGET).await?;
    let capacity = store.capacity(&pool.name).await?;
    let failover = store.failover_report(&pool.name).await?;
    let replication = match store.replication().await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!(error = %e, "replication facts not read");
            None
        }
    };
    Ok(PoolReport {
        sealed,
        failover,
        replication,
        conflicts: outcome.conflicts,
        provisioned: Vec::new(),
        full,
        retired,
        reclaimed,
        capacity,
        min_free_entries: pool.settings.min_free_entries,
    })
}

/// Provisions a list when the report says one is needed, and measures capacity again.
#[tracing::instrument(level = "debug", name = "pool.provision", skip_all, fields(pool = %pool.name))]
pub async fn provision(
    store: &Store,
    pool: &PoolSpec,
    report: &mut PoolReport,
) -> Result<(), StoreError> {
    if !report.needs_list() {
        return Ok(());
    }
    report
        .provisioned
        .extend(store.ensure_capacity(&pool.name).await?);
    report.capacity = store.capacity(&pool.name).await?;
    Ok(())
}

/// [`prepare`] then [`provision`]: one whole pass over a pool.
pub async fn reconcile_pool(
    store: &Store,
    pool: &PoolSpec,
    now: i64,
) -> Result<PoolReport, StoreError> {
    let mut report = prepare(store, pool, now).await?;
    provision(store, pool, &mut report).await?;
    Ok(report)
}

/// Workers' capacity requests (`statuslist_capacity`) as the listener delivered them: the
/// event received and every one queued behind it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Asks {
    /// The pools asked for.
    pub pools: std::collections::BTreeSet<String>,
    /// The listener (re)connected: asks may have been missed meanwhile.
    pub reconnected: bool,
    /// The receiver lagged: some asks were lost unread.
    pub lagged: bool,
    /// The listener is gone: no ask will come again.
    pub closed: bool,
}

impl Asks {
    /// `first` (a receive's result) and whatever is queued behind it.
    pub fn gather(
        first: Result<Event, broadcast::error::RecvError>,
        rx: &mut broadcast::Receiver<Event>,
    ) -> Self {
        let mut asks = Asks::default();
        match first {
            Ok(event) => asks.add(event),
            Err(broadcast::error::RecvError::Lagged(_)) => asks.lagged = true,
            Err(broadcast::error::RecvError::Closed) => asks.closed = true,
        }
        loop {
            match rx.try_recv() {
                Ok(event) => asks.add(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => asks.lagged = true,
                Err(_) => return asks,
            }
        }
    }

    fn add(&mut self, event: Event) {
        match event {
            Event::Notification { payload, .. } => {
                self.pools.insert(payload);
            }
            Event::Connected => self.reconnected = true,
        }
    }
}

/// Whether workers' capacity requests for `pools` call for a pass now: one of them needs
/// a list ([`Store::needs_capacity`]), or that cannot be read (the pass finds out). A
/// request comes with every lease three quarters spent (at a thousand issuances a second
/// and leases of a thousand, one a second per worker), nearly all while the pool has
/// plenty: a pass over every pool for each, a dozen statements per pool parsed and planned
/// anew, was about 28 pool reconciles a second under `/issue` load in scripts/bench (four
/// pools; docs/performance.md).
pub async fn asks_need_a_pass<'a>(store: &Store, pools: impl IntoIterator<Item = &'a str>) -> bool {
    for pool in pools {
        match store.needs_capacity(pool).await {
            Ok(false) => {}
            Ok(true) => return true,
            Err(e) => {
                tracing::debug!(pool, error = %e, "capacity request not checked; a pass instead");
                return true;
            }
        }
    }
    false
}

/// What a sweep did to one pool deleted with `Retain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    pub pool: String,
    pub retired: Vec<String>,
    /// Nothing live was left: the pool (and its issuers) are gone.
    pub removed: bool,
}

/// Pools deleted with `Retain` have no resource left to reconcile them: their lists are
/// retired here as their entries expire (workers keep re-signing them meanwhile), and
/// the pool itself disappears with its last live list.
pub async fn sweep_retained(store: &Store, now: i64) -> Result<Vec<Drained>, StoreError> {
    // Also where the entries of deleted pools' lists go, whatever pools are left.
    store.drop_dead_partitions(PURGE_BUDGET).await?;
    let mut out = Vec::new();
    for pool in store.retained_pools().await? {
        let retired = store.retire_expired(&pool, now).await?;
        let removed = store.remove_drained_pool(&pool).await?;
        if !retired.is_empty() || removed {
            out.push(Drained {
                pool,
                retired,
                removed,
            });
        }
    }
    Ok(out)
}

/// Logs what [`sweep_retained`] did.
pub fn log_drained(drained: &[Drained]) {
    for d in drained {
        for list in &d.retired {
            tracing::info!(pool = %d.pool, list = %list, "retained pool: expired list retired");
        }
        if d.removed {
            tracing::info!(pool = %d.pool, "retained pool: nothing live left; removed");
        }
    }
}

/// Carries out the deletion policy of a deleted resource (fenced by its UID, when known).
/// With `Delete`, the lists' entries go at once, up to [`PURGE_BUDGET`] (what is left, on
/// the next sweep).
pub async fn cleanup(
    store: &Store,
    pool: &str,
    uid: Option<&str>,
    policy: DeletionPolicy,
) -> Result<(), StoreError> {
    let policy = match policy {
        DeletionPolicy::Retain => statuslist_store::DeletionPolicy::Retain,
        DeletionPolicy::Delete => statuslist_store::DeletionPolicy::Delete,
    };
    store.delete_pool(pool, uid, policy).await?;
    if policy == statuslist_store::DeletionPolicy::Delete {
        store.drop_dead_partitions(PURGE_BUDGET).await?;
    }
    Ok(())
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
pub fn carry_transitions(mut new: Vec<Condition>, old: &[Condition]) -> Vec<Condition> {
    for c in &mut new {
        if let Some(prev) = old.iter().find(|o| o.type_ == c.type_)
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    new
}

/// Physical lists named in a StatusList's status: the newest ones (the totals count them
/// all), so that the object stays small however many lists a pool holds.
pub const STATUS_LISTS: usize = 10;

/// The status of a pool that reconciled.
pub fn status(
    report: &PoolReport,
    generation: Option<i64>,
    old: Option<&StatusListStatus>,
) -> StatusListStatus {
    let all = &report.capacity.lists;
    let lists: Vec<ListStatus> = all[all.len().saturating_sub(STATUS_LISTS)..]
        .iter()
        .map(|l| ListStatus {
            id: l.id.clone(),
            uri: l.uri.clone(),
            state: l.state.as_str().into(),
            size: l.size,
            allocated: l.allocated,
            revoked: l.revoked,
            free: l.free,
        })
        .collect();
    let c = &report.capacity;
    let totals = Totals {
        lists: all.len() as u64,
        active: all.iter().filter(|l| l.state == ListState::Active).count() as u64,
        full: all.iter().filter(|l| l.state == ListState::Full).count() as u64,
        size: c.size,
        allocated: c.allocated,
        revoked: c.revoked,
        free: c.free,
    };
    let conflict_msg = report
        .conflicts
        .iter()
        .map(|x| {
            format!(
                "clientId {} is held by StatusList {}",
                x.client_id, x.held_by
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let low = report.capacity_low();
    let conflicts = !report.conflicts.is_empty();
    let conditions = vec![
        condition(
            READY,
            !conflicts && !low,
            if conflicts {
                "IssuerConflict"
            } else if low {
                "CapacityLow"
            } else {
                "Reconciled"
            },
            if conflicts {
                conflict_msg.clone()
            } else if low {
                format!(
                    "{} free entries, below minFreeEntries {}: provisioning",
                    c.free, report.min_free_entries
                )
            } else {
                format!("{} lists, {} entries free", lists.len(), c.free)
            },
            generation,
        ),
        condition(
            INVALID_SPEC,
            false,
            "Valid",
            "the spec is valid".into(),
            generation,
        ),
        condition(
            ISSUER_CONFLICT,
            conflicts,
            if conflicts {
                "ClientIdHeldElsewhere"
            } else {
                "NoConflict"
            },
            if conflicts {
                conflict_msg
            } else {
                "every clientId is this pool's".into()
            },
            generation,
        ),
        condition(
            CAPACITY_LOW,
            low,
            if low {
                "BelowMinFreeEntries"
            } else {
                "Sufficient"
            },
            format!(
                "{} free of minFreeEntries {}",
                c.free, report.min_free_entries
            ),
            generation,
        ),
        condition(
            DATABASE_READY,
            true,
            "Connected",
            "the database answered this reconcile".into(),
            generation,
        ),
    ];
    let mut conditions = conditions;
    if let Some(r) = &report.replication {
        conditions.push(condition(
            REPLICATION_SYNCHRONOUS,
            r.synchronous,
            if r.synchronous {
                "Synchronous"
            } else if r.standbys > 0 {
                "Asynchronous"
            } else {
                "NoStandby"
            },
            r.describe(),
            generation,
        ));
    } else if let Some(kept) = old.and_then(|o| {
        o.conditions
            .iter()
            .find(|c| c.type_ == REPLICATION_SYNCHRONOUS)
    }) {
        conditions.push(kept.clone());
    }
    if let Some(f) = &report.failover {
        let (ok, reason, message) = failover_condition(f, Timestamp::now().as_second());
        conditions.push(condition(
            FAILOVER_RESTORED,
            ok,
            reason,
            message,
            generation,
        ));
    }
    let old_conditions = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    StatusListStatus {
        observed_generation: generation,
        conditions: carry_transitions(conditions, old_conditions),
        lists,
        totals,
        reconciled_at: heartbeat(old, Timestamp::now()),
    }
}

/// The `FailoverRestored` condition of a pool's latest failover at `now` (unix seconds):
/// whether it holds, its reason and message.
pub fn failover_condition(f: &FailoverReport, now: i64) -> (bool, &'static str, String) {
    let sealed_at = f.sealed.iter().map(|s| s.sealed_at).min().unwrap_or(now);
    let when = Timestamp::from_second(sealed_at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let lists: Vec<&str> = f.sealed.iter().map(|s| s.list.as_str()).collect();
    let unused: i64 = f.sealed.iter().map(|s| s.unused).sum();
    let mut message = format!(
        "failover at {when}: list(s) {} sealed ({unused} positions left unused); {} issuance(s) and {} revocation(s) written back",
        lists.join(", "),
        f.issuances_restored,
        f.revocations_restored
    );
    let silent = f.silent();
    let waiting = restoring(f, now);
    for (worker, lists) in &silent {
        message.push_str(&format!(
            "; worker {worker} held leases of {} and {}",
            lists.join(", "),
            if waiting {
                "has not written back yet"
            } else {
                "did not write back: issuances and revocations it acknowledged shortly before the failover may be missing there"
            }
        ));
    }
    if f.unrestorable > 0 {
        message.push_str(&format!(
            "; {} acknowledgement(s) could not be written back (list(s) {})",
            f.unrestorable,
            f.unrestorable_lists.join(", ")
        ));
    }
    if f.unrestorable > 0 || (!silent.is_empty() && !waiting) {
        (false, "Unrestorable", message)
    } else if !silent.is_empty() {
        (false, "Restoring", message)
    } else {
        (true, "Restored", message)
    }
}

/// The lists of a failover whose acknowledgements may be missing at `now`: those a
/// worker held leases of and did not write back within the grace time, and those an
/// acknowledgement could not be written back to.
pub fn unrestored_lists(f: &FailoverReport, now: i64) -> Vec<&str> {
    let mut lists: std::collections::BTreeSet<&str> =
        f.unrestorable_lists.iter().map(String::as_str).collect();
    if !restoring(f, now) {
        lists.extend(f.silent().into_iter().flat_map(|(_, l)| l));
    }
    lists.into_iter().collect()
}

/// Whether the workers still have time to write back ([`RESTORE_GRACE_SECONDS`] from
/// the failover's first seal).
fn restoring(f: &FailoverReport, now: i64) -> bool {
    let sealed_at = f.sealed.iter().map(|s| s.sealed_at).min().unwrap_or(now);
    now - sealed_at < RESTORE_GRACE_SECONDS
}

/// How often `reconciledAt` is refreshed while nothing else changes: often enough that an
/// age over twice this means no operator runs, rarely enough that the status is not
/// written (and the resource's watchers woken) on every periodic pass.
pub const HEARTBEAT_SECONDS: i64 = 60;

/// `reconciledAt` for a status written at `now`: the old value while it is younger than
/// [`HEARTBEAT_SECONDS`] (so an unchanged status stays equal and is not written), else now.
pub fn heartbeat(old: Option<&StatusListStatus>, now: Timestamp) -> Option<String> {
    let recent = old
        .and_then(|o| o.reconciled_at.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|t| {
            let age = now.as_second() - t.as_second();
            (0..HEARTBEAT_SECONDS).contains(&age)
        });
    if recent {
        old.and_then(|o| o.reconciled_at.clone())
    } else {
        Timestamp::from_second(now.as_second())
            .ok()
            .map(|t| t.to_string())
    }
}

/// The status of a pool whose reconcile failed in the database: the old status (its
/// lists and counts as last seen) with `Ready` and `DatabaseReady` False for `reason`.
pub fn database_status(
    reason: &str,
    message: &str,
    generation: Option<i64>,
    old: Option<&StatusListStatus>,
) -> StatusListStatus {
    let mut status = old.cloned().unwrap_or_default();
    let mut conditions: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != READY && c.type_ != DATABASE_READY)
        .cloned()
        .collect();
    conditions.push(condition(READY, false, reason, message.into(), generation));
    conditions.push(condition(
        DATABASE_READY,
        false,
        reason,
        message.into(),
        generation,
    ));
    status.conditions = carry_transitions(conditions, &status.conditions);
    status.reconciled_at = heartbeat(old, Timestamp::now());
    status
}

/// The status of a resource whose spec cannot be used.
pub fn invalid_status(
    problem: &str,
    generation: Option<i64>,
    old: Option<&StatusListStatus>,
) -> StatusListStatus {
    let message = problem.to_owned();
    let conditions = vec![
        condition(READY, false, "InvalidSpec", message.clone(), generation),
        condition(INVALID_SPEC, true, "InvalidSpec", message, generation),
    ];
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = carry_transitions(conditions, &status.conditions);
    status.reconciled_at = heartbeat(old, Timestamp::now());
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use statuslist_store::ListCapacity;

    fn ask(pool: &str) -> Event {
        Event::Notification {
            channel: "statuslist_capacity".into(),
            payload: pool.into(),
        }
    }

    /// The event received and everything queued behind it, once each; a reconnection, a
    /// lag and a closed listener are told apart.
    #[tokio::test]
    async fn asks_are_gathered_with_what_is_queued_behind_them() {
        let (tx, mut rx) = broadcast::channel(2);
        for event in [ask("ns/a"), ask("ns/b"), ask("ns/a")] {
            tx.send(event).expect("sent");
        }
        // Three sent into room for two: the first is lost, and said so; the rest are read.
        let first = rx.recv().await;
        let asks = Asks::gather(first, &mut rx);
        assert_eq!(
            asks,
            Asks {
                pools: ["ns/a".to_owned(), "ns/b".to_owned()].into(),
                lagged: true,
                ..Asks::default()
            }
        );
        tx.send(ask("ns/b")).expect("sent");
        let first = rx.recv().await;
        let asks = Asks::gather(first, &mut rx);
        assert_eq!(
            asks,
            Asks {
                pools: ["ns/b".to_owned()].into(),
                ..Asks::default()
            }
        );
        tx.send(Event::Connected).expect("sent");
        tx.send(ask("ns/c")).expect("sent");
        let first = rx.recv().await;
        let asks = Asks::gather(first, &mut rx);
        assert!(asks.reconnected && asks.pools.contains("ns/c"), "{asks:?}");
        drop(tx);
        let first = rx.recv().await;
        assert!(Asks::gather(first, &mut rx).closed);
    }

    /// `reconciledAt` stays as it was while younger than the heartbeat (an unchanged
    /// status is not written again), and moves to now once older: its age in `kubectl
    /// get sl` tells whether an operator runs.
    #[test]
    fn the_heartbeat_moves_once_a_minute() {
        let at = |s: i64| Timestamp::from_second(s).expect("time");
        let old = |t: &str| StatusListStatus {
            reconciled_at: Some(t.into()),
            ..StatusListStatus::default()
        };
        let then = at(1_800_000_000).to_string();
        assert_eq!(
            heartbeat(Some(&old(&then)), at(1_800_000_059)),
            Some(then.clone())
        );
        assert_eq!(
            heartbeat(Some(&old(&then)), at(1_800_000_060)),
            Some(at(1_800_000_060).to_string())
        );
        assert_eq!(heartbeat(None, at(1_800_000_000)), Some(then.clone()));
        // A clock that went back, or a value that does not parse, is replaced.
        assert_eq!(
            heartbeat(Some(&old(&then)), at(1_799_999_000)),
            Some(at(1_799_999_000).to_string())
        );
        assert_eq!(
            heartbeat(Some(&old("yesterday")), at(1_800_000_000)),
            Some(then)
        );
    }

    /// A pool of thousands of lists: the status names the newest few and counts the rest,
    /// and stays far below etcd's object limit.
    #[test]
    fn the_status_of_a_pool_of_many_lists_is_bounded() {
        let lists: Vec<ListCapacity> = (0..5_000u64)
            .map(|i| ListCapacity {
                id: format!("{i:012X}"),
                uri: format!("https://status.example.test/t/{i:012X}"),
                state: if i < 4_990 {
                    ListState::Full
                } else {
                    ListState::Active
                },
                size: 1 << 20,
                allocated: 1 << 20,
                revoked: 1_000,
                free: 0,
            })
            .collect();
        let report = PoolReport {
            capacity: Capacity {
                lists,
                ..Capacity::default()
            },
            ..PoolReport::default()
        };
        let status = status(&report, Some(1), None);
        assert_eq!(status.lists.len(), STATUS_LISTS);
        assert_eq!(status.lists[0].id, format!("{:012X}", 5_000 - STATUS_LISTS));
        assert_eq!(status.lists[STATUS_LISTS - 1].id, format!("{:012X}", 4_999));
        assert_eq!(
            (
                status.totals.lists,
                status.totals.active,
                status.totals.full
            ),
            (5_000, 10, 4_990)
        );
        let bytes = serde_json::to_vec(&status).expect("json").len();
        assert!(bytes < 10 << 10, "{bytes} bytes");
        println!("status of a pool of 5,000 lists: {bytes} bytes of JSON");
    }
}
