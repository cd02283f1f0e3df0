//! What a hostile tenant or anonymous traffic can make the worker do (see SECURITY.md):
//! JWKS fetches to internal addresses, database load from unknown list ids and JWKS
//! requests, issuer-cache flooding, one pool's stuck claim delaying another pool,
//! requests past the time bound.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use statuslist_format::SigningKey;
use statuslist_store::ListFormat;
use statuslist_worker::egress::{Egress, Lookup};
use statuslist_worker::jwks::{FetchError, JwksSettings};

/// A listener that counts the connections made to it (and answers none).
async fn counting_listener(ip: &str) -> Option<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.ok()?;
    let addr = listener.local_addr().ok()?;
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    Some((addr, count))
}

/// Names that resolve to the given addresses, as a hostile DNS zone would make them.
fn zone(names: &[(&str, &str)]) -> Lookup {
    let names: Vec<(String, IpAddr)> = names
        .iter()
        .map(|(n, a)| ((*n).to_owned(), a.parse().expect("address")))
        .collect();
    Arc::new(move |host: String| {
        let found: Vec<IpAddr> = names
            .iter()
            .filter(|(n, _)| *n == host)
            .map(|(_, a)| *a)
            .collect();
        Box::pin(async move { Ok(found) })
    })
}

fn jwks_settings(allow_cidrs: Vec<ipnet::IpNet>) -> JwksSettings {
    JwksSettings {
        timeout: Duration::from_secs(2),
        allow_http: true,
        allow_cidrs,
        ..JwksSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uris_that_reach_internal_addresses_are_refused_without_a_connection() {
    let env = Env::start().await;
    let (v4, v4_count) = counting_listener("127.0.0.1").await.expect("loopback");
    // IPv6 loopback may be absent on a build machine: then its cases are skipped.
    let v6 = counting_listener("::1").await;
    let p4 = v4.port();
    let p6 = v6.as_ref().map_or(1, |(a, _)| a.port());
    let lookup = zone(&[
        ("loopback.test", "127.0.0.1"),
        ("v6.test", "::1"),
        ("intranet.test", "10.0.0.1"),
        ("metadata.test", "169.254.169.254"),
        ("mixed.test", "10.0.0.1"),
        ("mixed.test", "127.0.0.1"),
    ]);
    let mut uris = vec![
        format!("http://127.0.0.1:{p4}/jwks"),
        format!("http://loopback.test:{p4}/jwks"),
        format!("http://[::ffff:127.0.0.1]:{p4}/jwks"),
        format!("http://10.0.0.1:{p4}/jwks"),
        format!("http://intranet.test:{p4}/jwks"),
        "http://169.254.169.254/latest/meta-data/iam".to_owned(),
        "http://metadata.test/computeMetadata/v1/".to_owned(),
        format!("http://mixed.test:{p4}/jwks"),
    ];
    if v6.is_some() {
        uris.push(format!("http://[::1]:{p6}/jwks"));
        uris.push(format!("http://v6.test:{p6}/jwks"));
    }

    // A worker with no egress allowance, its names resolved by the zone above.
    let guarded = TestWorker::start_with(
        &env.db.url,
        vec![SigningKey::generate().expect("key")],
        "guarded",
        WorkerOptions {
            jwks: jwks_settings(Vec::new()),
            egress: Some(Egress::new(Vec::new()).with_lookup(lookup.clone())),
            ..WorkerOptions::default()
        },
    )
    .await;
    let clients: Vec<(String, String)> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| (format!("tenant-{i}"), uri.clone()))
        .collect();
    let registered: Vec<(&str, String)> = clients
        .iter()
        .map(|(c, u)| (c.as_str(), u.clone()))
        .collect();
    env.db
        .store
        .apply_pool(&spec(
            "ssrf",
            ListFormat::Token,
            &guarded.url,
            &registered,
            1_000,
            100,
        ))
        .await
        .expect("pool");

    for (client, uri) in &clients {
        // Signed with some key under the kid the endpoint would be asked for.
        let claims = json!({"iss": client, "iat": statuslist_format::unix_now(),
            "jti": uuid::Uuid::new_v4().to_string(), "statusExpiry": statuslist_format::unix_now() + 3600});
        let jwt = env.issuers.sign("a", &Issuers::header("a"), &claims);
        let (status, body) = post_to(
            &env.http,
            &guarded.url,
            "/issue",
            Some("application/jwt"),
            jwt,
        )
        .await;
        assert_eq!(status, 401, "{uri}: {body}");
        match guarded.state.jwks.check(uri).await {
            Err(FetchError::Refused(_)) => {}
            Err(FetchError::Http(m)) if m.contains("may not reach") => {}
            other => panic!("{uri}: not refused by the egress policy: {other:?}"),
        }
    }
    assert_eq!(
        v4_count.load(Ordering::SeqCst),
        0,
        "a connection to 127.0.0.1"
    );
    if let Some((_, count)) = &v6 {
        assert_eq!(count.load(Ordering::SeqCst), 0, "a connection to ::1");
    }

    // The same names with loopback allowed do connect: the listeners would have seen it.
    let allowed = statuslist_worker::jwks::JwksCache::with_egress(
        jwks_settings(statuslist_worker::egress::loopback()),
        Egress::new(statuslist_worker::egress::loopback()).with_lookup(lookup),
    )
    .expect("jwks client");
    let _ = allowed
        .check(&format!("http://loopback.test:{p4}/jwks"))
        .await;
    let _ = allowed.check(&format!("http://mixed.test:{p4}/jwks")).await;
    assert!(
        v4_count.load(Ordering::SeqCst) >= 2,
        "allowed loopback names connect (mixed.test to its loopback address)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_list_ids_and_jwks_requests_cost_a_bounded_number_of_queries() {
    let env = Env::start().await;
    let (uri, _) = env.issue("a").await;
    let path = uri
        .strip_prefix(&env.worker.url)
        .expect("served here")
        .to_owned();
    eventually_every(
        ms(50),
        Duration::from_secs(30),
        "the list published",
        || async { (env.get_status(&path).await == 200).then_some(()) },
    )
    .await;
    let cache = &env.worker.state.cache;

    // 10,000 GETs of well-formed ids that name no list.
    let before = cache.queries();
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(0..10_000u64)
        .map(|i| {
            let path = format!("/t/{:012X}", 0xA000_0000_0000u64 + i * 7919);
            let env = &env;
            async move { env.get_status(&path).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let unknown_queries = cache.queries() - before;
    let seconds = started.elapsed().as_secs();
    assert!(statuses.iter().all(|s| *s == 404), "unknown ids are 404");
    // One read of the servable ids per 5 s at most (plus the first).
    assert!(
        unknown_queries <= 2 + seconds / 5,
        "{unknown_queries} queries for 10,000 unknown ids in {seconds} s"
    );
    assert_eq!(
        env.get_status(&path).await,
        200,
        "the real list still served"
    );

    // 2,000 JWKS requests.
    let before = cache.queries();
    let started = Instant::now();
    for _ in 0..2_000 {
        assert_eq!(env.get_status("/.well-known/jwks.json").await, 200);
    }
    let jwks_queries = cache.queries() - before;
    let seconds = started.elapsed().as_secs();
    assert!(
        jwks_queries <= 2 + seconds / 5,
        "{jwks_queries} queries for 2,000 JWKS requests in {seconds} s"
    );

    // A cold worker asked for one list by 500 clients at once reads it once.
    let cold = TestWorker::start(
        &env.db.url,
        vec![SigningKey::generate().expect("key")],
        "cold",
    )
    .await;
    // Traffic reaches a worker once it is ready (subscribed to notifications, whose
    // first arrival empties the cache), as a Service routes it.
    eventually_every(
        ms(20),
        Duration::from_secs(30),
        "the cold worker ready",
        || async {
            let ready = env.http.get(format!("{}/readyz", cold.url)).send().await;
            (ready.map_or(0, |r| r.status().as_u16()) == 200).then_some(())
        },
    )
    .await;
    let cold_url = format!("{}{path}", cold.url);
    let statuses: Vec<u16> = futures_util::stream::iter(0..500)
        .map(|_| {
            let url = cold_url.clone();
            let http = env.http.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let cold_queries = cold.state.cache.queries();
    assert!(
        cold_queries <= 3,
        "{cold_queries} queries for 500 concurrent GETs of one list"
    );
    println!(
        "unknown ids: {unknown_queries} queries for 10,000 GETs; JWKS: {jwks_queries} for 2,000; one list, 500 at once on a cold worker: {cold_queries}"
    );
}

/// An `/issue` request with this `iss`, signed with nothing that verifies (the issuer is
/// looked up before the signature).
fn unsigned_issue(iss: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(Issuers::header("a").to_string());
    let claims = URL_SAFE_NO_PAD.encode(Issuers::issue_claims(iss).to_string());
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_issuers_cannot_flush_the_registered_ones_from_the_cache() {
    // The point is the cache, not a queue for connections: a request waits for one as long
    // as a starved machine (the whole suite at once on 2 cores) may need, never answering
    // 503 past the default 500 ms wait.
    let env = Env::with_worker_options(WorkerOptions {
        db_wait: Duration::from_secs(30),
        ..WorkerOptions::default()
    })
    .await;
    env.wait_listening().await;
    let issuers = &env.worker.state.issuers;
    // The listener's first connection empties the cache when its dispatcher gets to it,
    // which may be just after an issuance: issue until the issuer is held.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        env.issue("a").await;
        if issuers.holds("a").await {
            break;
        }
        assert!(Instant::now() < until, "issuer a never cached");
    }

    let statuses: Vec<u16> = futures_util::stream::iter(0..10_000)
        .map(|_| {
            let jwt = unsigned_issue(&uuid::Uuid::new_v4().to_string());
            let env = &env;
            async move { env.post("/issue", Some("application/jwt"), jwt).await.0 }
        })
        // As many at once as the worker has database connections (8).
        .buffer_unordered(8)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for s in &statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [401],
        "unknown issuers are 401: {counts:?}"
    );
    assert!(
        issuers.holds("a").await,
        "the registered issuer was evicted"
    );
    assert!(issuers.unknown_count().await <= 10_000);

    // An `iss` longer than any clientId is refused before any lookup, and not remembered.
    let remembered = issuers.unknown_count().await;
    let long = "x".repeat(300);
    for _ in 0..100 {
        let (status, body) = env
            .post("/issue", Some("application/jwt"), unsigned_issue(&long))
            .await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(issuers.unknown_count().await, remembered);
    env.issue("a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_claim_is_stuck_does_not_delay_issuance_of_another_pool() {
    let env = Env::start().await;
    env.wait_listening().await;
    // Pool `tok` (client a) holds a lease; client b's issuer is cached (its request is
    // refused at the signature, after the lookup), but pool `bit` has no lease yet.
    let issuers = &env.worker.state.issuers;
    // Until both are held (the listener's first connection empties the cache when its
    // dispatcher gets to it, which may be just after these requests).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        env.issue("a").await;
        let (status, _) = env
            .post("/issue", Some("application/jwt"), unsigned_issue("b"))
            .await;
        assert_eq!(status, 401);
        if issuers.holds("a").await && issuers.holds("b").await {
            break;
        }
        assert!(Instant::now() < until, "issuers a and b never cached");
    }

    // The test holds the pools table: a lease claim (which reads it) waits.
    let mut blocker = env.sql().await;
    let tx = blocker.transaction().await.expect("begin");
    tx.batch_execute("LOCK TABLE pools IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let stuck = {
        let http = env.http.clone();
        let url = env.worker.url.clone();
        let jwt = env.issuers.issue_jwt("b");
        tokio::spawn(
            async move { post_to(&http, &url, "/issue", Some("application/jwt"), jwt).await },
        )
    };
    let observer = env.sql().await;
    let waiting = Instant::now() + Duration::from_secs(4);
    loop {
        let n: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE relation = 'pools'::regclass AND NOT granted",
                &[],
            )
            .await
            .expect("locks")
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < waiting,
            "the claim never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
    }

    // Meanwhile pool `tok` issues: its lease is held, nothing it needs is locked.
    let (status, body) = env.try_issue("a").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !stuck.is_finished(),
        "pool tok answered only after pool bit's claim gave up"
    );
    tx.rollback().await.expect("release");
    let (status, body) = stuck.await.expect("stuck request");
    assert!(
        status == 200 || status == 503,
        "the stuck claim ends cleanly: {status} {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_time_bound_gets_the_contract_body() {
    let env = Env::start().await;
    let bounded = TestWorker::start_with(
        &env.db.url,
        vec![SigningKey::generate().expect("key")],
        "bounded",
        WorkerOptions {
            jwks: JwksSettings {
                timeout: Duration::from_secs(30),
                ..WorkerOptions::default().jwks
            },
            request_timeout: Duration::from_millis(300),
            ..WorkerOptions::default()
        },
    )
    .await;
    // Client c's JWKS endpoint never answers.
    env.issuers.set_mode("c", JwksMode::Hang);
    let (status, body) = post_to(
        &env.http,
        &bounded.url,
        "/issue",
        Some("application/jwt"),
        env.issuers.issue_jwt("c"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "TEMPORARILY_UNAVAILABLE", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}
