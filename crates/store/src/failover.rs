//! Never twice through a failover (docs/failover.md).
//!
//! - **Incarnations.** Every connection, when opened, reads the database's incarnation
//!   (system identifier and WAL timeline) and refuses a server in recovery. A list is
//!   claimable only in the incarnation it was provisioned in, and a lease issues only in the
//!   incarnation it was claimed in (both checked inside the statements): after
//!   a promotion or a restore, no position that may have been handed out before is handed
//!   out again, whatever was replicated. The lists left Active by an earlier incarnation are
//!   sealed and replaced ([`Store::seal_past_incarnations`]).
//! - **The journal.** A worker remembers what it acknowledged (issuances and revocations)
//!   until it knows a standby has it (the standbys' flush position, where the database
//!   shows it) or, where it cannot know, for a retention time; when its connections find a
//!   new incarnation it writes back, idempotently and with their original `jti` and time,
//!   those the new primary lacks ([`Store::restore_journal`]), and records what it did.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{Result, Store};

/// Run on every new connection: whether the server is a standby, and otherwise its
/// incarnation (the same text as `statuslist_incarnation()`, which may not exist yet).
pub(crate) const INCARNATION_QUERY: &str = "
    SELECT pg_is_in_recovery(),
        CASE WHEN pg_is_in_recovery() THEN NULL
        ELSE (SELECT system_identifier FROM pg_control_system())::text || '/'
            || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text
        END";

/// The incarnations this process's connections have met, and what its journal did.
#[derive(Debug, Default)]
pub(crate) struct Incarnations {
    current: std::sync::Mutex<Option<String>>,
    /// Counts the changes from one known incarnation to another.
    changes: watch::Sender<u64>,
    /// The latest replication facts read, and the sum of every restore's figures.
    replication: std::sync::Mutex<Option<Replication>>,
    restored: std::sync::Mutex<Restored>,
}

impl Incarnations {
    /// Records the incarnation a new connection found.
    pub(crate) fn observe(&self, incarnation: &str) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_deref() {
            Some(known) if known == incarnation => {}
            Some(known) => {
                tracing::warn!(
                    from = known,
                    to = incarnation,
                    "the database is another incarnation than before (a failover, or a restore): \
                     the lists issuing before it are sealed, and acknowledgements are written back"
                );
                *current = Some(incarnation.to_owned());
                self.changes.send_modify(|n| *n += 1);
            }
            None => *current = Some(incarnation.to_owned()),
        }
    }

    pub(crate) fn current(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a process knows of failovers, for its metrics.
#[derive(Debug, Clone, Default)]
pub struct FailoverStats {
    /// Changes of incarnation this process's connections met.
    pub failovers: u64,
    /// Acknowledgements in the journal now.
    pub journal_records: usize,
    /// The replication facts read last (every second, by a worker).
    pub replication: Option<Replication>,
    /// Every restore's figures added up.
    pub restored: Restored,
}

/// How a worker's journal is kept.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The worker's name: the lease holder name, recorded with what it restores.
    pub worker: String,
    /// How long an acknowledgement is kept when no standby's position is known.
    pub retention: Duration,
    /// Records kept at most (about 100 bytes each); the oldest go first.
    pub max_records: usize,
}

impl JournalConfig {
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            retention: Duration::from_secs(60),
            max_records: 1_000_000,
        }
    }
}

#[derive(Debug, Clone)]
enum Ack {
    Issued {
        client: Arc<str>,
        jti: Uuid,
        position: i64,
        expiry: i64,
    },
    /// A status change: 1 revoked, 2 suspended, 0 reinstated; when, in unix microseconds
    /// (whole seconds for a revocation, as its answer gives it).
    Status { at_us: i64, status: i16 },
}

#[derive(Debug, Clone)]
struct Record {
    seq: u64,
    at: Instant,
    /// The list id's 12 hex digits as a number.
    list: u64,
    idx: i64,
    ack: Ack,
}

