//! Issuance under concurrency and failure: nothing issued twice, nothing acknowledged lost.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use statuslist_format::Permutation;
use statuslist_store::{Store, StoreError};
use tokio::sync::watch;

const TOTAL: u64 = 50_000;
const WORKERS: usize = 8;

/// One worker: its own connection pool, its own worker id, claiming, issuing, and
/// reacting to lost and spent leases as the real worker does.
async fn worker(
    store: Store,
    name: String,
    issued: Arc<AtomicU64>,
    progress: watch::Sender<u64>,
) -> Vec<(String, u64, uuid::Uuid)> {
    let mut acknowledged = Vec::new();
    let mut lease = None;
    let mut lost = 0;
    while issued.load(Ordering::SeqCst) < TOTAL {
        let current = match lease.take() {
            Some(l) => l,
            None => match store
                .claim_lease("p", &name, LEASE_TTL)
                .await
                .expect("claim")
            {
                Some(l) => l,
                None => {
                    store.ensure_capacity("p").await.expect("provision");
                    continue;
                }
            },
        };
        let req = request("a", FAR_FUTURE);
        match store.issue(&current, &req).await {
            Ok(out) => {
                assert!(out.created);
                acknowledged.push((out.list_id, out.idx, req.jti));
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                progress.send_replace(n);
                lease = Some(current);
            }
            Err(StoreError::LeaseLost) => lost += 1,
            Err(StoreError::LeaseExhausted) => {
                store.release_lease(&current).await.expect("release")
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    if let Some(l) = lease {
        store.release_lease(&l).await.expect("release");
    }
    tracing_lost(&name, lost);
    acknowledged
}

fn tracing_lost(name: &str, lost: u32) {
    eprintln!("{name}: lost its lease {lost} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issuers_with_leases_reclaimed_mid_run() {
    let db = with_pool(20_000, 200).await;
    let issued = Arc::new(AtomicU64::new(0));
    let (progress, mut seen) = watch::channel(0u64);
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mut config = statuslist_store::testing::config(&db.url);
        config.max_connections = 2;
        let store = Store::connect(&config).await.expect("worker store");
        tasks.push(tokio::spawn(worker(
            store,
            format!("worker-{w}"),
            issued.clone(),
            progress.clone(),
        )));
    }
    drop(progress);

    // Chaos: every 5,000 issuances, expire every held lease and reclaim it.
    let mut expired_rounds = 0;
    for threshold in (5_000..TOTAL).step_by(5_000) {
        if seen.wait_for(|n| *n >= threshold).await.is_err() {
            break;
        }
        db.client()
            .await
            .execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE holder IS NOT NULL", &[])
            .await
            .expect("force expiry");
        db.store.reclaim_expired_leases().await.expect("reclaim");
        expired_rounds += 1;
    }
    assert!(expired_rounds >= 8);

    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.expect("worker task"));
    }
    assert!(acknowledged.len() as u64 >= TOTAL);

    // Zero duplicate (list, idx) among what was acknowledged.
    let slots: HashSet<(String, u64)> = acknowledged
        .iter()
        .map(|(l, i, _)| (l.clone(), *i))
        .collect();
    assert_eq!(
        slots.len(),
        acknowledged.len(),
        "a slot was acknowledged twice"
    );

    // Every acknowledged entry is present, and nothing else is.
    let client = db.client().await;
    let rows = client
        .query("SELECT list_id, idx, position, jti FROM entries", &[])
        .await
        .expect("entries");
    assert_eq!(rows.len(), acknowledged.len());
    let stored: HashMap<(String, i64), uuid::Uuid> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(3)))
        .collect();
    for (list, idx, jti) in &acknowledged {
        assert_eq!(stored.get(&(list.clone(), *idx as i64)), Some(jti));
    }

    // Positions were never reused, and each index is the permutation of its position.
    let lists = client
        .query("SELECT id, secret, size FROM lists", &[])
        .await
        .expect("lists");
    let mut positions = HashSet::new();
    for l in &lists {
        let (id, secret, size): (String, Vec<u8>, i64) = (l.get(0), l.get(1), l.get(2));
        let p = Permutation::new(&secret, size as u64).expect("stored secret");
        for r in rows.iter().filter(|r| r.get::<_, String>(0) == id) {
            let (idx, pos): (i64, i64) = (r.get(1), r.get(2));
            assert!(
                positions.insert((id.clone(), pos)),
                "position {pos} of {id} used twice"
            );
            assert_eq!(p.forward(pos as u64).expect("in range"), idx as u64);
        }
    }
    // Every lease was released or reclaimed: none is held any more. (A reclaim skips a
    // lease an issuance is still writing to; the next pass, as the operator's periodic
    // one, takes it.)
    db.store.reclaim_expired_leases().await.expect("reclaim");
    let held = db
        .count("SELECT count(*) FROM leases WHERE holder IS NOT NULL")
        .await;
    assert_eq!(held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_duplicates_make_one_entry() {
    let db = with_pool(10_000, 100).await;
    let leases: Vec<_> = futures_util::future::join_all((0..4).map(|w| {
        let store = db.store.clone();
        async move { Arc::new(claim(&store, &format!("w{w}")).await) }
    }))
    .await;
    let req = request("a", FAR_FUTURE);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let outcomes = futures_util::future::join_all((0..20).map(|i| {
        let (store, lease, req, barrier) = (
            db.store.clone(),
            leases[i % 4].clone(),
            req.clone(),
            barrier.clone(),
        );
        tokio::spawn(async move {
            barrier.wait().await;
            store.issue(&lease, &req).await
        })
    }))
    .await;
    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|o| o.expect("task").expect("issue"))
        .collect();
    assert_eq!(outcomes.iter().filter(|o| o.created).count(), 1);
    assert!(
        outcomes
            .iter()
            .all(|o| (o.idx, &o.uri) == (outcomes[0].idx, &outcomes[0].uri))
    );
    let n = db.count("SELECT count(*) FROM entries").await;
    assert_eq!(n, 1);

    // A repeat with the same statusExpiry gets the original; a changed one is refused.
    let again = db.store.issue(&leases[0], &req).await.expect("repeat");
    assert_eq!((again.idx, again.created), (outcomes[0].idx, false));
    let changed = statuslist_store::IssueRequest {
        status_expiry: FAR_FUTURE + 1,
        ..req.clone()
    };
    assert!(matches!(
        db.store.issue(&leases[1], &changed).await,
        Err(StoreError::IdempotencyConflict)
    ));
    assert!(matches!(
        db.store.find_issued(&changed).await,
        Err(StoreError::IdempotencyConflict)
    ));
    // The same jti from another client is another key.
    let other = statuslist_store::IssueRequest {
        client_id: "b".into(),
        ..req
    };
    assert!(
        db.store
            .issue(&leases[2], &other)
            .await
            .expect("other client")
            .created
    );
}

