//! `statuslist-bench`: the benchmarks' load generator, a binary of its own (not in the
//! service's image). A load generator that runs as its own process (so the server's
//! figures are not flattered by sharing its runtime). Request JWTs are signed before the
//! clock starts (client crypto is not the server's cost); the run drives one kind of
//! request at a fixed concurrency over keep-alive connections for a fixed time, and
//! prints throughput, latency percentiles and every non-2xx status, as a table and as
//! one `bench:` line for scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use statuslist_format::SigningKey;

use statuslist_cli::client::{issue_claims, load_key, request_jwt, revoke_claims};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `POST /issue`.
    Issue,
    /// `POST /revoke` of entries issued first (unmeasured).
    Revoke,
    /// `GET --target` (a list, the JWKS, ...).
    Get,
    /// No HTTP: ES256 verifications per second on `--concurrency` threads (a ceiling).
    Verify,
    /// Revocation visibility: revoke through `--url`, then poll the list on `--observe`
    /// (another worker) until it says INVALID; the latency is from the 202 to that.
    Visibility,
    /// A fast loader, no HTTP: `--requests` issuances into `--pool` for `--client-id`,
    /// straight through the store as a worker issues them (leases, permutation, fencing,
    /// group commit), from `--concurrency` tasks, each holding a lease of its own. For
    /// filling a database before a measurement; the operator must be running to
    /// provision lists as they fill.
    Fill,
    /// No HTTP: the operator's whole pass over the pool of `--manifest` (apply, reclaim,
    /// mark full, retire, capacity, provision when needed), one after another for
    /// `--seconds`; the latency is one pass.
    Reconcile,
    /// No HTTP: a lease claim of `--pool` and its release, one after another for
    /// `--seconds`; the latency is the claim.
    Claim,
}

/// Drive load at a service (or its database) from this process and print throughput and
/// latency.
#[derive(Debug, clap::Parser)]
#[command(name = "statuslist-bench", version)]
pub struct BenchArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Base URL of the worker (issue, revoke).
    #[arg(long)]
    url: Option<String>,
    /// The client's private key (issue, revoke).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The client id (issue, revoke).
    #[arg(long)]
    client_id: Option<String>,
    /// What to GET (get).
    #[arg(long)]
    target: Option<String>,
    /// Base URL of the worker to read lists from (visibility).
    #[arg(long)]
    observe: Option<String>,
    /// `Accept` of the GETs.
    #[arg(long, default_value = "*/*")]
    accept: String,
    /// Send `Accept-Encoding: gzip` (most HTTP clients do).
    #[arg(long)]
    gzip: bool,
    /// Send `If-None-Match` with the ETag of a first GET (measures 304s).
    #[arg(long)]
    revalidate: bool,
    /// Requests in flight at once (threads, for verify).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to drive the load.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Requests prepared in advance (issue, revoke): the run ends early when all are sent.
    /// For fill: how many entries to issue.
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    /// The database to fill (fill).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The pool, as the store names it: `namespace/name` (fill, claim).
    #[arg(long)]
    pool: Option<String>,
    /// The StatusList manifest of the pool (reconcile).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Entries per request (revoke): above 1, `POST /revoke-batch` with this many entries
    /// each; the last line also gives entries per second.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Issue, revoke: instead of sending the signed requests, write their bodies to this
    /// file, one per line, and exit (for another load generator, `wrk` in scripts/bench:
    /// each body once). Revoke issues its entries first, as it does before a run.
    #[arg(long)]
    write_bodies: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    elapsed: Duration,
    /// Share of the machine's CPU time busy during the run (Linux `/proc/stat`), in %:
    /// near 100 says the cores, not a lock or the database's commit rate, set the pace.
    cpu_busy: Option<f64>,
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, usize>,
    errors: usize,
}

impl Run {
    /// The runs of every task, together.
    async fn gather(tasks: Vec<tokio::task::JoinHandle<Run>>, started: Instant) -> Run {
        let mut total = Run::default();
        for task in tasks {
            if let Ok(run) = task.await {
                total.latencies_us.extend(run.latencies_us);
                for (s, n) in run.statuses {
                    *total.statuses.entry(s).or_default() += n;
                }
                total.errors += run.errors;
            }
        }
        total.elapsed = started.elapsed();
        total
    }

