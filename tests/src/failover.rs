//! Failover with real streaming replication: a primary and a standby made by
//! `pg_basebackup -R` (the PostgreSQL binaries every test uses), the standby cut off from
//! the primary (its WAL receiver stopped: a network fault between the two), the primary
//! crashed (immediate stop), the standby promoted; the service's processes (the reconcile
//! core and workers) on one multi-host URL with `target_session_attrs=read-write`, under
//! `/issue`, `/revoke`, `/suspend` and `/reinstate` load throughout. [`run`] checks the
//! promises afterwards on the new primary and returns the figures:
//!
//! `failover: mode=M answered=N twice=0 survivors_missing=N killed_missing=N ...`

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use statuslist_devdb::{PgServer, ServerOptions};
use statuslist_format::SigningKey;
use statuslist_format::keys::jwks;
use statuslist_format::unix_now;

use crate::envtest::eventually;
use crate::process::Process;
use crate::service::{Pool, Worker, operator_on_manifests, serve_json};

/// How replication runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PostgreSQL's default: a commit waits for no standby.
    Asynchronous,
    /// `synchronous_standby_names` names the standby: every commit waits for it.
    Synchronous,
}

/// A primary and its streaming standby.
#[derive(Debug)]
pub struct Replicated {
    pub primary: PgServer,
    pub standby: PgServer,
    pub mode: Mode,
}

const DB: &str = "failover";
const STANDBY: &str = "standby1";

impl Replicated {
    pub async fn start(mode: Mode) -> Self {
        let primary = PgServer::start_with(&ServerOptions {
            settings: vec!["wal_keep_size = '512MB'".to_owned()],
            // Durable on the primary too: an acknowledged commit is flushed there.
            synchronous_commit: true,
            ..Default::default()
        })
        .expect("primary");
        let admin = statuslist_store::connect_one(&primary.url("postgres"))
            .await
            .expect("primary answers");
        admin
            .batch_execute(&format!("CREATE DATABASE {DB}"))
            .await
            .expect("database");
        let standby = PgServer::standby_of(&primary, STANDBY).expect("standby");
        let cluster = Self {
            primary,
            standby,
            mode,
        };
        // Synchronous once the standby exists (a commit before would wait for it).
        let want = if mode == Mode::Synchronous {
            for sql in [
                format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY}'"),
                "SELECT pg_reload_conf()".to_owned(),
            ] {
                admin
                    .batch_execute(&sql)
                    .await
                    .expect("synchronous standby");
            }
            "sync"
        } else {
            "async"
        };
        eventually(Duration::from_secs(30), "the standby streaming", || async {
            let row = admin
                .query_opt(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                    &[&STANDBY],
                )
                .await
                .ok()
                .flatten()?;
            (row.get::<_, String>(0) == want).then_some(())
        })
        .await;
        cluster
    }

    /// Both servers, the primary first: the service connects to whichever accepts writes.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{DB}?target_session_attrs=read-write",
            self.primary.port(),
            self.standby.port()
        )
    }

    /// The standby stops receiving WAL (its receiver is stopped, as a network fault
    /// between the two would), and the primary goes on alone.
    pub async fn cut(&self) {
        let standby = statuslist_store::connect_one(&self.standby.url("postgres"))
            .await
            .expect("standby answers");
        for sql in [
            "ALTER SYSTEM SET primary_conninfo = ''",
            "SELECT pg_reload_conf()",
        ] {
            standby
                .batch_execute(sql)
                .await
                .expect("cut the standby off");
        }
        eventually(
            Duration::from_secs(30),
            "the WAL receiver stopped",
            || async {
                let row = standby
                    .query_one("SELECT count(*) FROM pg_stat_wal_receiver", &[])
                    .await
                    .ok()?;
                (row.get::<_, i64>(0) == 0).then_some(())
            },
        )
        .await;
    }

    /// The primary crashes (immediate stop: no checkpoint, sessions cut) and the standby
    /// is promoted.
    pub fn fail_over(&mut self) -> Instant {
        self.primary.kill().expect("crash the primary");
        self.standby.promote().expect("promote the standby");
        Instant::now()
    }
}

/// An issuer whose key signs in the test process (no process per request).
struct Issuer {
    client_id: String,
    key: SigningKey,
    jwks_url: String,
}

