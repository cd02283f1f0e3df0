//! Running on a real PostgreSQL that misbehaves, with real processes: stopped and started
//! again, black-holed by a proxy, started after the workers; and manifests that are
//! broken while the operator runs on them. What must hold: lists keep being served,
//! `/issue` answers 503 promptly and recovers by itself, and nothing stored is destroyed
//! by a bad file.

use std::path::Path;
use std::time::{Duration, Instant};

use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::eventually;
use statuslist_tests::process::Process;
use statuslist_tests::proxy::Proxy;
use statuslist_tests::service::{
    Issuer, Worker, check, get, issue, issue_eventually, operator_for_pool, operator_on_manifests,
    revoke,
};

const BIN: &str = env!("CARGO_BIN_EXE_statuslist");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// [`eventually`] for a yes/no condition; returns how long it took.
async fn within<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    eventually(timeout, what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
    started.elapsed()
}

async fn status(url: &str) -> Option<u16> {
    get(url).await.0
}

/// Replaces `path` at once (a reader never sees half a file).
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A pool, a worker and the reconcile core on `db_url` (the worker on `worker_db`),
/// with one entry issued and its list fetched once (so the worker has it cached).
struct Running {
    dir: tempfile::TempDir,
    issuer: Issuer,
    operator: Process,
    worker: Worker,
    uri: String,
    idx: u64,
}