    fn print(&self, args: &BenchArgs) {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i] as f64 / 1000.0
        };
        let done = sorted.len();
        let rps = done as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let ok: usize = self
            .statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s) || **s == 304)
            .map(|(_, n)| n)
            .sum();
        let other: Vec<String> = self
            .statuses
            .iter()
            .filter(|(s, _)| !((200..300).contains(*s) || **s == 304))
            .map(|(s, n)| format!("{s}:{n}"))
            .chain((self.errors > 0).then(|| format!("error:{}", self.errors)))
            .collect();
        let (mode, conc, secs) = (args.mode, args.concurrency, self.elapsed.as_secs_f64());
        let (p50, p90, p99, max) = (pct(0.50), pct(0.90), pct(0.99), pct(1.0));
        let other = |sep: &str| {
            if other.is_empty() {
                "-".to_owned()
            } else {
                other.join(sep)
            }
        };
        println!(
            "| mode | concurrency | requests | seconds | req/s | p50 ms | p90 ms | p99 ms | max ms | ok | other |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {mode:?} | {conc} | {done} | {secs:.1} | {rps:.0} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} | {ok} | {} |",
            other(" ")
        );
        println!(
            "bench: mode={mode:?} concurrency={conc} requests={done} seconds={secs:.2} rps={rps:.0} p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} max_ms={max:.2} ok={ok} other={} cpu_busy_pct={}",
            other(","),
            self.cpu_busy.map_or("-".to_owned(), |b| format!("{b:.0}"))
        );
        if args.mode == Mode::Revoke && args.batch > 1 {
            println!(
                "entries: batches of {} entries: {:.0} entries/s revoked",
                args.batch,
                ok as f64 * args.batch as f64 / secs.max(1e-9)
            );
        }
    }
}

/// An issuer driving a worker (issue, revoke, visibility): its key and `--requests`
/// issuance requests signed in advance.
struct Client {
    url: String,
    key: Arc<SigningKey>,
    client_id: String,
    http: reqwest::Client,
    issues: Arc<Vec<Request>>,
}

impl Client {
    fn prepare(args: &BenchArgs) -> Result<Self, String> {
        let url = need(&args.url, "--url", args.mode)?
            .trim_end_matches('/')
            .to_owned();
        let key = Arc::new(load_key(need(&args.key, "--key", args.mode)?)?);
        let client_id = need(&args.client_id, "--client-id", args.mode)?.clone();
        let issues = sign_all(&key, args.requests, |_| issue_claims(&client_id, None))?
            .into_iter()
            .map(|jwt| Request {
                url: format!("{url}/issue"),
                body: Some(jwt),
            })
            .collect();
        Ok(Self {
            http: http(args.concurrency)?,
            url,
            key,
            client_id,
            issues: Arc::new(issues),
        })
    }
}

/// One request to send: method, path or URL, body.
#[derive(Debug, Clone)]
struct Request {
    url: String,
    body: Option<String>,
}

fn need<'a, T>(value: &'a Option<T>, flag: &str, mode: Mode) -> Result<&'a T, String> {
    value
        .as_ref()
        .ok_or_else(|| format!("--mode {mode:?} needs {flag}").to_lowercase())
}

fn http(concurrency: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .http1_only()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Signs `n` JWTs of `claims(i)` on every core.
fn sign_all(
    key: &Arc<SigningKey>,
    n: usize,
    claims: impl Fn(usize) -> serde_json::Value + Sync,
) -> Result<Vec<String>, String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let (key, claims) = (key.clone(), &claims);
                scope.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(|i| request_jwt(&key, key.kid(), &claims(i)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| "signing thread panicked".to_owned())??,
            );
        }
        Ok(out)
    })
}