#[derive(Debug, Default)]
struct Inner {
    records: VecDeque<Record>,
    next_seq: u64,
    clients: HashSet<Arc<str>>,
    /// `(lsn, seq)`: every record below `seq` was committed before the primary's WAL
    /// reached `lsn`.
    marks: VecDeque<(u64, u64)>,
    /// Records dropped by the size bound before any standby was known to have them.
    overflowed: u64,
}

/// What a worker acknowledged and a standby may not have yet.
#[derive(Debug)]
pub(crate) struct Journal {
    config: JournalConfig,
    inner: std::sync::Mutex<Inner>,
}

fn list_number(id: &str) -> Option<u64> {
    (id.len() == 12)
        .then(|| u64::from_str_radix(id, 16).ok())
        .flatten()
}

fn list_id(n: u64) -> String {
    format!("{n:012X}")
}

/// `X/Y` (a `pg_lsn` as text) as a number.
fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

impl Journal {
    pub(crate) fn new(config: JournalConfig) -> Self {
        Self {
            config,
            inner: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, list: &str, idx: i64, ack: Ack) {
        let Some(list) = list_number(list) else {
            return;
        };
        let now = Instant::now();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let ack = match ack {
            Ack::Issued {
                client,
                jti,
                position,
                expiry,
            } => {
                let client = match inner.clients.get(&client) {
                    Some(c) => c.clone(),
                    None => {
                        inner.clients.insert(client.clone());
                        client
                    }
                };
                Ack::Issued {
                    client,
                    jti,
                    position,
                    expiry,
                }
            }
            status => status,
        };
        inner.records.push_back(Record {
            seq,
            at: now,
            list,
            idx,
            ack,
        });
        while inner.records.len() > self.config.max_records {
            inner.records.pop_front();
            inner.overflowed += 1;
        }
        self.expire(&mut inner, now);
    }

    pub(crate) fn issued(
        &self,
        list: &str,
        idx: i64,
        position: i64,
        client: &str,
        jti: Uuid,
        expiry: i64,
    ) {
        self.push(
            list,
            idx,
            Ack::Issued {
                client: Arc::from(client),
                jti,
                position,
                expiry,
            },
        );
    }

    pub(crate) fn revoked(&self, list: &str, idx: i64, at: i64) {
        self.push(
            list,
            idx,
            Ack::Status {
                at_us: at.saturating_mul(1_000_000),
                status: 1,
            },
        );
    }

    /// A suspension (2) or reinstatement (0), at unix microseconds `at_us`.
    pub(crate) fn status_changed(&self, list: &str, idx: i64, at_us: i64, status: i16) {
        self.push(list, idx, Ack::Status { at_us, status });
    }

    /// Drops what is past the retention time.
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while inner
            .records
            .front()
            .is_some_and(|r| now.duration_since(r.at) > self.config.retention)
        {
            inner.records.pop_front();
        }
        if inner.records.is_empty() {
            inner.clients.clear();
        }
    }

    /// The sequence number the next record gets.
    fn sequence(&self) -> u64 {
        self.lock().next_seq
    }

    /// Notes that every record below `seq` (taken before `at` was read) was committed
    /// before the WAL reached `at`.
    fn mark(&self, at: u64, seq: u64) {
        let mut inner = self.lock();
        inner.marks.push_back((at, seq));
        // One mark a second: a minute of them at most.
        while inner.marks.len() > 64 {
            inner.marks.pop_front();
        }
    }

    /// Drops the records a standby has flushed (`flushed`: the lowest flush position of
    /// the standbys streaming now).
    fn replicated(&self, flushed: u64) {
        let mut inner = self.lock();
        let mut below = None;
        while inner.marks.front().is_some_and(|(at, _)| *at <= flushed) {
            below = inner.marks.pop_front().map(|(_, seq)| seq);
        }
        if let Some(seq) = below {
            while inner.records.front().is_some_and(|r| r.seq < seq) {
                inner.records.pop_front();
            }
        }
        let now = Instant::now();
        self.expire(&mut inner, now);
    }

    fn snapshot(&self) -> (Vec<Record>, u64) {
        let inner = self.lock();
        (inner.records.iter().cloned().collect(), inner.overflowed)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }
}

