//! `POST /issue` end to end over HTTP: a worker in this process, a local issuer JWKS, and
//! 32 concurrent clients sending distinct signed requests. Prints throughput and latency
//! percentiles, beside the ES256 verification floor measured in the same run.
//!
//! `cargo bench -p statuslist-worker --bench http` (uses `DATABASE_URL` or a throwaway server)

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use statuslist_format::unix_now;
use statuslist_format::{Bits, SigningKey};
use statuslist_store::testing::TestDb;
use statuslist_store::{IssuerSpec, ListFormat, PoolSettings, PoolSpec, Store, StoreConfig};
use statuslist_worker::jwks::{JwksCache, JwksSettings};
use statuslist_worker::leases::Leases;
use statuslist_worker::metrics::Metrics;
use statuslist_worker::served::ArtifactCache;
use statuslist_worker::signing::SigningKeys;
use statuslist_worker::{AppState, Worker, router};

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 32;

fn request(key: &SigningKey) -> String {
    let now = unix_now();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()});
    let claims = json!({"iss": "bench", "iat": now, "jti": uuid::Uuid::new_v4().to_string(), "statusExpiry": now + 86_400});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign_raw(input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::main]
async fn main() {
    let db = TestDb::new().await;
    let issuer = SigningKey::generate().expect("key");
    let doc = serde_json::to_value(statuslist_format::keys::jwks([&issuer])).expect("jwks");
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let jwks_uri = format!(
        "http://{}/jwks.json",
        jwks_listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        axum::serve(
            jwks_listener,
            Router::new().route(
                "/jwks.json",
                get(move || std::future::ready(axum::Json(doc.clone()))),
            ),
        )
        .await
    });

    let mut config = StoreConfig::new(&db.url);
    config.max_connections = 16;
    let store = Store::connect(&config).await.expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    store
        .apply_pool(&PoolSpec {
            name: "bench".into(),
            uid: None,
            generation: 1,
            settings: PoolSettings {
                format: ListFormat::Token,
                bits: Bits::Two,
                base_uri: url.clone(),
                entries_per_list: 1_000_000,
                min_free_entries: 0,
                lease_size: 100_000,
                ttl_seconds: 300,
                validity_seconds: 3600,
                max_status_lifetime_seconds: 31_536_000,
                suspension: false,
            },
            issuers: vec![IssuerSpec {
                client_id: "bench".into(),
                jwks_uri,
            }],
        })
        .await
        .expect("pool");
    store.ensure_capacity("bench").await.expect("list");
    let metrics = Metrics::default();
    let state = Arc::new(AppState {
        leases: Arc::new(Leases::new(
            store.clone(),
            "bench".into(),
            Duration::from_secs(60),
            metrics.clone(),
        )),
        store,
        jwks: JwksCache::new(JwksSettings {
            allow_http: true,
            allow_cidrs: statuslist_worker::egress::loopback(),
            ..JwksSettings::default()
        })
        .expect("jwks"),
        keys: Arc::new(SigningKeys::new(vec![SigningKey::generate().expect("key")]).expect("key")),
        cache: Arc::new(ArtifactCache::default()),
        issuers: Arc::default(),
        metrics,
        summary: Default::default(),
        draining: Default::default(),
        request_timeout: statuslist_worker::REQUEST_TIMEOUT,
    });
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let worker = Worker::start(state.clone(), 9);

    // The floor: ES256 verifications per second on one core, same key, same run.
    let sample = request(&issuer);
    let (input, sig) = sample.rsplit_once('.').expect("jws");
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("b64");
    let start = Instant::now();
    for _ in 0..5_000 {
        issuer
            .verifying_key()
            .verify_raw(input.as_bytes(), &sig)
            .expect("verify");
    }
    let verify_rate = 5_000.0 / start.elapsed().as_secs_f64();

    let bodies: Vec<String> = (0..REQUESTS).map(|_| request(&issuer)).collect();
    let bodies = Arc::new(bodies);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    // Warm up: JWKS fetched, lease claimed, connections open.
    for body in bodies.iter().take(CONCURRENCY) {
        let r = client
            .post(format!("{url}/issue"))
            .header("content-type", "application/jwt")
            .body(body.clone())
            .send()
            .await
            .expect("issue");
        assert_eq!(r.status(), 200);
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(CONCURRENCY));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, bodies, next, url) =
                (client.clone(), bodies.clone(), next.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= bodies.len() {
                        return latencies;
                    }
                    let t = Instant::now();
                    let r = client
                        .post(format!("{url}/issue"))
                        .header("content-type", "application/jwt")
                        .body(bodies[i].clone())
                        .send()
                        .await
                        .expect("issue");
                    assert_eq!(r.status(), 200);
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    let rate = latencies.len() as f64 / elapsed;
    println!(
        "POST /issue, {} requests, {CONCURRENCY} concurrent clients, client and server on the same 2 cores",
        latencies.len()
    );
    println!(
        "throughput {rate:.0} req/s; latency p50 {:.2} ms, p99 {:.2} ms",
        pct(0.5),
        pct(0.99)
    );
    println!(
        "ES256 verify floor (one core, same run): {verify_rate:.0}/s; throughput is {:.0}% of it",
        100.0 * rate / verify_rate
    );
    worker.shutdown().await;
}