/// Sends `requests` (each at most once) from `concurrency` tasks until they run out or
/// `duration` passes.
async fn drive(
    client: &reqwest::Client,
    requests: Arc<Vec<Request>>,
    headers: reqwest::header::HeaderMap,
    concurrency: usize,
    duration: Duration,
    cycle: bool,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_times();
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, requests, next, headers) = (
                client.clone(),
                requests.clone(),
                next.clone(),
                headers.clone(),
            );
            tokio::spawn(async move {
                let mut run = Run::default();
                loop {
                    if Instant::now() >= until {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(req) = (if cycle {
                        requests.get(i % requests.len().max(1))
                    } else {
                        requests.get(i)
                    }) else {
                        break;
                    };
                    let t = Instant::now();
                    let builder = match &req.body {
                        Some(body) => client
                            .post(&req.url)
                            .header("content-type", "application/jwt")
                            .body(body.clone()),
                        None => client.get(&req.url),
                    };
                    match builder.headers(headers.clone()).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            // Read the whole body, as a client would.
                            let _ = response.bytes().await;
                            run.latencies_us.push(t.elapsed().as_micros() as u64);
                            *run.statuses.entry(status).or_default() += 1;
                        }
                        Err(_) => run.errors += 1,
                    }
                }
                run
            })
        })
        .collect();
    let mut run = Run::gather(tasks, started).await;
    run.cpu_busy = cpu_before
        .zip(cpu_times())
        .and_then(|((busy0, all0), (busy1, all1))| {
            (all1 > all0).then(|| 100.0 * busy1.saturating_sub(busy0) as f64 / (all1 - all0) as f64)
        });
    run
}

