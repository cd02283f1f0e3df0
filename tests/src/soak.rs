//! The fault-injection soak: the whole service as real processes — a throwaway PostgreSQL
//! (behind a TCP proxy that can black-hole), the reconcile core on manifest files, three
//! workers, two issuers' JWKS endpoints — under concurrent issuers that issue, retry,
//! revoke and read, while faults drawn from a recorded seed hit every part of it. At the
//! end it checks the two promises (no index handed to two credentials, no acknowledged
//! revocation lost) and the rest of the contract, and prints one summary line:
//!
//! `soak: seed=S seconds=N issued=N revoked=N worker_kills=N pauses=N pg_restarts=N blackholes=N duplicates=N lost_revocations=N http_500=N`
//!
//! `SOAK_SECONDS` and `SOAK_SEED` set the length and replay a schedule (`scripts/soak`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use statuslist_devdb::{PgServer, ServerOptions};
use statuslist_format::ListFormat;
use statuslist_format::keys::{Jwks, jwks};
use statuslist_format::unix_now;
use statuslist_format::verify::verify_list;
use statuslist_format::{SigningKey, Status};

use crate::process::{Process, free_port};
use crate::proxy::Proxy;
use crate::service::{Pool, wait_ready};

/// Length and seed of a run.
#[derive(Debug, Clone)]
pub struct Profile {
    pub seconds: u64,
    pub seed: u64,
    /// Concurrent issuing clients.
    pub clients: usize,
}

impl Profile {
    /// `SOAK_SECONDS` (else `default_seconds`), `SOAK_SEED` (else drawn from the clock),
    /// `SOAK_CLIENTS` (else 12).
    pub fn from_env(default_seconds: u64) -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        let seed = var("SOAK_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        Self {
            seconds: var("SOAK_SECONDS").unwrap_or(default_seconds),
            seed,
            clients: var("SOAK_CLIENTS").map(|c: u64| c as usize).unwrap_or(12),
        }
    }
}

/// SplitMix64: a small, seedable generator, so a schedule replays from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[lo, hi]` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGKILL of a worker, restarted a moment later on the same port.
    WorkerKill,
    /// SIGSTOP of a worker for longer than its lease TTL, then SIGCONT.
    WorkerPause,
    /// Immediate-mode (crash) stop of PostgreSQL, started again.
    PgRestart,
    /// Every connection to PostgreSQL stalls for a few seconds.
    Blackhole,
    /// An issuer's JWKS endpoint accepts and never answers.
    JwksHang,
    /// An issuer's JWKS endpoint answers 200 with garbage.
    JwksGarbage,
    /// An issuer rotates its key: the old `kid` is removed from its JWKS.
    JwksRotate,
    /// The reconcile core killed and restarted.
    OperatorRestart,
    /// A pool's capacity settings edited in its manifest.
    ManifestEdit,
}

/// The schedule of a run of `seconds`: each kind at least once, scaled to the length (a
/// 30-minute run: 50 kills, 10 pauses, 5 restarts, 5 black holes), in an order and at
/// times drawn from `rng`.
pub fn schedule(seconds: u64, rng: &mut Rng) -> Vec<(Duration, Fault)> {
    let per = |n: u64| (seconds * n / 1800).max(1);
    let mut faults = Vec::new();
    for (fault, count) in [
        (Fault::WorkerKill, per(50).max(3)),
        (Fault::WorkerPause, per(10)),
        (Fault::PgRestart, per(5)),
        (Fault::Blackhole, per(5)),
        (Fault::JwksHang, per(3)),
        (Fault::JwksGarbage, per(3)),
        (Fault::JwksRotate, per(3)),
        (Fault::OperatorRestart, per(6)),
        (Fault::ManifestEdit, per(6)),
    ] {
        faults.extend(std::iter::repeat_n(fault, count as usize));
    }
    // Fisher-Yates.
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Spread over the run, leaving the first 3 s and the last 10% quiet.
    let window = Duration::from_secs(seconds).mul_f64(0.9) - Duration::from_secs(3);
    let step = window / faults.len() as u32;
    faults
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let jitter = rng.millis(0, step.as_millis() as u64 / 2);
            (Duration::from_secs(3) + step * i as u32 + jitter, f)
        })
        .collect()
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub seed: u64,
    pub seconds: u64,
    pub issued: u64,
    pub revoked: u64,
    pub worker_kills: u64,
    pub pauses: u64,
    pub pg_restarts: u64,
    pub blackholes: u64,
    pub jwks_faults: u64,
    pub operator_restarts: u64,
    pub manifest_edits: u64,
    pub duplicates: u64,
    pub lost_revocations: u64,
    pub http_500: u64,
    /// 503s answered while no database fault (or the worker's own restart) was under way.
    pub unexpected_503: u64,
    /// Issuance retries (same `jti`) answered with another `(uri, idx)`.
    pub retry_mismatches: u64,
    /// Time from the end of the load until every acknowledged revocation was INVALID in
    /// every worker's lists.
    pub visible_after: Duration,
    /// Everything else that broke a promise, one line each.
    pub problems: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soak: seed={} seconds={} issued={} revoked={} worker_kills={} pauses={} pg_restarts={} blackholes={} duplicates={} lost_revocations={} http_500={}",
            self.seed,
            self.seconds,
            self.issued,
            self.revoked,
            self.worker_kills,
            self.pauses,
            self.pg_restarts,
            self.blackholes,
            self.duplicates,
            self.lost_revocations,
            self.http_500
        )
    }
}