/// What the database says of its replication, as far as this service's role may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `synchronous_standby_names` and `synchronous_commit` both ask for a standby's
    /// confirmation of every commit.
    pub synchronous: bool,
    pub synchronous_standby_names: String,
    pub synchronous_commit: String,
    /// Standbys streaming from the primary now.
    pub standbys: i64,
    /// The largest distance in bytes between the primary's WAL and a standby's flush
    /// position; `None` when no standby streams or the role may not see positions
    /// (`pg_monitor` or `pg_read_all_stats` may).
    pub lag_bytes: Option<i64>,
    /// The primary's WAL position and the lowest flush position of the standbys.
    current_lsn: Option<u64>,
    flushed_lsn: Option<u64>,
    /// The primary's incarnation, as its connections read it when opened.
    incarnation: String,
}

impl Replication {
    /// Standbys stream, and commits do not wait for any of them.
    pub fn asynchronous_with_standbys(&self) -> bool {
        self.standbys > 0 && !self.synchronous
    }

    /// One line for a log or a condition: the mode and the standbys, not the lag (which
    /// moves all the time; it is a metric), so that a condition's message stays put.
    pub fn describe(&self) -> String {
        if self.synchronous {
            format!(
                "synchronous (synchronous_standby_names '{}', synchronous_commit {}), {} standby(s) streaming",
                self.synchronous_standby_names, self.synchronous_commit, self.standbys
            )
        } else if self.standbys > 0 {
            format!(
                "asynchronous: {} standby(s) stream but no commit waits for one (synchronous_standby_names '{}', synchronous_commit {}): a failover can lose acknowledged writes",
                self.standbys, self.synchronous_standby_names, self.synchronous_commit
            )
        } else {
            "no standby streams from the primary".into()
        }
    }
}

/// What one worker wrote back after a failover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub issuances_restored: u64,
    pub issuances_present: u64,
    /// Their list is gone or not live, or their slot or `jti` now names another entry.
    pub issuances_unrestorable: u64,
    pub revocations_restored: u64,
    pub revocations_present: u64,
    /// Of the restored ones, those whose entry is not on the new primary (its issuance
    /// was lost with a worker that died too): the list shows the slot revoked all the same.
    pub revocations_without_entry: u64,
    /// Their list is not on the new primary, or not live.
    pub revocations_unrestorable: u64,
    /// Acknowledgements dropped by the journal's size bound before any standby was known
    /// to have them.
    pub overflowed: u64,
    /// Lists an acknowledgement could not be written back to.
    pub unrestorable_lists: Vec<String>,
    /// Lists sealed by this worker's pass.
    pub sealed: Vec<String>,
}

/// One sealed list and its workers, as the operator reports a failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedList {
    pub list: String,
    pub sealed_at: i64,
    /// Workers that held leases of it when it was sealed.
    pub holders: Vec<String>,
    /// Of those, the ones that have written back their acknowledgements.
    pub restored_by: Vec<String>,
    /// Positions that were never handed out and never will be.
    pub unused: i64,
}

/// A pool's lists sealed at its latest failover, and what was written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverReport {
    pub incarnation: String,
    pub sealed: Vec<SealedList>,
    pub issuances_restored: i64,
    pub revocations_restored: i64,
    /// Acknowledgements the workers that restored could not write back, and their lists.
    pub unrestorable: i64,
    pub unrestorable_lists: Vec<String>,
}

impl FailoverReport {
    /// Workers that held leases of a sealed list and have not written back (yet).
    pub fn silent(&self) -> Vec<(&str, Vec<&str>)> {
        let mut by_worker: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for list in &self.sealed {
            for holder in &list.holders {
                if !list.restored_by.contains(holder) {
                    by_worker
                        .entry(holder.as_str())
                        .or_default()
                        .push(list.list.as_str());
                }
            }
        }
        by_worker.into_iter().collect()
    }
}

/// Issuances written back in one statement at most.
const CHUNK: usize = 1000;