/// `(busy, total)` CPU ticks of the whole machine so far, from `/proc/stat` (Linux);
/// idle and iowait are not busy.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Issues `--requests` entries through the store (see [`Mode::Fill`]). The run is not
/// bounded by `--seconds`: it ends when every entry is issued.
async fn fill(args: &BenchArgs) -> Result<Run, String> {
    use statuslist_store::{IssueRequest, StoreError};
    let pool = need(&args.pool, "--pool", args.mode)?.clone();
    let client_id = need(&args.client_id, "--client-id", args.mode)?.clone();
    let store = bench_store(args).await?;
    let left = Arc::new(std::sync::atomic::AtomicI64::new(args.requests as i64));
    let expiry = statuslist_format::unix_now() + 30 * 86_400;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|k| {
            let (store, pool, client_id, left) =
                (store.clone(), pool.clone(), client_id.clone(), left.clone());
            tokio::spawn(async move {
                let mut run = Run::default();
                let holder = format!("fill-{}-{k}", std::process::id());
                let mut lease = None;
                let mut dry_since: Option<Instant> = None;
                while left.fetch_sub(1, Ordering::Relaxed) > 0 {
                    if lease.is_none() {
                        match store
                            .claim_lease(&pool, &holder, Duration::from_secs(600))
                            .await
                        {
                            Ok(Some(l)) => {
                                lease = Some(l);
                                dry_since = None;
                            }
                            Ok(None) | Err(_) => {
                                // The operator is provisioning: wait for it (a minute at most).
                                left.fetch_add(1, Ordering::Relaxed);
                                let since = *dry_since.get_or_insert_with(Instant::now);
                                if since.elapsed() > Duration::from_secs(60) {
                                    run.errors += 1;
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        }
                    }
                    let Some(held) = &lease else { continue };
                    let req = IssueRequest {
                        client_id: client_id.clone(),
                        jti: uuid::Uuid::new_v4(),
                        status_expiry: expiry,
                    };
                    let t = Instant::now();
                    match store.issue(held, &req).await {
                        Ok(_) => {
                            run.latencies_us.push(t.elapsed().as_micros() as u64);
                            *run.statuses.entry(200).or_default() += 1;
                        }
                        Err(StoreError::LeaseExhausted) => {
                            left.fetch_add(1, Ordering::Relaxed);
                            let _ = store.release_lease(held).await;
                            lease = None;
                        }
                        Err(_) => run.errors += 1,
                    }
                }
                if let Some(held) = &lease {
                    let _ = store.release_lease(held).await;
                }
                run
            })
        })
        .collect();
    Ok(Run::gather(tasks, started).await)
}

/// A store for the no-HTTP modes.
async fn bench_store(args: &BenchArgs) -> Result<statuslist_store::Store, String> {
    let url = need(&args.database_url, "--database-url", args.mode)?;
    let mut config = statuslist_store::StoreConfig::new(url);
    config.max_connections = args.concurrency.clamp(4, 64);
    config.wait_timeout = Duration::from_secs(30);
    config.operation_timeout = Duration::from_secs(30);
    statuslist_store::Store::connect(&config)
        .await
        .map_err(|e| e.to_string())
}

/// Reconcile passes or lease claims, one at a time, for `duration` (see [`Mode`]).
async fn store_ops(args: &BenchArgs, duration: Duration) -> Result<Run, String> {
    let store = bench_store(args).await?;
    let mut run = Run::default();
    let started = Instant::now();
    if args.mode == Mode::Reconcile {
        let path = need(&args.manifest, "--manifest", args.mode)?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let scan = statuslist_operator::manifests::scan_text(&path.display().to_string(), &text);
        let (pool, _) = scan.pools.into_iter().next().ok_or_else(|| {
            format!(
                "{}: no valid StatusList: {}",
                path.display(),
                scan.invalid.join("; ")
            )
        })?;
        while started.elapsed() < duration {
            let t = Instant::now();
            match statuslist_operator::core::reconcile_pool(
                &store,
                &pool,
                statuslist_format::unix_now(),
            )
            .await
            {
                Ok(_) => {
                    run.latencies_us.push(t.elapsed().as_micros() as u64);
                    *run.statuses.entry(200).or_default() += 1;
                }
                Err(_) => run.errors += 1,
            }
        }
    } else {
        let pool = need(&args.pool, "--pool", args.mode)?;
        let holder = format!("claim-bench-{}", std::process::id());
        while started.elapsed() < duration {
            let t = Instant::now();
            match store
                .claim_lease(pool, &holder, Duration::from_secs(60))
                .await
            {
                Ok(Some(lease)) => {
                    run.latencies_us.push(t.elapsed().as_micros() as u64);
                    *run.statuses.entry(200).or_default() += 1;
                    if store.release_lease(&lease).await.is_err() {
                        run.errors += 1;
                    }
                }
                Ok(None) => *run.statuses.entry(503).or_default() += 1,
                Err(_) => run.errors += 1,
            }
        }
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

fn verify_ceiling(threads: usize, duration: Duration) -> Result<Run, String> {
    let key = SigningKey::generate().map_err(|e| e.to_string())?;
    let jwt = request_jwt(&key, key.kid(), &issue_claims("bench", None))?;
    let (input, signature) = jwt
        .rsplit_once('.')
        .ok_or_else(|| "malformed JWT".to_owned())?;
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .map_err(|e| e.to_string())?;
    let verifier = key.verifying_key().clone();
    let started = Instant::now();
    let counts: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (verifier, signature) = (&verifier, &signature);
                scope.spawn(move || {
                    let mut n = 0;
                    while started.elapsed() < duration {
                        for _ in 0..64 {
                            if verifier.verify_raw(input.as_bytes(), signature).is_ok() {
                                n += 1;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    let total: usize = counts.iter().sum();
    Ok(Run {
        elapsed: started.elapsed(),
        // One synthetic latency per verification: the mean (the table's req/s is the point).
        latencies_us: vec![0; total],
        statuses: BTreeMap::from([(200, total)]),
        errors: 0,
        cpu_busy: None,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::Parser;
    match run(BenchArgs::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statuslist-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: BenchArgs) -> Result<(), String> {
    let duration = Duration::from_secs_f64(args.seconds.max(0.1));
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let run = match args.mode {
        Mode::Verify => {
            let (threads, d) = (args.concurrency, duration);
            tokio::task::spawn_blocking(move || verify_ceiling(threads, d))
                .await
                .map_err(|e| e.to_string())??
        }
        Mode::Get => {
            let target = need(&args.target, "--target", args.mode)?.clone();
            let client = http(args.concurrency)?;
            let mut headers = reqwest::header::HeaderMap::new();
            let value = |v: &str| {
                reqwest::header::HeaderValue::from_str(v).map_err(|e| format!("{v}: {e}"))
            };
            headers.insert(reqwest::header::ACCEPT, value(&args.accept)?);
            if args.gzip {
                headers.insert(reqwest::header::ACCEPT_ENCODING, value("gzip")?);
            }
            if args.revalidate {
                let first = client
                    .get(&target)
                    .headers(headers.clone())
                    .send()
                    .await
                    .map_err(|e| format!("{target}: {e}"))?;
                let etag = first
                    .headers()
                    .get(reqwest::header::ETAG)
                    .cloned()
                    .ok_or_else(|| format!("{target}: no ETag to revalidate with"))?;
                headers.insert(reqwest::header::IF_NONE_MATCH, etag);
            }
            let requests = Arc::new(vec![Request {
                url: target,
                body: None,
            }]);
            drive(&client, requests, headers, args.concurrency, duration, true).await
        }
        Mode::Visibility => visibility(&args, duration).await?,
        Mode::Fill => fill(&args).await?,
        Mode::Reconcile | Mode::Claim => store_ops(&args, duration).await?,
        Mode::Issue | Mode::Revoke => {
            let Client {
                url,
                key,
                client_id,
                http: client,
                issues: issue_requests,
            } = Client::prepare(&args)?;
            if args.mode == Mode::Issue {
                if let Some(file) = &args.write_bodies {
                    return write_bodies(file, &issue_requests);
                }
                drive(
                    &client,
                    issue_requests,
                    Default::default(),
                    args.concurrency,
                    duration,
                    false,
                )
                .await
            } else {
                let entries = interleave_by_list(
                    issue_all(&client, &issue_requests, args.concurrency).await?,
                );
                let lists: std::collections::HashSet<&str> =
                    entries.iter().map(|(uri, _)| uri.as_str()).collect();
                eprintln!(
                    "bench: {} entries issued to revoke, over {} lists",
                    entries.len(),
                    lists.len()
                );
                let (revokes, path) = if args.batch > 1 {
                    let chunks: Vec<&[(String, u64)]> = entries.chunks(args.batch).collect();
                    let signed = sign_all(&key, chunks.len(), |i| {
                        let list: Vec<serde_json::Value> = chunks[i]
                            .iter()
                            .map(|(uri, idx)| serde_json::json!({"uri": uri, "idx": idx}))
                            .collect();
                        serde_json::json!({
                            "iss": client_id,
                            "iat": statuslist_format::unix_now(),
                            "jti": uuid::Uuid::new_v4().to_string(),
                            "entries": list,
                        })
                    })?;
                    (signed, "/revoke-batch")
                } else {
                    let signed = sign_all(&key, entries.len(), |i| {
                        let (uri, idx) = &entries[i];
                        revoke_claims(&client_id, uri, *idx)
                    })?;
                    (signed, "/revoke")
                };
                let requests = Arc::new(
                    revokes
                        .into_iter()
                        .map(|jwt| Request {
                            url: format!("{url}{path}"),
                            body: Some(jwt),
                        })
                        .collect::<Vec<_>>(),
                );
                if let Some(file) = &args.write_bodies {
                    return write_bodies(file, &requests);
                }
                drive(
                    &client,
                    requests,
                    Default::default(),
                    args.concurrency,
                    duration,
                    false,
                )
                .await
            }
        }
    };
    run.print(&args);
    Ok(())
}

/// The requests' bodies, one per line (a compact JWS has no newline).
fn write_bodies(file: &std::path::Path, requests: &[Request]) -> Result<(), String> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?,
    );
    for body in requests.iter().filter_map(|r| r.body.as_deref()) {
        writeln!(out, "{body}").map_err(|e| format!("{}: {e}", file.display()))?;
    }
    out.flush()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    eprintln!(
        "bench: {} request bodies written to {}",
        requests.len(),
        file.display()
    );
    Ok(())
}

/// Sends every issuance (unmeasured) and returns the `(uri, idx)` answers.
async fn issue_all(
    client: &reqwest::Client,
    requests: &Arc<Vec<Request>>,
    concurrency: usize,
) -> Result<Vec<(String, u64)>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while let Some(req) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let body = req.body.clone().unwrap_or_default();
                    // A 503 (capacity being provisioned) is retried with the same jti, as
                    // the contract allows.
                    let mut tries = 0;
                    let text = loop {
                        let response = client
                            .post(&req.url)
                            .header("content-type", "application/jwt")
                            .body(body.clone())
                            .send()
                            .await
                            .map_err(|e| format!("issue: {e}"))?;
                        let status = response.status();
                        let text = response.text().await.map_err(|e| format!("issue: {e}"))?;
                        if status.is_success() {
                            break text;
                        }
                        tries += 1;
                        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE || tries > 200 {
                            return Err(format!("issue: {status}: {text}"));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    let v: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| format!("issue: {e}"))?;
                    match (v["uri"].as_str(), v["idx"].as_u64()) {
                        (Some(uri), Some(idx)) => out.push((uri.to_owned(), idx)),
                        _ => return Err(format!("issue: unexpected answer {text}")),
                    }
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// The entries taken one list at a time in turn (each list's in issuance order), so
/// that revocations sent in this order spread over every list at once: in issuance order,
/// the revocations in flight at any moment sit in one or two leases, one or two lists.
fn interleave_by_list(entries: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let total = entries.len();
    let mut by_list: std::collections::BTreeMap<String, std::collections::VecDeque<u64>> =
        Default::default();
    for (uri, idx) in entries {
        by_list.entry(uri).or_default().push_back(idx);
    }
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for (uri, idxs) in by_list.iter_mut() {
            if let Some(idx) = idxs.pop_front() {
                out.push((uri.clone(), idx));
            }
        }
    }
    out
}

/// Revocation → INVALID on another worker, one probe per task at a time.
async fn visibility(args: &BenchArgs, duration: Duration) -> Result<Run, String> {
    let observe = need(&args.observe, "--observe", args.mode)?
        .trim_end_matches('/')
        .to_owned();
    let Client {
        url,
        key,
        client_id,
        http: client,
        issues: issue_requests,
    } = Client::prepare(args)?;
    let entries = Arc::new(issue_all(&client, &issue_requests, args.concurrency).await?);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + duration;
    let jwks_url = format!("{observe}/.well-known/jwks.json");
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, entries, next, key, client_id, url, observe, jwks_url) = (
                client.clone(),
                entries.clone(),
                next.clone(),
                key.clone(),
                client_id.clone(),
                url.clone(),
                observe.clone(),
                jwks_url.clone(),
            );
            tokio::spawn(async move {
                let mut run = Run::default();
                while Instant::now() < until {
                    let Some((uri, idx)) = entries.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let claims = revoke_claims(&client_id, uri, *idx);
                    let Ok(jwt) = request_jwt(&key, key.kid(), &claims) else {
                        run.errors += 1;
                        continue;
                    };
                    let answer = client
                        .post(format!("{url}/revoke"))
                        .header("content-type", "application/jwt")
                        .body(jwt)
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().as_u16() == 202 => {}
                        Ok(r) => {
                            *run.statuses.entry(r.status().as_u16()).or_default() += 1;
                            continue;
                        }
                        Err(_) => {
                            run.errors += 1;
                            continue;
                        }
                    }
                    let acked = Instant::now();
                    let path = uri
                        .rsplit_once("/t/")
                        .map(|(_, id)| format!("{observe}/t/{id}"));
                    let Some(from) = path else {
                        run.errors += 1;
                        continue;
                    };
                    loop {
                        let status = statuslist_cli::client::verified_status(
                            &client, uri, &from, *idx, &jwks_url,
                        )
                        .await;
                        if matches!(status, Ok(s) if s == statuslist_format::Status::INVALID) {
                            run.latencies_us.push(acked.elapsed().as_micros() as u64);
                            *run.statuses.entry(200).or_default() += 1;
                            break;
                        }
                        if acked.elapsed() > Duration::from_secs(30) {
                            run.errors += 1;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                run
            })
        })
        .collect();
    Ok(Run::gather(tasks, started).await)
}

#[cfg(test)]
mod tests {
    use super::interleave_by_list;

    #[test]
    fn interleaving_takes_each_list_in_turn_and_keeps_every_entry() {
        let e = |uri: &str, idx| (uri.to_owned(), idx);
        let entries = vec![
            e("a", 1),
            e("a", 2),
            e("a", 3),
            e("b", 7),
            e("c", 9),
            e("b", 8),
        ];
        assert_eq!(
            interleave_by_list(entries),
            vec![
                e("a", 1),
                e("b", 7),
                e("c", 9),
                e("a", 2),
                e("b", 8),
                e("a", 3)
            ]
        );
        assert!(interleave_by_list(Vec::new()).is_empty());
    }
}