impl Issuer {
    fn start(client_id: &str) -> Self {
        let key = SigningKey::generate().expect("key");
        let doc = serde_json::to_vec(&jwks([&key])).expect("jwks");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || serve_json(listener, move || Some(doc.clone())));
        Self {
            client_id: client_id.to_owned(),
            key,
            jwks_url: format!("http://{addr}/jwks.json"),
        }
    }

    fn sign(&self, claims: serde_json::Value) -> String {
        self.key.sign_jwt("JWT", &claims).expect("sign")
    }
}

/// One acknowledged issuance: by which worker, what it answered, for which `jti`.
#[derive(Debug, Clone)]
struct Issued {
    worker: usize,
    uri: String,
    idx: u64,
    jti: String,
    at: Instant,
}

/// One `/suspend` (to 2) or `/reinstate` (to 0) request, answered or not.
#[derive(Debug, Clone)]
struct Change {
    worker: usize,
    uri: String,
    idx: u64,
    status: u8,
    acknowledged: bool,
    /// Unanswered, or answered 5xx: it may have been committed, or may yet be.
    uncertain: bool,
}

#[derive(Debug, Default)]
struct Record {
    issued: Vec<Issued>,
    /// `(worker, uri, idx, when)` of each acknowledged revocation.
    revoked: Vec<(usize, String, u64, Instant)>,
    /// Every suspension and reinstatement sent, in each client's order.
    changes: Vec<Change>,
    /// Entries whose revocation may have been committed unacknowledged.
    revoke_unknown: std::collections::HashSet<(String, u64)>,
    answers: HashMap<u16, u64>,
    /// Requests that got no HTTP answer (a worker down, a timeout).
    unanswered: u64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Figures {
    pub mode: String,
    pub answered_200: u64,
    pub answers: Vec<(u16, u64)>,
    pub unanswered: u64,
    pub issued: u64,
    pub revoked: u64,
    /// `(uri, idx)` acknowledged to two different credentials.
    pub twice: u64,
    /// Acknowledgements of surviving workers absent from the new primary.
    pub survivors_missing_issuances: u64,
    pub survivors_missing_revocations: u64,
    pub survivors_issued: u64,
    pub survivors_revoked: u64,
    /// Suspensions and reinstatements acknowledged; entries whose last one a surviving
    /// worker acknowledged and whose status on the new primary is another.
    pub status_changes: u64,
    pub survivors_checked_statuses: u64,
    pub survivors_wrong_statuses: u64,
    /// Acknowledgements of the worker killed with the primary absent from the new one.
    pub killed_missing: u64,
    /// What the surviving workers wrote back.
    pub restored_issuances: i64,
    pub restored_revocations: i64,
    /// Lists sealed at the failover, and the workers reported as not having written back.
    pub sealed: Vec<String>,
    pub silent_workers: Vec<String>,
    /// From the promotion to the first acknowledged issuance and revocation after it.
    pub resume_issue_ms: Option<u128>,
    pub resume_revoke_ms: Option<u128>,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<u128>| v.map_or("-".to_owned(), |v| v.to_string());
        write!(
            f,
            "failover: mode={} answered_200={} answers={:?} unanswered={} issued={} revoked={} twice={} \
             survivors_issued={} survivors_missing_issuances={} survivors_revoked={} survivors_missing_revocations={} \
             status_changes={} survivors_checked_statuses={} survivors_wrong_statuses={} killed_missing={} restored_issuances={} restored_revocations={} sealed={} silent_workers={} \
             resume_issue_ms={} resume_revoke_ms={}",
            self.mode,
            self.answered_200,
            self.answers,
            self.unanswered,
            self.issued,
            self.revoked,
            self.twice,
            self.survivors_issued,
            self.survivors_missing_issuances,
            self.survivors_revoked,
            self.survivors_missing_revocations,
            self.status_changes,
            self.survivors_checked_statuses,
            self.survivors_wrong_statuses,
            self.killed_missing,
            self.restored_issuances,
            self.restored_revocations,
            self.sealed.join(","),
            self.silent_workers.join(","),
            ms(self.resume_issue_ms),
            ms(self.resume_revoke_ms),
        )
    }
}

/// A run: how long the load runs before the cut, between the cut and the crash, and
/// after the promotion; how many clients; whether a worker dies with the primary.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub before_cut: Duration,
    /// Ignored when synchronous (a synchronous primary cut off from its only standby
    /// commits nothing; the crash comes right after `before_cut`).
    pub cut_for: Duration,
    pub after: Duration,
    pub clients: usize,
    pub kill_a_worker: bool,
}