/// Writes back journaled issuances: each `restored`, `present` (its key and entry are
/// there), `absent` (its list is not live) or `taken` (its slot, position or key names
/// another entry). The key and the entry go in together or not at all.
const RESTORE_ISSUANCES: &str = "
    WITH r AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::uuid[], $6::bigint[])
                   WITH ORDINALITY AS r(list_id, idx, position, client_id, jti, status_expiry, n)),
    t AS (SELECT r.*, l.id IS NOT NULL AS live, k.list_id AS k_list, k.idx AS k_idx,
                 EXISTS (SELECT 1 FROM entries e WHERE e.list_id = r.list_id
                         AND (e.idx = r.idx OR e.position = r.position)) AS used
          FROM r LEFT JOIN lists l ON l.id = r.list_id AND l.state IN ('Active', 'Full')
          LEFT JOIN issuance_keys k ON k.client_id = r.client_id AND k.jti = r.jti),
    w AS (SELECT * FROM t WHERE live AND k_list IS NULL AND NOT used),
    ke AS (INSERT INTO issuance_keys (client_id, jti, list_id, idx)
           SELECT client_id, jti, list_id, idx FROM w
           ON CONFLICT (client_id, jti) DO NOTHING
           RETURNING client_id, jti),
    en AS (INSERT INTO entries (list_id, idx, position, client_id, jti, status_expiry)
           SELECT w.list_id, w.idx, w.position, w.client_id, w.jti, w.status_expiry
           FROM w JOIN ke ON ke.client_id = w.client_id AND ke.jti = w.jti
           RETURNING list_id, idx, status_expiry),
    mx AS (UPDATE lists l SET max_status_expiry = GREATEST(l.max_status_expiry, m.m)
           FROM (SELECT list_id, max(status_expiry) AS m FROM en GROUP BY list_id) AS m
           WHERE l.id = m.list_id AND l.state = 'Full' RETURNING l.id)
    SELECT t.list_id,
           CASE WHEN en.idx IS NOT NULL THEN 'restored'
                WHEN t.k_list = t.list_id AND t.k_idx = t.idx THEN 'present'
                WHEN NOT t.live THEN 'absent'
                ELSE 'taken' END AS outcome
    FROM t LEFT JOIN en ON en.list_id = t.list_id AND en.idx = t.idx
    CROSS JOIN (SELECT count(*) FROM mx) AS moved";