impl Summary {
    /// Whether every promise held.
    pub fn clean(&self) -> bool {
        self.duplicates == 0
            && self.lost_revocations == 0
            && self.http_500 == 0
            && self.unexpected_503 == 0
            && self.retry_mismatches == 0
            && self.problems.is_empty()
    }
}

/// The lease TTL the workers run with: a pause lasts longer.
const LEASE_TTL_SECONDS: u64 = 3;
/// After a database fault ends, 503s are still expected this long (the workers notice the
/// database is back within their health heartbeat, and requests that waited on the fault
/// finish).
const RECOVERY_GRACE: Duration = Duration::from_secs(6);
/// How long a client retries one request before giving up on it.
const RETRY_FOR: Duration = Duration::from_secs(40);
/// Acknowledged revocations must be visible everywhere within this at the end.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);
/// ...and are counted lost only if still not visible after this.
const LOST_AFTER: Duration = Duration::from_secs(30);

/// When faults were under way, for telling an expected 503 from a broken promise.
#[derive(Debug)]
struct Disturbances {
    started: Instant,
    /// Milliseconds since `started` until which the database counts as disturbed.
    database_until: AtomicU64,
    database_now: AtomicBool,
    /// Per worker, the same for its own restart or pause.
    worker_until: Vec<AtomicU64>,
    worker_now: Vec<AtomicBool>,
}