async fn running(db_url: &str, worker_db: &str, worker_env: &[(&str, &str)]) -> Running {
    let issuer = Issuer::start(bin(), "outage-issuer").await;
    let worker = Worker::start(bin(), "worker-1", worker_db, worker_env);
    let (operator, dir) = operator_for_pool(bin(), db_url, &worker.url, &issuer);
    let (uri, idx) = issue_eventually(bin(), &worker.url, &issuer, Duration::from_secs(30)).await;
    within(Duration::from_secs(10), "list published", || async {
        check(bin(), &uri, idx).await.as_deref() == Ok("VALID")
    })
    .await;
    Running {
        dir,
        issuer,
        operator,
        worker,
        uri,
        idx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_keeps_lists_served_and_issuance_recovers() {
    let mut db = TestDb::with_own_server().await;
    let url = db.url.clone();
    let r = running(&url, &url, &[]).await;
    let server = db.server_mut().expect("own server");

    // A worker started while the database is down: alive, not ready (nothing cached).
    server.stop().expect("stop PostgreSQL");
    let cold = Worker::start(bin(), "worker-cold", &url, &[]);
    within(Duration::from_secs(10), "cold worker answers", || async {
        status(&format!("{}/healthz", cold.url)).await == Some(200)
    })
    .await;
    assert_eq!(status(&format!("{}/readyz", cold.url)).await, Some(503));
    // So does the reconcile core: it waits for the database instead of exiting.
    let mut cold_operator = operator_on_manifests(bin(), "operator-cold", &url, r.dir.path());
    cold_operator.wait_for_line("database not ready; retrying", Duration::from_secs(15));

    // The warm worker stays ready and serves its list; issuance fails fast with 503.
    assert_eq!(status(&format!("{}/readyz", r.worker.url)).await, Some(200));
    assert_eq!(status(&r.uri).await, Some(200));
    assert_eq!(check(bin(), &r.uri, r.idx).await.as_deref(), Ok("VALID"));
    let started = Instant::now();
    let refused = issue(bin(), &r.worker.url, &r.issuer).await;
    let refused_after = started.elapsed();
    assert_eq!(refused.expect_err("no database").0, Some(503));
    assert!(refused_after < Duration::from_secs(10), "{refused_after:?}");
    let (code, body) = get(&format!("{}/healthz/database", r.worker.url)).await;
    assert_eq!(code, Some(503), "{body}");
    assert!(
        get(&format!("{}/metrics", r.worker.metrics_url))
            .await
            .1
            .contains("statuslist_database_up 0")
    );

    // Back: both workers issue again, without a restart.
    server.start_again().expect("start PostgreSQL");
    let back = Instant::now();
    for w in [&r.worker, &cold] {
        within(
            Duration::from_secs(30),
            "issuance after the restart",
            || async { issue(bin(), &w.url, &r.issuer).await.is_ok() },
        )
        .await;
    }
    let recovered = back.elapsed();
    assert_eq!(status(&format!("{}/readyz", cold.url)).await, Some(200));
    cold_operator.wait_for_line("database ready", Duration::from_secs(15));
    assert!(
        cold_operator.try_wait().is_none(),
        "the operator kept running"
    );
    println!(
        "database stop: 503 after {refused_after:?}; issuance again {recovered:?} after the restart"
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_is_noticed_and_survived() {
    let db = TestDb::new().await;
    let hostport = db
        .url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the test database's URL")
        .to_owned();
    let upstream = {
        use std::net::ToSocketAddrs;
        hostport
            .to_socket_addrs()
            .expect("resolve")
            .find(|a| a.is_ipv4())
            .expect("an IPv4 address")
    };
    let proxy = Proxy::start(upstream).await;
    let worker_url = db.url.replacen(&hostport, &proxy.addr.to_string(), 1);
    let r = running(&db.url, &worker_url, &[("DB_OPERATION_TIMEOUT_MS", "2000")]).await;

    proxy.pause();
    let cut = Instant::now();
    // Requests answer 503 within the operation bound, and do not hang past it.
    let mut answers = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let outcome = issue(bin(), &r.worker.url, &r.issuer).await;
        answers.push((
            outcome.map(|_| 200).unwrap_or_else(|e| e.0.unwrap_or(0)),
            started.elapsed(),
        ));
    }
    assert!(answers.iter().all(|(code, _)| *code == 503), "{answers:?}");
    assert!(
        answers.iter().all(|(_, t)| *t < Duration::from_secs(6)),
        "{answers:?}"
    );
    within(
        Duration::from_secs(15),
        "the database is noticed unreachable",
        || async { status(&format!("{}/healthz/database", r.worker.url)).await == Some(503) },
    )
    .await;
    let noticed = cut.elapsed();
    // Once noticed, refusals are immediate.
    let started = Instant::now();
    let refused = issue(bin(), &r.worker.url, &r.issuer).await;
    let immediate = started.elapsed();
    assert_eq!(refused.expect_err("black-holed").0, Some(503));
    // Verifiers are still served.
    assert_eq!(status(&format!("{}/readyz", r.worker.url)).await, Some(200));
    assert_eq!(check(bin(), &r.uri, r.idx).await.as_deref(), Ok("VALID"));

    proxy.resume();
    let back = Instant::now();
    within(
        Duration::from_secs(30),
        "issuance after the black hole",
        || async { issue(bin(), &r.worker.url, &r.issuer).await.is_ok() },
    )
    .await;
    let recovered = back.elapsed();
    // A revocation goes through and is published: the whole path works again.
    revoke(bin(), &r.worker.url, &r.issuer, &r.uri, r.idx)
        .await
        .expect("revoke");
    within(Duration::from_secs(10), "revocation published", || async {
        check(bin(), &r.uri, r.idx).await.as_deref() == Ok("INVALID")
    })
    .await;
    println!(
        "black hole: first 503s after {:?}; noticed {noticed:?} after the cut, then 503 in {immediate:?}; issuance again {recovered:?} after it ended",
        answers.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_keep_every_pool_and_removal_applies_the_policy() {
    let db = TestDb::new().await;
    let mut r = running(&db.url, &db.url, &[]).await;
    let file = r.dir.path().join("pool.yaml");
    let good = std::fs::read_to_string(&file).expect("read");
    let entries = || db.count("SELECT count(*) FROM entries");
    let before = entries().await;
    assert!(before >= 1);

    // A document that fails validation: reported once, the pool kept as it was.
    write_atomic(
        &file,
        &good.replace("format: Token", "format: Token\n  bits: 3"),
    );
    r.operator
        .wait_for_line("StatusList manifest not applied", Duration::from_secs(15));
    issue(bin(), &r.worker.url, &r.issuer)
        .await
        .expect("the pool still issues");
    assert_eq!(entries().await, before + 1);
    assert_eq!(check(bin(), &r.uri, r.idx).await.as_deref(), Ok("VALID"));

    // Unparseable YAML: reported, nothing spins, nothing is deleted.
    write_atomic(
        &file,
        &good.replace("entriesPerList: 1000", "entriesPerList: [oops"),
    );
    r.operator
        .wait_for_line("not YAML", Duration::from_secs(15));
    let log_bytes = r.operator.output_bytes();
    assert!(log_bytes < 64 * 1024, "log grew to {log_bytes} bytes");
    issue(bin(), &r.worker.url, &r.issuer)
        .await
        .expect("the pool still issues");
    assert_eq!(check(bin(), &r.uri, r.idx).await.as_deref(), Ok("VALID"));
    // SIGTERM is honoured in this state.
    let exit = r.operator.terminate_within(Duration::from_secs(5));
    let problems = r
        .operator
        .output()
        .iter()
        .filter(|l| l.contains("not applied"))
        .count();
    assert_eq!(
        problems,
        2,
        "each problem logged once:\n{}",
        r.operator.output().join("\n")
    );

    // A new operator on the broken file deletes nothing either; fixed, the pool is
    // reconciled again; removed, its deletionPolicy (Delete) applies.
    let mut operator = operator_on_manifests(bin(), "operator-2", &db.url, r.dir.path());
    operator.wait_for_line("not YAML", Duration::from_secs(15));
    write_atomic(&file, &good);
    operator.wait_for_line(
        "every StatusList manifest is valid again",
        Duration::from_secs(15),
    );
    issue(bin(), &r.worker.url, &r.issuer)
        .await
        .expect("issuance after the fix");
    assert_eq!(entries().await, before + 3);
    std::fs::remove_file(&file).expect("remove");
    operator.wait_for_line("deletion policy applied", Duration::from_secs(15));
    assert_eq!(entries().await, 0);
    within(
        Duration::from_secs(10),
        "the deleted pool's list is gone",
        || async { status(&r.uri).await == Some(404) },
    )
    .await;
    println!(
        "manifests: operator log {log_bytes} bytes after the YAML error; SIGTERM exit in {exit:?}"
    );
}
