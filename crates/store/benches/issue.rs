//! Issuance throughput of the store alone (1, 8, 32 concurrent tasks) beside a plain
//! single-row INSERT on the same server, in the same run. Uses `DATABASE_URL` (a server
//! where it may create a database) or a throwaway server (fsync off).
//!
//! `cargo bench -p statuslist-store --features testing --bench issue`

use std::sync::Arc;
use std::time::{Duration, Instant};

use statuslist_format::Bits;
use statuslist_store::testing::TestDb;
use statuslist_store::{
    IssueRequest, IssuerSpec, ListFormat, PoolSettings, PoolSpec, Store, StoreConfig,
};

const PER_LEVEL: usize = 20_000;
const ROUNDS: usize = 3;
const TTL: Duration = Duration::from_secs(300);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn issue_rate(store: &Store, tasks: usize, round: usize) -> f64 {
    let mut leases = Vec::new();
    for t in 0..tasks {
        let lease = store
            .claim_lease("p", &format!("bench-{round}-{t}"), TTL)
            .await
            .expect("claim")
            .expect("free lease");
        leases.push(Arc::new(lease));
    }
    let per_task = PER_LEVEL / tasks;
    let start = Instant::now();
    let handles: Vec<_> = leases
        .into_iter()
        .enumerate()
        .map(|(t, mut lease)| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < per_task {
                    let req = IssueRequest {
                        client_id: "a".into(),
                        jti: uuid::Uuid::new_v4(),
                        status_expiry: 4_000_000_000,
                    };
                    match store.issue(&lease, &req).await {
                        Ok(_) => done += 1,
                        Err(statuslist_store::StoreError::LeaseExhausted) => {
                            store.release_lease(&lease).await.expect("release");
                            lease = Arc::new(
                                store
                                    .claim_lease("p", &format!("bench-{round}-{t}"), TTL)
                                    .await
                                    .expect("claim")
                                    .expect("free lease"),
                            );
                        }
                        Err(e) => panic!("issue: {e}"),
                    }
                }
                lease
            })
        })
        .collect();
    let mut held = Vec::new();
    for h in handles {
        held.push(h.await.expect("task"));
    }
    let rate = (per_task * tasks) as f64 / start.elapsed().as_secs_f64();
    for lease in held {
        store.release_lease(&lease).await.expect("release");
    }
    rate
}

async fn plain_insert_rate(url: &str, tasks: usize) -> f64 {
    let pool = Arc::new(statuslist_store::testing::raw_pool(url, tasks));
    let per_task = PER_LEVEL / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let client = pool.get().await.expect("connection");
                let stmt = client
                    .prepare_cached("INSERT INTO bench_plain (jti, v) VALUES ($1, $2)")
                    .await
                    .expect("prepare");
                for i in 0..per_task {
                    client
                        .execute(&stmt, &[&uuid::Uuid::new_v4(), &(i as i64)])
                        .await
                        .expect("insert");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    (per_task * tasks) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let db = TestDb::new().await;
    let mut config = StoreConfig::new(&db.url);
    config.max_connections = 40;
    let store = Store::connect(&config).await.expect("store");
    store
        .apply_pool(&PoolSpec {
            name: "p".into(),
            uid: None,
            generation: 1,
            settings: PoolSettings {
                format: ListFormat::Token,
                bits: Bits::Two,
                base_uri: "https://status.example.test".into(),
                entries_per_list: 2_000_000,
                min_free_entries: 0,
                lease_size: 10_000,
                ttl_seconds: 300,
                validity_seconds: 3600,
                max_status_lifetime_seconds: 31_536_000,
                suspension: false,
            },
            issuers: vec![IssuerSpec {
                client_id: "a".into(),
                jwks_uri: "https://a.example.test/jwks".into(),
            }],
        })
        .await
        .expect("pool");
    store.ensure_capacity("p").await.expect("capacity");
    let raw = statuslist_store::testing::raw_pool(&db.url, 1);
    raw.get()
        .await
        .expect("connection")
        .batch_execute("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, jti uuid NOT NULL, v bigint NOT NULL)")
        .await
        .expect("plain table");

    println!("{PER_LEVEL} operations per measurement, median of {ROUNDS} rounds");
    println!(
        "{:>6} {:>14} {:>16} {:>8}",
        "tasks", "issue/s", "plain INSERT/s", "ratio"
    );
    let mut round = 0;
    for tasks in [1, 8, 32] {
        let (mut issue, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            round += 1;
            issue.push(issue_rate(&store, tasks, round).await);
            plain.push(plain_insert_rate(&db.url, tasks).await);
        }
        let (i, p) = (median(issue), median(plain));
        println!("{tasks:>6} {i:>14.0} {p:>16.0} {:>7.0}%", 100.0 * i / p);
    }
}