impl Disturbances {
    fn new(workers: usize) -> Self {
        Self {
            started: Instant::now(),
            database_until: AtomicU64::new(0),
            database_now: AtomicBool::new(false),
            worker_until: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            worker_now: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn database(&self, on: bool) {
        self.database_now.store(on, Ordering::SeqCst);
        if !on {
            let until = self.ms() + RECOVERY_GRACE.as_millis() as u64;
            self.database_until.store(until, Ordering::SeqCst);
        }
    }

    fn worker(&self, w: usize, on: bool) {
        self.worker_now[w].store(on, Ordering::SeqCst);
        if !on {
            let until = self.ms() + RECOVERY_GRACE.as_millis() as u64;
            self.worker_until[w].store(until, Ordering::SeqCst);
        }
    }

    /// Whether a request to worker `w` sent at `sent` (ms) and answered now overlapped a
    /// fault that excuses a 503.
    fn excuses(&self, w: usize, sent: u64) -> bool {
        let now = self.ms();
        let overlaps = |on: &AtomicBool, until: &AtomicU64| {
            on.load(Ordering::SeqCst) || until.load(Ordering::SeqCst) >= sent.min(now)
        };
        overlaps(&self.database_now, &self.database_until)
            || overlaps(&self.worker_now[w], &self.worker_until[w])
    }
}

/// An issuer: its current key, and its JWKS endpoint, which faults can make hang, answer
/// garbage, or serve a rotated key.
struct Issuer {
    client_id: String,
    key: Mutex<Arc<SigningKey>>,
    mode: Arc<Mutex<JwksMode>>,
    jwks_url: String,
}

#[derive(Debug, Clone)]
enum JwksMode {
    Serve(Vec<u8>),
    Hang,
    Garbage,
}

impl Issuer {
    fn start(client_id: &str) -> Arc<Self> {
        let key = SigningKey::generate().expect("key");
        let doc = serde_json::to_vec(&jwks([&key])).expect("jwks");
        let mode = Arc::new(Mutex::new(JwksMode::Serve(doc)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let serving = mode.clone();
        std::thread::spawn(move || serve_jwks(listener, serving));
        Arc::new(Self {
            client_id: client_id.to_owned(),
            key: Mutex::new(Arc::new(key)),
            mode,
            jwks_url: format!("http://{addr}/jwks.json"),
        })
    }

    fn key(&self) -> Arc<SigningKey> {
        self.key.lock().map(|k| k.clone()).expect("key lock")
    }

    fn set_mode(&self, mode: JwksMode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    fn serve_current(&self) {
        let doc = serde_json::to_vec(&jwks([self.key().as_ref()])).expect("jwks");
        self.set_mode(JwksMode::Serve(doc));
    }

    /// A new key; the old `kid` leaves the JWKS at once.
    fn rotate(&self) {
        *self.key.lock().expect("key lock") = Arc::new(SigningKey::generate().expect("key"));
        self.serve_current();
    }

    /// A request JWT for `claims`, signed with the current key.
    fn sign(&self, claims: &serde_json::Value) -> String {
        self.key().sign_jwt("JWT", claims).expect("sign")
    }
}

fn serve_jwks(listener: std::net::TcpListener, mode: Arc<Mutex<JwksMode>>) {
    crate::service::serve_json(listener, move || {
        match mode.lock().map(|m| m.clone()) {
            Ok(JwksMode::Serve(doc)) => Some(doc),
            Ok(JwksMode::Garbage) => Some(b"<html>this is not a JWK Set".to_vec()),
            Ok(JwksMode::Hang) | Err(_) => {
                // Hold the connection without a word until the fault is over.
                while matches!(mode.lock().map(|m| m.clone()), Ok(JwksMode::Hang)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                None
            }
        }
    });
}

/// A pool's manifest.
fn manifest(
    name: &str,
    format: &str,
    base: &str,
    issuer: &Issuer,
    entries: u64,
    min_free: u64,
    lease: u64,
) -> String {
    Pool {
        namespace: "soak",
        entries_per_list: entries,
        min_free_entries: min_free,
        lease_size: lease,
        ..Pool::new(name, format, base, &issuer.client_id, &issuer.jwks_url)
    }
    .yaml("")
}

/// The pools: a Token pool and a Bitstring pool, each with its issuer; `edit` varies the
/// capacity settings.
fn write_manifests(dir: &Path, base: &str, issuers: &[Arc<Issuer>], edit: u64) {
    // Capacity sized as the README says (minFreeEntries: at least the peak issuance rate
    // times the provisioning delay, 10 s here): the token pool takes ~1,000/s, so a new
    // 20,000-entry list every ~20 s with 12-15 s of runway; the edits vary it.
    let (min_free, lease) = [(3_000, 100), (5_000, 50), (2_000, 200)][(edit % 3) as usize];
    std::fs::write(
        dir.join("token.yaml"),
        manifest(
            "token",
            "Token",
            base,
            &issuers[0],
            20_000,
            10_000 + min_free,
            lease,
        ),
    )
    .expect("write manifest");
    std::fs::write(
        dir.join("bits.yaml"),
        manifest(
            "bits",
            "Bitstring",
            base,
            &issuers[1],
            131_072,
            20_000 + min_free,
            lease,
        ),
    )
    .expect("write manifest");
}

/// The running processes.
struct Cluster {
    bin: PathBuf,
    pg: Mutex<PgServer>,
    proxy: Proxy,
    /// The workers' and operator's database URL (through the proxy).
    service_url: String,
    /// The test's own database URL (direct).
    direct_url: String,
    keys: tempfile::TempDir,
    manifests: tempfile::TempDir,
    ports: Vec<u16>,
    /// `None` while killed.
    workers: Mutex<Vec<Option<Process>>>,
    operator: Mutex<Option<Process>>,
}

impl Cluster {
    fn worker_url(&self, w: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[w])
    }

    fn spawn_worker(&self, w: usize) -> Process {
        let listen = format!("127.0.0.1:{}", self.ports[w]);
        let name = format!("worker-{w}");
        let keys = self.keys.path().display().to_string();
        let ttl = LEASE_TTL_SECONDS.to_string();
        Process::start(
            &name,
            &self.bin,
            &["worker"],
            &[
                ("DATABASE_URL", self.service_url.as_str()),
                ("LISTEN_ADDR", listen.as_str()),
                // Any free port: the soak reads no metrics.
                ("METRICS_ADDR", "127.0.0.1:0"),
                ("SIGNING_KEY_DIR", keys.as_str()),
                ("WORKER_ID", name.as_str()),
                ("JWKS_ALLOW_HTTP", "true"),
                ("JWKS_ALLOW_CIDRS", "127.0.0.0/8,::1/128"),
                ("JWKS_REFETCH_INTERVAL_SECONDS", "1"),
                ("LEASE_TTL_SECONDS", ttl.as_str()),
                ("LOG_FORMAT", "text"),
                ("RUST_LOG", "warn"),
            ],
        )
    }

    fn spawn_operator(&self) -> Process {
        Process::start(
            "operator",
            &self.bin,
            &[
                "operator",
                "--manifests",
                &self.manifests.path().display().to_string(),
            ],
            &[
                ("DATABASE_URL", self.service_url.as_str()),
                ("RUST_LOG", "warn"),
            ],
        )
    }

    /// Runs `f` on the database server off the async threads.
    async fn pg(self: &Arc<Self>, f: fn(&mut PgServer) -> statuslist_devdb::Result<()>) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut pg = this.pg.lock().expect("pg lock");
            f(&mut pg).expect("PostgreSQL stop/start");
        })
        .await
        .expect("pg task");
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Record {
    /// `jti` → `(client, uri, idx)` for every 200.
    issued: HashMap<String, (String, String, u64)>,
    /// `(uri, idx)` of every 202 revocation.
    revoked: HashSet<(String, u64)>,
    /// Every list URI an issuance answered with (known at the end without a pass over
    /// `issued`, so the end check's first fetches start at once).
    lists: HashSet<String>,
    http_500: u64,
    unexpected_503: u64,
    /// `(worker, 10 s bucket of the run)` → unexpected 503s there: where to look.
    unexpected_503_at: std::collections::BTreeMap<(usize, u64), u64>,
    retry_mismatches: u64,
    gave_up: u64,
    /// 503s during a fault, and 401/409 answers (sent again): reported, not failures.
    excused_503: u64,
    retried_401: u64,
    problems: Vec<String>,
}

impl Record {
    fn problem(&mut self, line: String) {
        if self.problems.len() < 50 {
            self.problems.push(line);
        }
    }
}

/// How one request ended.
enum Answer {
    Ok(serde_json::Value),
    /// Worth sending again (no answer, 503, a transient 401 or 409).
    Retry,
    Refused(u16, String),
}

struct Client {
    http: reqwest::Client,
    cluster: Arc<Cluster>,
    disturbances: Arc<Disturbances>,
    record: Arc<Mutex<Record>>,
}

impl Client {
    /// Sends a signed request to worker `w`, classifying the answer (and recording what
    /// breaks a promise).
    async fn send(&self, w: usize, path: &str, jwt: String) -> Answer {
        let sent = self.disturbances.ms();
        let url = format!("{}{path}", self.cluster.worker_url(w));
        let response = match self
            .http
            .post(&url)
            .header("content-type", "application/jwt")
            .body(jwt)
            .send()
            .await
        {
            Ok(r) => r,
            Err(_) => return Answer::Retry, // refused (a worker restarting), timed out
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        match status {
            200 | 202 => match serde_json::from_str(&body) {
                Ok(v) => Answer::Ok(v),
                Err(_) if status == 202 => Answer::Ok(serde_json::Value::Null),
                Err(e) => {
                    self.record.lock().expect("record").problem(format!(
                        "{path} {status} with a body that is not JSON: {e}: {body}"
                    ));
                    Answer::Retry
                }
            },
            503 => {
                if self.disturbances.excuses(w, sent) {
                    self.record.lock().expect("record").excused_503 += 1;
                } else {
                    let mut record = self.record.lock().expect("record");
                    record.unexpected_503 += 1;
                    *record
                        .unexpected_503_at
                        .entry((w, sent / 10_000 * 10))
                        .or_default() += 1;
                    record.problem(format!(
                        "{path} on worker-{w} at {sent} ms: 503 with no fault under way: {body}"
                    ));
                }
                Answer::Retry
            }
            // A key the worker has not fetched yet (rotation), or its issuer's JWKS
            // endpoint failing: the contract's 401; sent again later.
            401 | 409 => {
                self.record.lock().expect("record").retried_401 += 1;
                Answer::Retry
            }
            s if s >= 500 => {
                let mut record = self.record.lock().expect("record");
                record.http_500 += 1;
                record.problem(format!("{path} on worker-{w}: {s}: {body}"));
                Answer::Retry
            }
            s => Answer::Refused(s, body),
        }
    }

    /// Sends until answered for good (another worker each time), for up to `RETRY_FOR`.
    async fn until_answered(
        &self,
        rng: &mut Rng,
        path: &str,
        mut sign: impl FnMut() -> String,
    ) -> Option<Result<serde_json::Value, (u16, String)>> {
        let until = Instant::now() + RETRY_FOR;
        let workers = self.cluster.ports.len() as u64;
        while Instant::now() < until {
            let w = rng.below(workers) as usize;
            match self.send(w, path, sign()).await {
                Answer::Ok(v) => return Some(Ok(v)),
                Answer::Refused(s, body) => return Some(Err((s, body))),
                Answer::Retry => tokio::time::sleep(rng.millis(20, 200)).await, // backoff
            }
        }
        None
    }

    /// Issues one credential for `issuer` (and, now and then, sends the same `jti` again
    /// to see the same answer).
    async fn issue(&self, rng: &mut Rng, issuer: &Issuer) -> Option<(String, u64)> {
        let now = unix_now();
        let claims = json!({
            "iss": issuer.client_id,
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "statusExpiry": now + 30 * 86_400,
        });
        let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
        let first = self.issue_jti(rng, issuer, &claims).await?;
        {
            let mut record = self.record.lock().expect("record");
            if !record.lists.contains(&first.0) {
                record.lists.insert(first.0.clone());
            }
            if let Some(previous) = record.issued.insert(
                jti.clone(),
                (issuer.client_id.clone(), first.0.clone(), first.1),
            ) {
                record.problem(format!("jti {jti} recorded twice: {previous:?}"));
            }
        }
        if rng.chance(3) {
            // A client that lost the answer sends the same request again.
            let again = self.issue_jti(rng, issuer, &claims).await?;
            if again != first {
                let mut record = self.record.lock().expect("record");
                record.retry_mismatches += 1;
                record.problem(format!("jti {jti}: {first:?}, then {again:?}"));
            }
        }
        Some(first)
    }

    async fn issue_jti(
        &self,
        rng: &mut Rng,
        issuer: &Issuer,
        claims: &serde_json::Value,
    ) -> Option<(String, u64)> {
        let mut claims = claims.clone();
        let answer = self
            .until_answered(rng, "/issue", || {
                claims["iat"] = json!(unix_now());
                issuer.sign(&claims)
            })
            .await;
        match answer {
            Some(Ok(v)) => match (v["uri"].as_str(), v["idx"].as_u64()) {
                (Some(uri), Some(idx)) => Some((uri.to_owned(), idx)),
                _ => {
                    self.record
                        .lock()
                        .expect("record")
                        .problem(format!("/issue 200 without uri and idx: {v}"));
                    None
                }
            },
            Some(Err((s, body))) => {
                self.record
                    .lock()
                    .expect("record")
                    .problem(format!("/issue refused: {s}: {body}"));
                None
            }
            None => {
                self.record.lock().expect("record").gave_up += 1;
                None
            }
        }
    }

    async fn revoke(&self, rng: &mut Rng, issuer: &Issuer, uri: &str, idx: u64) {
        let answer = self
            .until_answered(rng, "/revoke", || {
                issuer.sign(&json!({
                    "iss": issuer.client_id,
                    "iat": unix_now(),
                    "jti": uuid::Uuid::new_v4().to_string(),
                    "uri": uri,
                    "idx": idx,
                }))
            })
            .await;
        let mut record = self.record.lock().expect("record");
        match answer {
            Some(Ok(_)) => {
                record.revoked.insert((uri.to_owned(), idx));
            }
            Some(Err((s, body))) => {
                record.problem(format!("/revoke {uri} {idx} refused: {s}: {body}"))
            }
            None => record.gave_up += 1,
        }
    }
}

/// A list URI's path on worker `w` (every worker serves every list).
fn on_worker(cluster: &Cluster, w: usize, uri: &str) -> String {
    let path = uri.splitn(4, '/').nth(3).unwrap_or_default();
    format!("{}/{path}", cluster.worker_url(w))
}

/// Fetches and verifies the list `uri` from worker `w`: `Ok(None)` when it is not served
/// right now (a restart, the database down for a list not cached).
async fn fetch_list(
    http: &reqwest::Client,
    cluster: &Cluster,
    w: usize,
    uri: &str,
) -> Result<Option<statuslist_format::verify::VerifiedList>, String> {
    Ok(fetch_list_at(http, cluster, w, uri)
        .await?
        .map(|(_, verified)| verified))
}

/// [`fetch_list`], with the instant the list's body had arrived.
async fn fetch_list_at(
    http: &reqwest::Client,
    cluster: &Cluster,
    w: usize,
    uri: &str,
) -> Result<Option<(Instant, statuslist_format::verify::VerifiedList)>, String> {
    let kind = ListFormat::of_uri(uri).ok_or_else(|| format!("{uri}: not a list URI"))?;
    let Ok(response) = http
        .get(on_worker(cluster, w, uri))
        .header("accept", kind.media_type())
        .send()
        .await
    else {
        return Ok(None);
    };
    let status = response.status().as_u16();
    let Ok(body) = response.text().await else {
        return Ok(None);
    };
    let received = Instant::now();
    match status {
        200 => {}
        503 | 404 => return Ok(None),
        s => return Err(format!("GET {uri} on worker-{w}: {s}: {body}")),
    }
    let Ok(set) = async {
        http.get(format!("{}/.well-known/jwks.json", cluster.worker_url(w)))
            .send()
            .await?
            .json::<Jwks>()
            .await
    }
    .await
    else {
        return Ok(None);
    };
    let verified =
        verify_list(uri, &body, &set).map_err(|e| format!("GET {uri} on worker-{w}: {e}"))?;
    if verified.exp.is_some_and(|exp| exp <= unix_now()) {
        return Err(format!("GET {uri} on worker-{w}: served past its exp"));
    }
    Ok(Some((received, verified)))
}

/// Runs one soak; `bin` is the `statuslist` binary.
pub async fn run(bin: &Path, profile: &Profile) -> Summary {
    eprintln!(
        "soak: seed={} seconds={} clients={} (replay: SOAK_SEED={} SOAK_SECONDS={})",
        profile.seed, profile.seconds, profile.clients, profile.seed, profile.seconds
    );
    let mut rng = Rng::new(profile.seed);
    let faults = schedule(profile.seconds, &mut rng);

    // PostgreSQL that keeps every acknowledged commit through a crash of its process.
    let pg = tokio::task::spawn_blocking(|| {
        PgServer::start_with(&ServerOptions {
            synchronous_commit: true,
            ..ServerOptions::default()
        })
    })
    .await
    .expect("pg task")
    .expect("start PostgreSQL");
    let direct_url = pg.url("postgres");
    let proxy = Proxy::start(format!("127.0.0.1:{}", pg.port()).parse().expect("address")).await;
    let service_url = format!("postgres://postgres@{}/postgres", proxy.addr);
    let keys = tempfile::tempdir().expect("dir");
    let (code, _, err) = crate::service::run(
        bin,
        &[
            "keygen",
            "--key",
            &keys.path().join("2026-01.pem").display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "keygen: {err}");
    let issuers = vec![Issuer::start("soak-token"), Issuer::start("soak-bits")];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let manifests = tempfile::tempdir().expect("dir");
    write_manifests(
        manifests.path(),
        &format!("http://127.0.0.1:{}", ports[0]),
        &issuers,
        0,
    );
    let mut cluster = Cluster {
        bin: bin.to_owned(),
        pg: Mutex::new(pg),
        proxy,
        service_url,
        direct_url,
        keys,
        manifests,
        ports,
        workers: Mutex::new(Vec::new()),
        operator: Mutex::new(None),
    };
    *cluster.operator.get_mut().expect("lock") = Some(cluster.spawn_operator());
    let workers = (0..3).map(|w| Some(cluster.spawn_worker(w))).collect();
    *cluster.workers.get_mut().expect("lock") = workers;
    let cluster = Arc::new(cluster);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    // Ready: both pools issue through every worker.
    let disturbances = Arc::new(Disturbances::new(3));
    let record = Arc::new(Mutex::new(Record::default()));
    let client = Arc::new(Client {
        http: http.clone(),
        cluster: cluster.clone(),
        disturbances: disturbances.clone(),
        record: record.clone(),
    });
    let warmup = Instant::now() + Duration::from_secs(60);
    for issuer in &issuers {
        let mut warm = Rng::new(profile.seed ^ 1);
        // Disturbances are "on" during warm-up: 503s while pools are provisioned are fine.
        disturbances.database(true);
        while client.issue(&mut warm, issuer).await.is_none() {
            assert!(Instant::now() < warmup, "the pools never issued");
        }
        disturbances.database(false);
    }
    disturbances.database_until.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(profile.seconds);

    // Issuers: issue, revoke a tenth of what they got, now and then send a jti again.
    let mut tasks = Vec::new();
    for c in 0..profile.clients {
        let (client, issuer) = (client.clone(), issuers[c % issuers.len()].clone());
        let mut rng = Rng::new(profile.seed.wrapping_add(1000 + c as u64));
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<(String, u64)> = Vec::new();
            while Instant::now() < deadline {
                if !mine.is_empty() && rng.chance(10) {
                    let (uri, idx) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                    client.revoke(&mut rng, &issuer, &uri, idx).await;
                } else if let Some(entry) = client.issue(&mut rng, &issuer).await {
                    mine.push(entry);
                }
            }
        }));
    }
    // A verifier: fetches lists from every worker, checking signatures and exp.
    let reader = {
        let (http, cluster, record) = (http.clone(), cluster.clone(), record.clone());
        let mut rng = Rng::new(profile.seed.wrapping_add(7));
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let uris: Vec<String> = {
                    let r = record.lock().expect("record");
                    r.issued
                        .values()
                        .take(64)
                        .map(|(_, u, _)| u.clone())
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .collect()
                };
                for uri in uris {
                    let w = rng.below(3) as usize;
                    if let Err(e) = fetch_list(&http, &cluster, w, &uri).await {
                        record.lock().expect("record").problem(e);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await; // pacing
            }
        })
    };

    // Faults.
    let mut summary = Summary {
        seed: profile.seed,
        seconds: profile.seconds,
        ..Summary::default()
    };
    let mut edits = 0;
    for (at, fault) in faults {
        let when = started + at;
        tokio::time::sleep_until(when.into()).await;
        if Instant::now() >= deadline {
            break;
        }
        let elapsed = started.elapsed().as_secs_f64();
        match fault {
            Fault::WorkerKill => {
                let w = rng.below(3) as usize;
                eprintln!("soak: {elapsed:>6.1} s {fault:?} worker-{w}");
                disturbances.worker(w, true);
                let killed = cluster.workers.lock().expect("workers")[w].take();
                if let Some(mut killed) = killed {
                    killed.signal("KILL");
                    let _ = tokio::task::spawn_blocking(move || {
                        killed.wait_exit(Duration::from_secs(5))
                    })
                    .await;
                }
                tokio::time::sleep(rng.millis(200, 2_000)).await; // down for a moment
                let fresh = cluster.spawn_worker(w);
                cluster.workers.lock().expect("workers")[w] = Some(fresh);
                wait_ready(&http, &cluster.worker_url(w), Duration::from_secs(30)).await;
                disturbances.worker(w, false);
                summary.worker_kills += 1;
            }
            Fault::WorkerPause => {
                let w = rng.below(3) as usize;
                eprintln!("soak: {elapsed:>6.1} s {fault:?} worker-{w}");
                disturbances.worker(w, true);
                signal_worker(&cluster, w, "STOP");
                tokio::time::sleep(
                    Duration::from_secs(LEASE_TTL_SECONDS) + rng.millis(1_000, 3_000),
                )
                .await;
                signal_worker(&cluster, w, "CONT");
                disturbances.worker(w, false);
                summary.pauses += 1;
            }
            Fault::PgRestart => {
                eprintln!("soak: {elapsed:>6.1} s {fault:?}");
                disturbances.database(true);
                cluster.pg(PgServer::kill).await;
                tokio::time::sleep(rng.millis(500, 3_000)).await; // down for a moment
                cluster.pg(PgServer::start_again).await;
                disturbances.database(false);
                summary.pg_restarts += 1;
            }
            Fault::Blackhole => {
                eprintln!("soak: {elapsed:>6.1} s {fault:?}");
                disturbances.database(true);
                cluster.proxy.pause();
                tokio::time::sleep(rng.millis(2_000, 5_000)).await;
                cluster.proxy.resume();
                disturbances.database(false);
                summary.blackholes += 1;
            }
            Fault::JwksHang | Fault::JwksGarbage | Fault::JwksRotate => {
                let issuer = &issuers[rng.below(2) as usize];
                eprintln!("soak: {elapsed:>6.1} s {fault:?} {}", issuer.client_id);
                match fault {
                    Fault::JwksHang => issuer.set_mode(JwksMode::Hang),
                    Fault::JwksGarbage => issuer.set_mode(JwksMode::Garbage),
                    _ => issuer.rotate(),
                }
                tokio::time::sleep(rng.millis(2_000, 4_000)).await;
                issuer.serve_current();
                summary.jwks_faults += 1;
            }
            Fault::OperatorRestart => {
                eprintln!("soak: {elapsed:>6.1} s {fault:?}");
                let old = cluster.operator.lock().expect("operator").take();
                if let Some(mut old) = old {
                    old.signal("KILL");
                    let _ =
                        tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(5)))
                            .await;
                }
                tokio::time::sleep(rng.millis(200, 2_000)).await; // down for a moment
                *cluster.operator.lock().expect("operator") = Some(cluster.spawn_operator());
                summary.operator_restarts += 1;
            }
            Fault::ManifestEdit => {
                eprintln!("soak: {elapsed:>6.1} s {fault:?}");
                edits += 1;
                write_manifests(
                    cluster.manifests.path(),
                    &cluster.worker_url(0),
                    &issuers,
                    edits,
                );
                summary.manifest_edits += 1;
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let _ = reader.await;
    let load_ended = Instant::now();

    // Visibility first, measured from the end of the load (the checks below read the
    // whole database and would count in it). Every (worker, list) pair is fetched at once,
    // before the checker builds its expectations (a pass over millions of issuances, about
    // a second of its own): what is timed is when each correct copy arrived.
    let record = std::mem::take(&mut *record.lock().expect("record"));
    let mut list_uris: Vec<&str> = record.lists.iter().map(String::as_str).collect();
    list_uris.sort_unstable();
    let pairs: Vec<(usize, &str)> = (0..3)
        .flat_map(|w| list_uris.iter().map(move |u| (w, *u)))
        .collect();
    let concurrent = pairs.len().max(1);
    let first_round: Vec<_> = futures_util::stream::iter(pairs.iter().map(|&(w, uri)| {
        let (http, cluster) = (&http, &cluster);
        async move {
            let began = load_ended.elapsed();
            (w, uri, began, fetch_list_at(http, cluster, w, uri).await)
        }
    }))
    .buffer_unordered(concurrent)
    .collect()
    .await;
    // Every acknowledged revocation INVALID, every other issued entry VALID, in the lists
    // every worker serves.
    let mut by_list: HashMap<&str, Vec<u64>> = HashMap::new();
    for (_, uri, idx) in record.issued.values() {
        by_list.entry(uri.as_str()).or_default().push(*idx);
    }
    if by_list.len() != list_uris.len() {
        summary.problems.push(format!(
            "{} lists issued from, {} recorded as lists",
            by_list.len(),
            list_uris.len()
        ));
    }
    let mut revoked_in: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (uri, idx) in &record.revoked {
        revoked_in.entry(uri.as_str()).or_default().insert(*idx);
    }
    // Each pair then polled on its own until its copy is correct, timed by when that
    // copy's body arrived (verification and checking are the client's time, not the
    // service's): one slow list does not delay the check of the others.
    let (by_list, revoked_in) = (&by_list, &revoked_in);
    let outcomes: Vec<_> =
        futures_util::stream::iter(first_round.into_iter().map(|(w, uri, began, first)| {
            let (http, cluster) = (&http, &cluster);
            async move {
                let mut errors = Vec::new();
                let mut problem = None;
                let mut fetches = 0u32;
                let mut first = Some(first);
                while load_ended.elapsed() < LOST_AFTER {
                    fetches += 1;
                    let fetched = match first.take() {
                        Some(fetched) => fetched,
                        None => fetch_list_at(http, cluster, w, uri).await,
                    };
                    match fetched {
                        Ok(Some((received, verified))) => {
                            errors.clear();
                            let revoked = revoked_in.get(uri);
                            for idx in by_list.get(uri).into_iter().flatten() {
                                let want = if revoked.is_some_and(|r| r.contains(idx)) {
                                    Status::INVALID
                                } else {
                                    Status::VALID
                                };
                                match verified.list.get(*idx) {
                                    Ok(s) if Status(s) == want => {}
                                    got => errors.push(format!(
                                        "{uri} {idx} on worker-{w}: {got:?}, want {want}"
                                    )),
                                }
                            }
                            if errors.is_empty() {
                                let at = received.saturating_duration_since(load_ended);
                                return (w, uri, began, Some(at), fetches, errors, problem);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => problem = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
                }
                (w, uri, began, None, fetches, errors, problem)
            }
        }))
        .buffer_unordered(concurrent)
        .collect()
        .await;
    let mut wrong: HashMap<(usize, &str), Vec<String>> = HashMap::new();
    let mut pending = Vec::new();
    let (mut seen_correct, mut refetched) = (Duration::ZERO, 0);
    let mut slowest: Vec<(Duration, Duration, u32, usize, &str)> = outcomes
        .iter()
        .filter_map(|(w, uri, began, at, fetches, ..)| Some(((*at)?, *began, *fetches, *w, *uri)))
        .collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (at, began, fetches, w, uri) in slowest.iter().take(5) {
        eprintln!(
            "soak: end check: worker-{w} {uri}: correct at {at:?}, first fetch at {began:?}, {fetches} fetches"
        );
    }
    for (w, uri, _, at, fetches, errors, problem) in outcomes {
        summary.problems.extend(problem);
        if fetches > 1 {
            refetched += 1;
        }
        match at {
            Some(at) => seen_correct = seen_correct.max(at),
            None if errors.is_empty() => pending.push((w, uri)),
            None => {
                wrong.insert((w, uri), errors);
            }
        }
    }
    eprintln!(
        "soak: end check: {} (worker, list) pairs, {refetched} not yet correct on their first fetch",
        pairs.len()
    );
    summary.visible_after = if pending.is_empty() && wrong.is_empty() {
        seen_correct
    } else {
        LOST_AFTER
    };
    for ((w, uri), errors) in &wrong {
        let lost = errors.iter().filter(|e| e.contains("want INVALID")).count();
        summary.lost_revocations += lost as u64;
        summary.problems.push(format!(
            "worker-{w} {uri}: {} wrong entries after {LOST_AFTER:?}, e.g. {}",
            errors.len(),
            errors[0]
        ));
    }
    if !pending.is_empty() {
        summary.problems.push(format!(
            "{} (worker, list) pairs never served in {LOST_AFTER:?}",
            pending.len()
        ));
    }

    // Every process healthy.
    for w in 0..3 {
        wait_ready(&http, &cluster.worker_url(w), Duration::from_secs(30)).await;
        let health = http
            .get(format!("{}/healthz/database", cluster.worker_url(w)))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if health.as_ref().ok() != Some(&200) {
            summary.problems.push(format!(
                "worker-{w}: /healthz/database {health:?} at the end"
            ));
        }
    }
    {
        let mut operator = cluster.operator.lock().expect("operator");
        if let Some(operator) = operator.as_mut()
            && let Some(status) = operator.try_wait()
        {
            summary.problems.push(format!(
                "the operator exited ({status}):\n{}",
                operator.output().join("\n")
            ));
        }
        let mut workers = cluster.workers.lock().expect("workers");
        for worker in workers.iter_mut().flatten() {
            if let Some(status) = worker.try_wait() {
                summary
                    .problems
                    .push(format!("{} exited ({status})", worker.name));
            }
        }
    }

    summary.issued = record.issued.len() as u64;
    summary.revoked = record.revoked.len() as u64;
    summary.http_500 = record.http_500;
    summary.unexpected_503 = record.unexpected_503;
    summary.retry_mismatches = record.retry_mismatches;
    summary.problems.extend(record.problems.iter().cloned());

    // No index handed out twice, and every one present with its client and jti.
    let mut holders: HashMap<(&str, u64), &str> = HashMap::new();
    for (jti, (_, uri, idx)) in &record.issued {
        if let Some(other) = holders.insert((uri.as_str(), *idx), jti.as_str()) {
            summary.duplicates += 1;
            summary
                .problems
                .push(format!("{uri} {idx} handed to jti {other} and {jti}"));
        }
    }
    let db = statuslist_store::connect_one(&cluster.direct_url)
        .await
        .expect("connect to the database");
    let rows = db
        .query(
            "SELECT l.uri, e.idx, e.client_id, e.jti::text, coalesce(rv.status, 0::smallint),
                    k.list_id IS NOT DISTINCT FROM e.list_id AND k.idx IS NOT DISTINCT FROM e.idx
                 FROM entries e JOIN lists l ON l.id = e.list_id
                 LEFT JOIN issuance_keys k ON k.client_id = e.client_id AND k.jti = e.jti
                 LEFT JOIN revocations rv ON rv.list_id = e.list_id AND rv.idx = e.idx",
            &[],
        )
        .await
        .expect("entries");
    // Every entry is named by its own idempotency key.
    let unkeyed = rows.iter().filter(|r| !r.get::<_, bool>(5)).count();
    if unkeyed > 0 {
        summary.problems.push(format!(
            "{unkeyed} entries without their (client_id, jti) key"
        ));
    }
    let stored: HashMap<(String, u64), (String, String, i16)> = rows
        .iter()
        .map(|r| {
            let idx: i64 = r.get(1);
            ((r.get(0), idx as u64), (r.get(2), r.get(3), r.get(4)))
        })
        .collect();
    for (jti, (client, uri, idx)) in &record.issued {
        match stored.get(&(uri.clone(), *idx)) {
            Some((c, j, _)) if c == client && j == jti => {}
            Some(other) => {
                summary.duplicates += 1;
                summary.problems.push(format!(
                    "{uri} {idx} issued to {client}/{jti}, stored for {other:?}"
                ));
            }
            None => summary
                .problems
                .push(format!("{uri} {idx} ({client}/{jti}) not stored")),
        }
    }
    for (uri, idx) in &record.revoked {
        if !matches!(stored.get(&(uri.clone(), *idx)), Some((_, _, 1))) {
            summary.lost_revocations += 1;
            summary.problems.push(format!(
                "revocation of {uri} {idx} acknowledged, not stored"
            ));
        }
    }

    if summary.visible_after > VISIBLE_WITHIN {
        eprintln!(
            "soak: revocations visible everywhere {:?} after the end (goal {VISIBLE_WITHIN:?})",
            summary.visible_after
        );
    }
    eprintln!(
        "soak: jwks_faults={} operator_restarts={} manifest_edits={} unexpected_503={} retry_mismatches={} gave_up={} excused_503={} retried_401={} visible_after_ms={}",
        summary.jwks_faults,
        summary.operator_restarts,
        summary.manifest_edits,
        summary.unexpected_503,
        summary.retry_mismatches,
        record.gave_up,
        record.excused_503,
        record.retried_401,
        summary.visible_after.as_millis()
    );
    if !record.unexpected_503_at.is_empty() {
        let at: Vec<String> = record
            .unexpected_503_at
            .iter()
            .map(|((w, t), n)| format!("worker-{w}@{t}s:{n}"))
            .collect();
        eprintln!(
            "soak: unexpected 503s by worker and 10 s of the run: {}",
            at.join(" ")
        );
    }
    if !summary.clean() {
        let workers = cluster.workers.lock().expect("workers");
        for worker in workers.iter().flatten() {
            let output = worker.output();
            let tail = output.len().saturating_sub(20);
            eprintln!(
                "--- {} (last lines)\n{}",
                worker.name,
                output[tail..].join("\n")
            );
        }
    }
    summary
}

fn signal_worker(cluster: &Cluster, w: usize, signal: &str) {
    if let Some(worker) = &cluster.workers.lock().expect("workers")[w] {
        worker.signal(signal);
    }
}
