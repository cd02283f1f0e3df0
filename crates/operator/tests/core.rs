//! The reconcile core against real PostgreSQL: provisioning, reclaim, retirement,
//! concurrent reconcilers.

use std::time::Duration;

use statuslist_crd::{Format, IssuerSpec, StatusListSpec};
use statuslist_operator::core::{self, PoolReport};
use statuslist_store::testing::TestDb;
use statuslist_store::{IssueRequest, ListState, PoolSpec, Store};

fn spec(entries: u64, lease: u64, min_free: u64) -> StatusListSpec {
    serde_json::from_value(serde_json::json!({
        "format": "Token",
        "baseUri": "https://status.example.test/",
        "entriesPerList": entries,
        "leaseSize": lease,
        "minFreeEntries": min_free,
        "issuers": [{"clientId": "a", "jwksUri": "https://a.example/jwks"}]
    }))
    .expect("spec")
}

fn pool(s: &StatusListSpec) -> PoolSpec {
    core::pool_spec(core::pool_name("ns", "sl"), 1, s).expect("valid")
}

async fn claim(store: &Store, worker: &str) -> statuslist_store::Lease {
    store
        .claim_lease("ns/sl", worker, Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("lease")
}

async fn issue_n(store: &Store, n: u64, expiry: i64) {
    let mut done = 0;
    while done < n {
        let lease = claim(store, "w").await;
        while done < n {
            let req = IssueRequest {
                client_id: "a".into(),
                jti: uuid_v4(),
                status_expiry: expiry,
            };
            match store.issue(&lease, &req).await {
                Ok(_) => done += 1,
                Err(statuslist_store::StoreError::LeaseExhausted) => break,
                Err(e) => panic!("{e}"),
            }
        }
        store.release_lease(&lease).await.expect("release");
    }
}

fn uuid_v4() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

#[test]
fn invalid_specs_are_listed() {
    let mut s = spec(1000, 100, 10);
    s.bits = 3;
    s.format = Format::Bitstring;
    s.lease_size = 5000;
    s.base_uri = "https://x/?q".into();
    s.issuers.push(IssuerSpec {
        client_id: "a".into(),
        jwks_uri: "ftp://x".into(),
    });
    let problems = core::pool_spec("p".into(), 1, &s).expect_err("invalid");
    assert_eq!(problems.len(), 6, "{problems:?}");

    // Suspension needs a status 2: not with one bit (the CRD's rule, for manifest files).
    let mut s = spec(1000, 100, 10);
    s.suspension = true;
    assert!(
        core::pool_spec("p".into(), 1, &s)
            .expect("2 bits")
            .settings
            .suspension
    );
    s.bits = 1;
    let problems = core::pool_spec("p".into(), 1, &s).expect_err("invalid");
    assert_eq!(
        problems,
        ["suspension needs bits of 2 or more (status 2 is SUSPENDED)"]
    );
}

#[tokio::test]
async fn provisions_reclaims_and_retires() {
    let db = TestDb::new().await;
    let s = spec(200, 100, 50);
    let p = pool(&s);
    assert_eq!(
        p.settings.base_uri, "https://status.example.test",
        "trailing slash dropped"
    );
    let now = 1_700_000_000;
    let first: PoolReport = core::reconcile_pool(&db.store, &p, now)
        .await
        .expect("reconcile");
    assert_eq!(first.provisioned.len(), 1, "a new pool gets its first list");
    assert_eq!((first.capacity.free, first.capacity_low()), (200, false));
    let again = core::reconcile_pool(&db.store, &p, now)
        .await
        .expect("reconcile");
    assert!(again.provisioned.is_empty(), "nothing to do");
    // A worker's capacity request for a pool with plenty calls for no pass; for a pool
    // the database does not know, one (the pass applies it).
    assert!(!core::asks_need_a_pass(&db.store, ["ns/sl"]).await);
    assert!(core::asks_need_a_pass(&db.store, ["ns/sl", "ns/unknown"]).await);

    // Issue until free (200 - 160 = 40) < minFreeEntries (50): the next list comes.
    issue_n(&db.store, 160, now + 10).await;
    assert!(core::asks_need_a_pass(&db.store, ["ns/sl"]).await);
    let report = core::reconcile_pool(&db.store, &p, now)
        .await
        .expect("reconcile");
    assert_eq!(report.provisioned.len(), 1);
    assert_eq!(report.capacity.lists.len(), 2);
    assert_eq!(report.capacity.free, 240);
    assert!(!core::asks_need_a_pass(&db.store, ["ns/sl"]).await);

    // A worker dies holding a lease: after expiry its remainder returns.
    let lease = claim(&db.store, "dead").await;
    db.store
        .issue(
            &lease,
            &IssueRequest {
                client_id: "a".into(),
                jti: uuid_v4(),
                status_expiry: now + 10,
            },
        )
        .await
        .expect("issue");
    db.store.expire_lease_now(lease.id).await.expect("expire");
    let report = core::reconcile_pool(&db.store, &p, now)
        .await
        .expect("reconcile");
    assert_eq!(report.reclaimed, 1);
    assert_eq!(report.capacity.free, 239);
    assert!(matches!(
        db.store
            .issue(
                &lease,
                &IssueRequest {
                    client_id: "a".into(),
                    jti: uuid_v4(),
                    status_expiry: now + 10
                }
            )
            .await,
        Err(statuslist_store::StoreError::LeaseLost)
    ));

    // Fill the first list completely; once its entries expire it is retired.
    let first_id = first.provisioned[0].id.clone();
    let remaining_first = report
        .capacity
        .lists
        .iter()
        .find(|l| l.id == first_id)
        .expect("first")
        .free;
    // Draw only from the first list: claim until its leases are spent.
    let mut left = remaining_first;
    while left > 0 {
        let lease = claim(&db.store, "w").await;
        if lease.list.id != first_id {
            db.store.release_lease(&lease).await.expect("release");
            continue;
        }
        loop {
            let req = IssueRequest {
                client_id: "a".into(),
                jti: uuid_v4(),
                status_expiry: now + 20,
            };
            match db.store.issue(&lease, &req).await {
                Ok(_) => left -= 1,
                Err(statuslist_store::StoreError::LeaseExhausted) => break,
                Err(e) => panic!("{e}"),
            }
        }
        db.store.release_lease(&lease).await.expect("release");
    }
    let report = core::reconcile_pool(&db.store, &p, now)
        .await
        .expect("reconcile");
    assert_eq!(report.full, vec![first_id.clone()]);
    assert!(report.retired.is_empty(), "entries not expired yet");
    let report = core::reconcile_pool(&db.store, &p, now + 21)
        .await
        .expect("reconcile");
    // The Full list retires; so does the Active one when entries went into it (random
    // lease choice), all expired now, and then a fresh list replaces it.
    assert!(report.retired.contains(&first_id), "{:?}", report.retired);
    assert_eq!(report.retired.len() - 1, report.provisioned.len());
    assert!(
        report
            .capacity
            .lists
            .iter()
            .any(|l| l.state == ListState::Active)
    );
    assert_eq!(
        db.store
            .list(&first_id)
            .await
            .expect("read")
            .expect("row kept")
            .state,
        ListState::Retired
    );
    assert!(report.capacity.lists.iter().all(|l| l.id != first_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_at_once_leave_what_one_would() {
    let db = TestDb::new().await;
    let p = pool(&spec(1000, 100, 100));
    let reports =
        futures_util::future::join_all((0..4).map(|_| core::reconcile_pool(&db.store, &p, 0)))
            .await;
    let provisioned: usize = reports
        .iter()
        .map(|r| r.as_ref().expect("reconcile").provisioned.len())
        .sum();
    assert_eq!(provisioned, 1);
    let cap = db.store.capacity("ns/sl").await.expect("capacity");
    assert_eq!((cap.lists.len(), cap.free), (1, 1000));
    let leases = db.count("SELECT count(*) FROM leases").await;
    assert_eq!(leases, 10);
}

#[tokio::test]
async fn expired_active_lists_retire_and_a_retained_pool_retires_to_nothing() {
    let db = TestDb::new().await;
    let p = pool(&spec(1000, 100, 50));
    let now = 1_700_000_000;
    let first = core::reconcile_pool(&db.store, &p, now)
        .await
        .expect("reconcile");
    let list = first.provisioned[0].id.clone();

    // An Active list nobody issued into is the pool's capacity: kept.
    assert!(
        core::reconcile_pool(&db.store, &p, now + 100)
            .await
            .expect("reconcile")
            .retired
            .is_empty()
    );
    // Entries, all expired, but a lease is held on the list: kept (issuance may follow).
    let lease = claim(&db.store, "w").await;
    let req = |expiry| IssueRequest {
        client_id: "a".into(),
        jti: uuid_v4(),
        status_expiry: expiry,
    };
    db.store.issue(&lease, &req(now + 10)).await.expect("issue");
    let held = core::reconcile_pool(&db.store, &p, now + 11)
        .await
        .expect("reconcile");
    assert!(held.retired.is_empty());
    // Released: every entry expired, so the Active list retires, and a new one comes.
    db.store.release_lease(&lease).await.expect("release");
    assert!(
        core::reconcile_pool(&db.store, &p, now + 5)
            .await
            .expect("reconcile")
            .retired
            .is_empty(),
        "not expired yet"
    );
    let report = core::reconcile_pool(&db.store, &p, now + 11)
        .await
        .expect("reconcile");
    assert_eq!(report.retired, vec![list.clone()]);
    assert_eq!(report.provisioned.len(), 1, "capacity replaced");
    assert_eq!(db.count("SELECT count(*) FROM entries").await, 0);
    let second = report.provisioned[0].id.clone();

    // Deleted with Retain while an entry is live: the pool stays (revocable, re-signed),
    // no longer issuing, until the entry expires; then it retires to nothing.
    let lease = claim(&db.store, "w").await;
    assert_eq!(lease.list.id, second);
    db.store.issue(&lease, &req(now + 50)).await.expect("issue");
    core::cleanup(
        &db.store,
        &p.name,
        None,
        statuslist_crd::DeletionPolicy::Retain,
    )
    .await
    .expect("retain");
    assert!(
        core::sweep_retained(&db.store, now + 20)
            .await
            .expect("sweep")
            .is_empty()
    );
    assert!(db.store.pool(&p.name).await.expect("read").is_some());
    assert!(
        db.store.issuer("a").await.expect("read").is_some(),
        "revocation keeps working"
    );
    let drained = core::sweep_retained(&db.store, now + 51)
        .await
        .expect("sweep");
    assert_eq!(
        drained,
        vec![core::Drained {
            pool: p.name.clone(),
            retired: vec![second.clone()],
            removed: true
        }]
    );
    assert!(db.store.pool(&p.name).await.expect("read").is_none());
    assert!(db.store.issuer("a").await.expect("read").is_none());
    assert_eq!(
        db.store
            .list(&second)
            .await
            .expect("read")
            .expect("row kept")
            .state,
        ListState::Retired
    );
    assert!(
        core::sweep_retained(&db.store, now + 52)
            .await
            .expect("sweep")
            .is_empty()
    );
}