impl Store {
    /// Keeps a journal of this process's acknowledgements and writes it back after a
    /// failover (workers; once per store).
    pub fn enable_journal(&self, config: JournalConfig) {
        if self.journal.set(Journal::new(config)).is_err() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move { store.journal_forever().await });
    }

    /// What this process knows of failovers, for its metrics.
    pub fn failover_stats(&self) -> FailoverStats {
        let i = &self.incarnations;
        FailoverStats {
            failovers: *i.changes.borrow(),
            journal_records: self.journal.get().map_or(0, Journal::len),
            replication: i
                .replication
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            restored: i.restored.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// The incarnation the latest connection found.
    pub fn incarnation(&self) -> Option<String> {
        self.incarnations.current()
    }

    pub(crate) fn journal_issued(
        &self,
        list: &str,
        idx: i64,
        position: i64,
        client: &str,
        jti: Uuid,
        expiry: i64,
    ) {
        if let Some(j) = self.journal.get() {
            j.issued(list, idx, position, client, jti, expiry);
        }
    }

    pub(crate) fn journal_revoked(&self, list: &str, idx: i64, at: i64) {
        if let Some(j) = self.journal.get() {
            j.revoked(list, idx, at);
        }
    }

    /// A suspension (2) or reinstatement (0) acknowledged, at unix microseconds `at_us`.
    pub(crate) fn journal_status(&self, list: &str, idx: i64, at_us: i64, status: i16) {
        if let Some(j) = self.journal.get() {
            j.status_changed(list, idx, at_us, status);
        }
    }

    /// Every second: what the standbys have (the journal forgets it); on a new
    /// incarnation, the restore, retried until it is done.
    async fn journal_forever(&self) {
        let mut failovers = self.incarnations.changes.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = failovers.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let mut backoff = Duration::from_millis(100);
                    loop {
                        match self.restore_journal().await {
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "writing back acknowledgements after the failover failed; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    // Taken before the WAL position is read: every record below it was
                    // acknowledged, hence committed, before that position.
                    let seq = self.journal.get().map(Journal::sequence);
                    let Ok(r) = self.replication().await else {
                        continue;
                    };
                    // Also read here: connections kept open across a failover (a pooler
                    // in front of the server) never open anew to notice it.
                    self.incarnations.observe(&r.incarnation);
                    let before = self
                        .incarnations
                        .replication
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(r.clone());
                    let was_async = before.map(|b| b.asynchronous_with_standbys());
                    if was_async != Some(r.asynchronous_with_standbys()) && (r.asynchronous_with_standbys() || was_async == Some(true)) {
                        if r.asynchronous_with_standbys() {
                            tracing::warn!("database replication: {}", r.describe());
                        } else {
                            tracing::info!("database replication: {}", r.describe());
                        }
                    }
                    if let Some(j) = self.journal.get() {
                        if let (Some(at), Some(seq)) = (r.current_lsn, seq) {
                            j.mark(at, seq);
                        }
                        match r.flushed_lsn {
                            Some(flushed) => j.replicated(flushed),
                            None => {
                                let mut inner = j.lock();
                                j.expire(&mut inner, Instant::now());
                            }
                        }
                    }
                }
            }
        }
    }

    /// The replication facts the primary shows this role.
    pub async fn replication(&self) -> Result<Replication> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT current_setting('synchronous_standby_names'),
                            current_setting('synchronous_commit'),
                            (SELECT count(*) FROM pg_stat_replication WHERE application_name IS DISTINCT FROM 'pg_basebackup'),
                            (SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn))::bigint FROM pg_stat_replication),
                            pg_current_wal_lsn()::text,
                            (SELECT min(flush_lsn) FROM pg_stat_replication)::text,
                            statuslist_incarnation()",
                    &[],
                )
                .await?;
            let names: String = row.try_get(0)?;
            let commit: String = row.try_get(1)?;
            let synchronous = !names.trim().is_empty()
                && matches!(commit.as_str(), "on" | "remote_write" | "remote_apply");
            Ok(Replication {
                synchronous,
                synchronous_standby_names: names,
                synchronous_commit: commit,
                standbys: row.try_get(2)?,
                lag_bytes: row.try_get(3)?,
                current_lsn: row.try_get::<_, Option<String>>(4)?.as_deref().and_then(lsn),
                flushed_lsn: row.try_get::<_, Option<String>>(5)?.as_deref().and_then(lsn),
                incarnation: row.try_get(6)?,
            })
        })
        .await
    }

    /// Seals the lists still Active from an earlier incarnation of the database (none,
    /// nearly always): Full from now on, their unused positions never handed out. Returns
    /// `(pool, list)` for each list sealed by this call.
    pub async fn seal_past_incarnations(&self) -> Result<Vec<(Option<String>, String)>> {
        self.bounded(async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT out_pool, out_list FROM statuslist_seal_past_incarnations()")
                .await?;
            let rows = client.query(&stmt, &[]).await?;
            let sealed: Vec<(Option<String>, String)> = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_>>()?;
            if !sealed.is_empty() {
                let lists: Vec<&str> = sealed.iter().map(|(_, l)| l.as_str()).collect();
                tracing::warn!(
                    lists = %lists.join(","),
                    "sealed the lists that were issuing in an earlier incarnation of the database: none of their unused positions will be handed out"
                );
                let pools: std::collections::BTreeSet<&str> =
                    sealed.iter().filter_map(|(p, _)| p.as_deref()).collect();
                for pool in pools {
                    client
                        .execute("SELECT pg_notify($1, $2)", &[&crate::notify::CHANNEL_CONFIG, &pool])
                        .await?;
                }
            }
            Ok(sealed)
        })
        .await
    }

    /// [`Store::seal_past_incarnations`], then a fresh list for each pool that had one
    /// sealed, so that issuance resumes without waiting for the operator.
    pub(crate) async fn seal_and_replace(&self) -> Result<Vec<(Option<String>, String)>> {
        let sealed = self.seal_past_incarnations().await?;
        let pools: std::collections::BTreeSet<&str> =
            sealed.iter().filter_map(|(p, _)| p.as_deref()).collect();
        for pool in pools {
            self.ensure_capacity(pool).await?;
        }
        Ok(sealed)
    }

    /// After a failover: seals the lists of earlier incarnations (and provisions their
    /// pools' replacements), then writes back every journaled acknowledgement the new
    /// primary lacks, and records what it did (`failover_restores`).
    pub async fn restore_journal(&self) -> Result<Restored> {
        let Some(journal) = self.journal.get() else {
            return Ok(Restored::default());
        };
        let sealed = self.seal_and_replace().await?;
        let mut done = Restored {
            sealed: sealed.into_iter().map(|(_, l)| l).collect(),
            ..Restored::default()
        };
        let (records, overflowed) = journal.snapshot();
        done.overflowed = overflowed;
        let mut unrestorable = std::collections::BTreeSet::new();
        let issued: Vec<&Record> = records
            .iter()
            .filter(|r| matches!(r.ack, Ack::Issued { .. }))
            .collect();
        for chunk in issued.chunks(CHUNK) {
            let mut cols = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for r in chunk {
                if let Ack::Issued {
                    client,
                    jti,
                    position,
                    expiry,
                } = &r.ack
                {
                    cols.0.push(list_id(r.list));
                    cols.1.push(r.idx);
                    cols.2.push(*position);
                    cols.3.push(client.to_string());
                    cols.4.push(*jti);
                    cols.5.push(*expiry);
                }
            }
            let rows = self
                .bounded(async {
                    let client = self.client().await?;
                    Ok(client
                        .query(
                            RESTORE_ISSUANCES,
                            &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5],
                        )
                        .await?)
                })
                .await?;
            for row in rows {
                let (list, outcome): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                match outcome.as_str() {
                    "restored" => done.issuances_restored += 1,
                    "present" => done.issuances_present += 1,
                    _ => {
                        done.issuances_unrestorable += 1;
                        unrestorable.insert(list);
                    }
                }
            }
        }
        let revoked: Vec<&Record> = records
            .iter()
            .filter(|r| matches!(r.ack, Ack::Status { .. }))
            .collect();
        // Every change of an entry in one statement, so that it reduces them in order.
        let mut by_entry: Vec<&Record> = revoked;
        by_entry.sort_by_key(|r| (r.list, r.idx, r.seq));
        for chunk in by_entry
            .chunk_by(|a, b| (a.list, a.idx) == (b.list, b.idx))
            .fold(Vec::<Vec<&Record>>::new(), |mut chunks, entry| {
                match chunks.last_mut() {
                    Some(last) if last.len() + entry.len() <= CHUNK => last.extend(entry),
                    _ => chunks.push(entry.to_vec()),
                }
                chunks
            })
        {
            let lists: Vec<String> = chunk.iter().map(|r| list_id(r.list)).collect();
            let idxs: Vec<i64> = chunk.iter().map(|r| r.idx).collect();
            let (ats, statuses): (Vec<i64>, Vec<i16>) = chunk
                .iter()
                .map(|r| match r.ack {
                    Ack::Status { at_us, status } => (at_us, status),
                    Ack::Issued { .. } => (0, 1),
                })
                .unzip();
            let rows = self
                .bounded(async {
                    let client = self.client().await?;
                    Ok(client
                        .query(
                            "SELECT out_list, out_outcome FROM statuslist_restore_statuses($1, $2, $3, $4)",
                            &[&lists, &idxs, &ats, &statuses],
                        )
                        .await?)
                })
                .await?;
            let mut changed = std::collections::BTreeSet::new();
            for row in rows {
                let (list, outcome): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                match outcome.as_str() {
                    "restored" | "orphan" => {
                        done.revocations_restored += 1;
                        if outcome == "orphan" {
                            done.revocations_without_entry += 1;
                        }
                        changed.insert(list);
                    }
                    "present" => done.revocations_present += 1,
                    _ => {
                        done.revocations_unrestorable += 1;
                        unrestorable.insert(list);
                    }
                }
            }
            for list in changed {
                self.changes().changed(&list);
            }
        }
        done.unrestorable_lists = unrestorable.into_iter().collect();
        self.record_restore(&journal.config.worker, &done).await?;
        {
            let mut total = self
                .incarnations
                .restored
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            total.issuances_restored += done.issuances_restored;
            total.issuances_present += done.issuances_present;
            total.issuances_unrestorable += done.issuances_unrestorable;
            total.revocations_restored += done.revocations_restored;
            total.revocations_present += done.revocations_present;
            total.revocations_without_entry += done.revocations_without_entry;
            total.revocations_unrestorable += done.revocations_unrestorable;
            total.overflowed = done.overflowed;
        }
        let line = format!(
            "issuances: {} written back, {} present, {} could not be; revocations: {} written back ({} of entries whose issuance is lost), {} present, {} could not be",
            done.issuances_restored,
            done.issuances_present,
            done.issuances_unrestorable,
            done.revocations_restored,
            done.revocations_without_entry,
            done.revocations_present,
            done.revocations_unrestorable
        );
        if done.issuances_unrestorable + done.revocations_unrestorable + done.overflowed > 0 {
            tracing::error!(
                lists = %done.unrestorable_lists.join(","),
                overflowed = done.overflowed,
                "after the failover, acknowledgements this worker made are missing and could not be written back: {line}"
            );
        } else {
            tracing::warn!(
                "after the failover, this worker's acknowledgements are all on the new primary: {line}"
            );
        }
        Ok(done)
    }

    async fn record_restore(&self, worker: &str, r: &Restored) -> Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO failover_restores (incarnation, worker, issuances_restored, issuances_present,
                         issuances_unrestorable, revocations_restored, revocations_present,
                         revocations_unrestorable, unrestorable_lists)
                     VALUES (statuslist_incarnation(), $1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (incarnation, worker) DO UPDATE SET restored_at = now(),
                         issuances_restored = failover_restores.issuances_restored + EXCLUDED.issuances_restored,
                         issuances_present = EXCLUDED.issuances_present,
                         issuances_unrestorable = EXCLUDED.issuances_unrestorable,
                         revocations_restored = failover_restores.revocations_restored + EXCLUDED.revocations_restored,
                         revocations_present = EXCLUDED.revocations_present,
                         revocations_unrestorable = EXCLUDED.revocations_unrestorable,
                         unrestorable_lists = EXCLUDED.unrestorable_lists",
                    &[
                        &worker,
                        &n(r.issuances_restored),
                        &n(r.issuances_present),
                        &n(r.issuances_unrestorable),
                        &n(r.revocations_restored),
                        &n(r.revocations_present),
                        &n(r.revocations_unrestorable + r.overflowed),
                        &r.unrestorable_lists,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The pool's lists sealed at the latest failover that touched it, with what the
    /// workers wrote back; `None` when no failover sealed any of its lists.
    pub async fn failover_report(&self, pool: &str) -> Result<Option<FailoverReport>> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "WITH latest AS (SELECT s.incarnation FROM failover_seals s WHERE s.pool = $1
                                     ORDER BY s.sealed_at DESC LIMIT 1)
                     SELECT s.incarnation, s.list_id, extract(epoch FROM s.sealed_at)::bigint, s.holders, s.unused,
                            coalesce((SELECT array_agg(r.worker ORDER BY r.worker) FROM failover_restores r
                                      WHERE r.incarnation = s.incarnation AND r.worker = ANY (s.holders)), '{}')
                     FROM failover_seals s JOIN latest ON latest.incarnation = s.incarnation
                     WHERE s.pool = $1 ORDER BY s.list_id",
                    &[&pool],
                )
                .await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let incarnation: String = first.try_get(0)?;
            let sealed = rows
                .iter()
                .map(|r| {
                    Ok(SealedList {
                        list: r.try_get(1)?,
                        sealed_at: r.try_get(2)?,
                        holders: r.try_get(3)?,
                        unused: r.try_get(4)?,
                        restored_by: r.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let lists: Vec<&str> = sealed.iter().map(|s| s.list.as_str()).collect();
            let totals = client
                .query_one(
                    "SELECT coalesce(sum(issuances_restored), 0)::bigint, coalesce(sum(revocations_restored), 0)::bigint,
                            coalesce(sum(issuances_unrestorable + revocations_unrestorable), 0)::bigint,
                            coalesce((SELECT array_agg(DISTINCT u ORDER BY u) FROM failover_restores r2,
                                      unnest(r2.unrestorable_lists) AS u
                                      WHERE r2.incarnation = $1 AND u = ANY ($2)), '{}')
                     FROM failover_restores WHERE incarnation = $1",
                    &[&incarnation, &lists],
                )
                .await?;
            Ok(Some(FailoverReport {
                incarnation,
                sealed,
                issuances_restored: totals.try_get(0)?,
                revocations_restored: totals.try_get(1)?,
                unrestorable: totals.try_get(2)?,
                unrestorable_lists: totals.try_get(3)?,
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: usize) -> JournalConfig {
        JournalConfig {
            worker: "w".into(),
            retention: Duration::from_secs(3600),
            max_records: max,
        }
    }

    #[test]
    fn a_record_is_about_a_hundred_bytes() {
        // What the documentation of JOURNAL_MAX_RECORDS says.
        assert!(
            std::mem::size_of::<Record>() <= 100,
            "{}",
            std::mem::size_of::<Record>()
        );
    }

    #[test]
    fn lsn_and_list_ids_round_trip() {
        assert_eq!(lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(lsn("1/0"), Some(1 << 32));
        assert_eq!(lsn("nonsense"), None);
        assert_eq!(
            list_number("0A1B2C3D4E5F").map(list_id).as_deref(),
            Some("0A1B2C3D4E5F")
        );
        assert_eq!(list_number("short"), None);
    }

    #[test]
    fn the_journal_forgets_what_a_standby_flushed_and_keeps_the_rest() {
        let j = Journal::new(config(100));
        j.revoked("000000000001", 1, 10);
        j.revoked("000000000001", 2, 10);
        let seq = j.sequence();
        // Acknowledged after the position was read: kept past it.
        j.revoked("000000000001", 3, 10);
        j.mark(100, seq);
        j.mark(200, j.sequence());
        j.replicated(150);
        let (records, _) = j.snapshot();
        assert_eq!(records.iter().map(|r| r.idx).collect::<Vec<_>>(), [3]);
        j.replicated(200);
        assert_eq!(j.len(), 0);
    }

    #[test]
    fn the_size_bound_drops_the_oldest_and_counts_them() {
        let j = Journal::new(config(2));
        for i in 0..5 {
            j.issued("000000000002", i, i, "client", Uuid::nil(), 0);
        }
        let (records, overflowed) = j.snapshot();
        assert_eq!(records.iter().map(|r| r.idx).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(overflowed, 3);
    }
}

#[cfg(all(test, feature = "testing"))]
mod db_tests {
    use crate::testing::TestDb;

    /// What a new connection reads (`INCARNATION_QUERY`) and what the schema's function
    /// answers (leases are fenced with it) are the same text: a mismatch would make every
    /// connection look like a failover, or fence every lease out.
    #[tokio::test]
    async fn a_connection_and_the_schema_name_the_same_incarnation() {
        let db = TestDb::new().await;
        // Any statement opens a connection, which observes the incarnation.
        db.store.replication().await.expect("replication facts");
        let observed = db.store.incarnation().expect("observed on connecting");
        let row = db
            .client()
            .await
            .query_one(
                "SELECT statuslist_incarnation(), (SELECT l.lanname FROM pg_proc p
                     JOIN pg_language l ON l.oid = p.prolang WHERE p.proname = 'statuslist_incarnation')",
                &[],
            )
            .await
            .expect("incarnation");
        assert_eq!(row.get::<_, String>(0), observed);
        // Schema 18: prepared once per session, not parsed at every call.
        assert_eq!(row.get::<_, String>(1), "plpgsql");
        let (system, timeline) = observed.split_once('/').expect("system/timeline");
        assert!(system.parse::<u64>().is_ok(), "{observed}");
        assert_eq!(timeline, "1", "{observed}");
    }
}