/// Sends `/issue`, `/revoke`, `/suspend` and `/reinstate` to the workers until `stop`,
/// recording every answer.
async fn load(
    client: usize,
    urls: Arc<Vec<String>>,
    issuer: Arc<Issuer>,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let mut mine: Vec<(usize, String, u64)> = Vec::new();
    // The entry this client suspended last, to be reinstated next.
    let mut to_reinstate: Option<(String, u64)> = None;
    let mut n: usize = client;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        // Each kind of request goes to every worker in turn.
        let w = (n + n / 4) % urls.len();
        // Every fourth request revokes one of this client's earlier credentials; every
        // fourth changes the status of its newest in turn: suspended and reinstated, then
        // suspended and left so.
        let revoking = n.is_multiple_of(4) && !mine.is_empty();
        let changing = n % 4 == 2 && !mine.is_empty();
        let jti = uuid::Uuid::new_v4().to_string();
        let (path, jwt, target) = if revoking {
            let (_, uri, idx) = mine.swap_remove(n % mine.len());
            let jwt = issuer.sign(json!({
                "iss": issuer.client_id, "iat": unix_now(), "jti": jti, "uri": uri, "idx": idx,
            }));
            ("/revoke", jwt, Some((uri, idx)))
        } else if changing {
            let newest = mine.last().map(|(_, u, i)| (u.clone(), *i));
            let ((uri, idx), status) = match (n / 4 % 3, to_reinstate.take(), newest) {
                (1, Some(entry), _) => (entry, 0),
                (0, _, Some(entry)) => {
                    to_reinstate = Some(entry.clone());
                    (entry, 2)
                }
                (_, _, Some(entry)) => (entry, 2),
                (_, _, None) => continue,
            };
            let jwt = issuer.sign(json!({
                "iss": issuer.client_id, "iat": unix_now(), "jti": jti, "uri": uri, "idx": idx,
            }));
            let path = if status == 2 {
                "/suspend"
            } else {
                "/reinstate"
            };
            let sent = http
                .post(format!("{}{path}", urls[w]))
                .header("content-type", "application/jwt")
                .body(jwt)
                .send()
                .await;
            let status_code = sent.as_ref().ok().map(|r| r.status().as_u16());
            {
                let mut rec = record.lock().expect("record");
                match status_code {
                    Some(code) => *rec.answers.entry(code).or_default() += 1,
                    None => rec.unanswered += 1,
                }
                rec.changes.push(Change {
                    worker: w,
                    uri,
                    idx,
                    status,
                    acknowledged: status_code == Some(202),
                    uncertain: status_code.is_none_or(|c| c >= 500),
                });
            }
            if status_code.is_none_or(|c| c == 503) {
                tokio::time::sleep(Duration::from_millis(20)).await; // backoff while unavailable
            }
            continue;
        } else {
            let jwt = issuer.sign(json!({
                "iss": issuer.client_id, "iat": unix_now(), "jti": jti,
                "statusExpiry": unix_now() + 86_400,
            }));
            ("/issue", jwt, None)
        };
        let response = http
            .post(format!("{}{path}", urls[w]))
            .header("content-type", "application/jwt")
            .body(jwt)
            .send()
            .await;
        let Ok(response) = response else {
            {
                let mut rec = record.lock().expect("record");
                rec.unanswered += 1;
                if let Some((uri, idx)) = target {
                    rec.revoke_unknown.insert((uri.clone(), idx));
                    mine.push((w, uri, idx));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // backoff from a worker down
            continue;
        };
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        {
            let mut rec = record.lock().expect("record");
            *rec.answers.entry(status).or_default() += 1;
            match (status, target) {
                (200 | 202, Some((uri, idx))) => rec.revoked.push((w, uri, idx, Instant::now())),
                (200, None) => {
                    if let (Some(uri), Some(idx)) = (body["uri"].as_str(), body["idx"].as_u64()) {
                        rec.issued.push(Issued {
                            worker: w,
                            uri: uri.to_owned(),
                            idx,
                            jti,
                            at: Instant::now(),
                        });
                        mine.push((w, uri.to_owned(), idx));
                    }
                }
                (_, Some((uri, idx))) => mine.push((w, uri, idx)),
                _ => {}
            }
        }
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(20)).await; // backoff while unavailable
        }
    }
}