#[tokio::test]
async fn an_expired_lease_cannot_issue() {
    let db = with_pool(10_000, 100).await;
    let lease = claim(&db.store, "w1").await;
    issue_one(&db.store, &lease).await;
    db.store.expire_lease_now(lease.id).await.expect("expire");

    assert!(matches!(
        db.store.issue(&lease, &request("a", FAR_FUTURE)).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        db.store.renew_lease(&lease, LEASE_TTL).await,
        Err(StoreError::LeaseLost)
    ));

    // Reclaimed and claimed by another worker: the first is still fenced out, even
    // though the token check alone would now see another holder.
    assert_eq!(db.store.reclaim_expired_leases().await.expect("reclaim"), 1);
    let mut second = None;
    for _ in 0..200 {
        let l = claim(&db.store, "w2").await;
        if l.id == lease.id {
            second = Some(l);
            break;
        }
    }
    let second = second.expect("the reclaimed lease is claimable again");
    assert_eq!(
        second.start,
        lease.start + 1,
        "the used position is not handed out again"
    );
    assert!(second.token > lease.token);
    assert!(matches!(
        db.store.issue(&lease, &request("a", FAR_FUTURE)).await,
        Err(StoreError::LeaseLost)
    ));
    issue_one(&db.store, &second).await;
    let n = db.count("SELECT count(*) FROM entries").await;
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_renewed_lease_keeps_issuing_and_a_released_one_returns_its_remainder() {
    let db = with_pool(1_000, 10).await;
    let lease = claim(&db.store, "w1").await;
    for _ in 0..3 {
        issue_one(&db.store, &lease).await;
    }
    db.store
        .renew_lease(&lease, LEASE_TTL)
        .await
        .expect("renew");
    issue_one(&db.store, &lease).await;
    assert_eq!(lease.remaining(), 6);
    let before = db.store.capacity("p").await.expect("capacity");
    assert_eq!((before.allocated, before.free), (4, 996));
    db.store.release_lease(&lease).await.expect("release");
    assert!(matches!(
        db.store.issue(&lease, &request("a", FAR_FUTURE)).await,
        Err(StoreError::LeaseLost)
    ));
    let after = db.store.capacity("p").await.expect("capacity");
    assert_eq!((after.allocated, after.free), (4, 996));

    // A lease spent to the last position: exhausted, and released it disappears.
    let lease = claim(&db.store, "w2").await;
    let size = lease.end - lease.start;
    for _ in 0..size {
        issue_one(&db.store, &lease).await;
    }
    let repeat = request("a", FAR_FUTURE);
    assert!(matches!(
        db.store.issue(&lease, &repeat).await,
        Err(StoreError::LeaseExhausted)
    ));
    db.store.release_lease(&lease).await.expect("release");
    assert_eq!(
        db.store.capacity("p").await.expect("capacity").free,
        996 - size
    );
}

/// Every pooled connection runs without JIT compilation, whatever the server's default:
/// a cost estimate past `jit_above_cost` (the capacity count over many partitions)
/// once cost the reconcile 200 ms of compiling per pass for 0.2 ms of work.
#[tokio::test]
async fn pooled_connections_do_not_jit_compile() {
    let db = with_pool(1_000, 10).await;
    db.client()
        .await
        .batch_execute(
            "DO $$ BEGIN
                 EXECUTE format('ALTER DATABASE %I SET jit = on', current_database());
                 EXECUTE format('ALTER DATABASE %I SET jit_above_cost = 0', current_database());
             END $$",
        )
        .await
        .expect("database defaults");
    let store = Store::connect(&statuslist_store::testing::config(&db.url))
        .await
        .expect("store");
    assert_eq!(
        statuslist_store::testing::session_setting(&store, "jit").await,
        "off"
    );
    // The capacity figures are unchanged by it.
    let capacity = store.capacity("p").await.expect("capacity");
    assert_eq!((capacity.allocated, capacity.free), (0, 1_000));
}
