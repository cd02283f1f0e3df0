#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use statuslist_format::Bits;
use statuslist_store::testing::TestDb;
use statuslist_store::{
    IssueRequest, IssuerSpec, Lease, ListFormat, PoolSettings, PoolSpec, Store,
};

pub const LEASE_TTL: Duration = Duration::from_secs(30);

pub fn pool_spec(name: &str, clients: &[&str], entries_per_list: u64, lease_size: u64) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        uid: None,
        generation: 1,
        settings: PoolSettings {
            format: ListFormat::Token,
            bits: Bits::Two,
            base_uri: "https://status.example.test".into(),
            entries_per_list,
            min_free_entries: lease_size,
            lease_size,
            ttl_seconds: 300,
            validity_seconds: 3600,
            max_status_lifetime_seconds: 31_536_000,
            suspension: false,
        },
        issuers: clients
            .iter()
            .map(|c| IssuerSpec {
                client_id: (*c).into(),
                jwks_uri: format!("https://{c}.example.test/jwks"),
            })
            .collect(),
    }
}

/// A database with one pool `p` (clients `a` and `b`) and one provisioned list.
pub async fn with_pool(entries_per_list: u64, lease_size: u64) -> TestDb {
    let db = TestDb::new().await;
    let outcome = db
        .store
        .apply_pool(&pool_spec("p", &["a", "b"], entries_per_list, lease_size))
        .await
        .expect("apply");
    assert!(outcome.conflicts.is_empty());
    db.store
        .ensure_capacity("p")
        .await
        .expect("provision")
        .expect("first list");
    db
}

pub fn request(client: &str, status_expiry: i64) -> IssueRequest {
    IssueRequest {
        client_id: client.into(),
        jti: uuid::Uuid::new_v4(),
        status_expiry,
    }
}

pub async fn claim(store: &Store, worker: &str) -> Lease {
    store
        .claim_lease("p", worker, LEASE_TTL)
        .await
        .expect("claim")
        .expect("a free lease")
}

pub const FAR_FUTURE: i64 = 4_000_000_000;

/// Issues one entry for client `a` that expires far in the future.
pub async fn issue_one(store: &Store, lease: &Lease) -> statuslist_store::IssueOutcome {
    store
        .issue(lease, &request("a", FAR_FUTURE))
        .await
        .expect("issue")
}

/// `n` lists of pool `p`, each filled with client `a`'s entries (expiring far in the
/// future) through a lease of its own, then marked Full and the next one provisioned: the
/// entries of each list, in issuance order.
pub async fn full_lists(db: &TestDb, n: usize) -> Vec<Vec<statuslist_store::IssueOutcome>> {
    let mut lists = Vec::new();
    for _ in 0..n {
        let lease = claim(&db.store, "w").await;
        let mut issued = Vec::new();
        while let Ok(outcome) = db.store.issue(&lease, &request("a", FAR_FUTURE)).await {
            issued.push(outcome);
        }
        db.store.release_lease(&lease).await.expect("release");
        db.store.mark_full("p").await.expect("mark full");
        db.store.ensure_capacity("p").await.expect("provision");
        lists.push(issued);
    }
    lists
}

/// The version of list `list` (bumped by every status change).
pub async fn version(db: &TestDb, list: &str) -> i64 {
    db.store
        .list(list)
        .await
        .expect("list")
        .expect("exists")
        .version
}