/// Runs `plan` with the `statuslist` binary `bin` and returns the figures; panics on a
/// harness failure, never on a broken promise (the caller asserts on the figures).
pub async fn run(bin: &Path, plan: &Plan) -> Figures {
    let mut cluster = Replicated::start(plan.mode).await;
    let url = cluster.url();
    let issuer = Arc::new(Issuer::start("failover-issuer"));
    let manifests = tempfile::tempdir().expect("dir");
    let pool = Pool {
        entries_per_list: 100_000,
        min_free_entries: 1000,
        lease_size: 500,
        ..Pool::new(
            "failover",
            "Token",
            "https://lists.example",
            &issuer.client_id,
            &issuer.jwks_url,
        )
    };
    std::fs::write(
        manifests.path().join("pool.yaml"),
        pool.yaml("  suspension: true\n"),
    )
    .expect("manifest");
    let _operator: Process = operator_on_manifests(bin, "operator", &url, manifests.path());
    let workers: Vec<Worker> = (0..2)
        .map(|i| {
            Worker::start(
                bin,
                &format!("worker-{i}"),
                &url,
                &[("LEASE_TTL_SECONDS", "10")],
            )
        })
        .collect();
    let urls = Arc::new(workers.iter().map(|w| w.url.clone()).collect::<Vec<_>>());
    let http = reqwest::Client::new();
    for u in urls.iter() {
        eventually(Duration::from_secs(60), "a worker issuing", || async {
            let jwt = issuer.sign(json!({
                "iss": issuer.client_id, "iat": unix_now(),
                "jti": uuid::Uuid::new_v4().to_string(), "statusExpiry": unix_now() + 86_400,
            }));
            let r = http
                .post(format!("{u}/issue"))
                .header("content-type", "application/jwt")
                .body(jwt)
                .send()
                .await
                .ok()?;
            (r.status().as_u16() == 200).then_some(())
        })
        .await;
    }

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..plan.clients)
        .map(|c| {
            tokio::spawn(load(
                c,
                urls.clone(),
                issuer.clone(),
                record.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(plan.before_cut).await; // load runs: the time is the plan
    if plan.mode == Mode::Asynchronous {
        cluster.cut().await;
        tokio::time::sleep(plan.cut_for).await; // the primary alone: the time is the plan
    }
    let killed = plan.kill_a_worker.then_some(1usize);
    if let Some(k) = killed {
        workers[k].process.signal("KILL");
    }
    let promoted = cluster.fail_over();
    tokio::time::sleep(plan.after).await; // load on the new primary: the time is the plan
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }

    let new_primary = cluster.standby.url(DB);
    let db = statuslist_store::connect_one(&new_primary)
        .await
        .expect("new primary");
    // The surviving workers write back what they acknowledged.
    let survivors: Vec<String> = (0..workers.len())
        .filter(|w| Some(*w) != killed)
        .map(|w| format!("worker-{w}"))
        .collect();
    let written = || async {
        db.query_one(
            "SELECT count(*) FROM failover_restores WHERE worker = ANY ($1)",
            &[&survivors],
        )
        .await
        .ok()
        .map(|row| row.get::<_, i64>(0) as usize)
    };
    let wait = Duration::from_secs(60);
    let every = Duration::from_millis(100);
    if statuslist_testkit::within(every, wait, || async {
        (written().await? == survivors.len()).then_some(())
    })
    .await
    .is_none()
    {
        // When it does not come, what the survivors logged is the only account of why.
        let logs: Vec<String> = workers
            .iter()
            .filter(|w| survivors.contains(&w.process.name))
            .map(|w| {
                let out = w.process.output();
                let tail = out[out.len().saturating_sub(60)..].join("\n");
                format!(
                    "--- {} (last 60 of {} lines):\n{tail}",
                    w.process.name,
                    out.len()
                )
            })
            .collect();
        panic!(
            "timed out after {wait:?} waiting for the survivors' write-back ({:?} of {} rows):\n{}",
            written().await,
            survivors.len(),
            logs.join("\n")
        );
    }

    let record = std::mem::take(&mut *record.lock().expect("record"));
    let mut figures = Figures {
        mode: format!("{:?}", plan.mode).to_lowercase(),
        answered_200: record.answers.get(&200).copied().unwrap_or(0),
        unanswered: record.unanswered,
        issued: record.issued.len() as u64,
        revoked: record.revoked.len() as u64,
        ..Default::default()
    };
    figures.answers = record.answers.iter().map(|(s, n)| (*s, *n)).collect();
    figures.answers.sort();
    // Twice: one (uri, idx) answered for two different jtis.
    let mut by_slot: HashMap<(&str, u64), &str> = HashMap::new();
    for i in &record.issued {
        if let Some(other) = by_slot.insert((i.uri.as_str(), i.idx), i.jti.as_str())
            && other != i.jti
        {
            figures.twice += 1;
        }
    }
    // Present on the new primary: each acknowledged issuance's entry with its jti, each
    // acknowledged revocation's row.
    let list_of = |uri: &str| uri.rsplit('/').next().unwrap_or_default().to_owned();
    let entries: std::collections::HashSet<(String, i64, String)> = db
        .query("SELECT list_id, idx, jti::text FROM entries", &[])
        .await
        .expect("entries")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let statuses: HashMap<(String, i64), i16> = db
        .query("SELECT list_id, idx, status FROM revocations", &[])
        .await
        .expect("revocations")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let revocations: std::collections::HashSet<(String, i64)> = statuses
        .iter()
        .filter(|(_, s)| **s == 1)
        .map(|(k, _)| k.clone())
        .collect();
    for i in &record.issued {
        let present = entries.contains(&(list_of(&i.uri), i.idx as i64, i.jti.clone()));
        if Some(i.worker) == killed {
            figures.killed_missing += u64::from(!present);
        } else {
            figures.survivors_issued += 1;
            figures.survivors_missing_issuances += u64::from(!present);
        }
        if i.at > promoted && figures.resume_issue_ms.is_none() {
            figures.resume_issue_ms = Some((i.at - promoted).as_millis());
        }
    }
    for (w, uri, idx, at) in &record.revoked {
        let present = revocations.contains(&(list_of(uri), *idx as i64));
        if *at > promoted && figures.resume_revoke_ms.is_none() {
            figures.resume_revoke_ms = Some((*at - promoted).as_millis());
        }
        if Some(*w) == killed {
            figures.killed_missing += u64::from(!present);
        } else {
            figures.survivors_revoked += 1;
            figures.survivors_missing_revocations += u64::from(!present);
        }
    }
    // Each entry's last suspension or reinstatement, where it was acknowledged, no change
    // of it may still be in flight (unanswered or 5xx), and it was never revoked (nor
    // perhaps revoked): its status on the new primary.
    let revoked_entries: std::collections::HashSet<(&str, u64)> = record
        .revoked
        .iter()
        .map(|(_, uri, idx, _)| (uri.as_str(), *idx))
        .collect();
    let mut last: HashMap<(&str, u64), &Change> = HashMap::new();
    let mut uncertain: std::collections::HashSet<(&str, u64)> = Default::default();
    for c in &record.changes {
        figures.status_changes += u64::from(c.acknowledged);
        last.insert((c.uri.as_str(), c.idx), c);
        if c.uncertain {
            uncertain.insert((c.uri.as_str(), c.idx));
        }
    }
    for ((uri, idx), c) in last {
        if !c.acknowledged
            || uncertain.contains(&(uri, idx))
            || revoked_entries.contains(&(uri, idx))
            || record.revoke_unknown.contains(&(uri.to_owned(), idx))
        {
            continue;
        }
        let now = statuses
            .get(&(list_of(uri), idx as i64))
            .copied()
            .unwrap_or(0);
        let wrong = now != i16::from(c.status);
        if Some(c.worker) == killed {
            figures.killed_missing += u64::from(wrong);
        } else {
            figures.survivors_checked_statuses += 1;
            figures.survivors_wrong_statuses += u64::from(wrong);
        }
    }
    let row = db
        .query_one(
            "SELECT coalesce(sum(issuances_restored), 0)::bigint, coalesce(sum(revocations_restored), 0)::bigint FROM failover_restores",
            &[],
        )
        .await
        .expect("restores");
    figures.restored_issuances = row.get(0);
    figures.restored_revocations = row.get(1);
    // What the operator reports: the lists sealed, and who did not write back.
    let store =
        statuslist_store::Store::connect(&statuslist_store::StoreConfig::new(new_primary.clone()))
            .await
            .expect("store");
    let pool_name: String = db
        .query_one("SELECT name FROM pools", &[])
        .await
        .expect("the pool")
        .get(0);
    if let Some(report) = store.failover_report(&pool_name).await.expect("report") {
        figures.sealed = report.sealed.iter().map(|s| s.list.clone()).collect();
        figures.silent_workers = report
            .silent()
            .into_iter()
            .map(|(w, _)| w.to_owned())
            .collect();
    }
    drop(workers);
    figures
}
