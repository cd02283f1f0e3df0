//! The database goes away mid-test and comes back: typed errors within a bounded time,
//! then recovery without restarting anything.

mod common;

use std::time::{Duration, Instant};

use common::*;
use statuslist_store::notify::{CHANNEL_CAPACITY, Event};
use statuslist_store::testing::TestDb;
use statuslist_store::{Store, StoreError};

/// Far above the store's own bounds (0.5 s pool wait and connect, 5 s per operation): a
/// hang detector, not a speed test.
const BOUND: Duration = Duration::from_secs(15);

async fn unavailable<T: std::fmt::Debug>(
    what: &str,
    f: impl Future<Output = Result<T, StoreError>>,
) {
    let start = Instant::now();
    let result = tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"));
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what}: {result:?}"
    );
    assert!(start.elapsed() < BOUND);
}

async fn wait_until_ready(store: &Store) {
    statuslist_testkit::eventually_every(
        Duration::from_millis(20),
        Duration::from_secs(30),
        "the store recovered",
        || async { store.ping().await.ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_and_restarted() {
    let mut db = TestDb::with_own_server().await;
    db.store
        .apply_pool(&pool_spec("p", &["a"], 1_000, 100))
        .await
        .expect("apply");
    db.store.ensure_capacity("p").await.expect("provision");
    let lease = claim(&db.store, "w").await;
    let issued = issue_one(&db.store, &lease).await;
    let (mut events, _listener) = db.store.listen(&[CHANNEL_CAPACITY]);
    assert_eq!(events.recv().await.expect("event"), Event::Connected);

    let store = db.store.clone();
    tokio::task::block_in_place(|| db.server_mut().expect("own server").stop().expect("stop"));

    unavailable("ping", store.ping()).await;
    unavailable("issue", store.issue(&lease, &request("a", FAR_FUTURE))).await;
    unavailable("revoke", store.revoke(&issued.uri, issued.idx, "a")).await;
    unavailable("claim", store.claim_lease("p", "w2", LEASE_TTL)).await;
    unavailable("renew", store.renew_lease(&lease, LEASE_TTL)).await;
    unavailable("capacity", store.capacity("p")).await;
    unavailable("issuer", store.issuer("a")).await;
    unavailable("notify", store.notify(CHANNEL_CAPACITY, "p")).await;

    tokio::task::block_in_place(|| {
        db.server_mut()
            .expect("own server")
            .start_again()
            .expect("restart")
    });

    wait_until_ready(&store).await;
    store
        .renew_lease(&lease, LEASE_TTL)
        .await
        .expect("the lease survived: it had not expired");
    assert!(
        store
            .issue(&lease, &request("a", FAR_FUTURE))
            .await
            .expect("issue again")
            .created
    );
    assert!(matches!(
        store
            .revoke(&issued.uri, issued.idx, "a")
            .await
            .expect("revoke"),
        statuslist_store::RevokeOutcome::Revoked { .. }
    ));
    // The listener reconnected by itself and hears notifications again.
    assert_eq!(events.recv().await.expect("event"), Event::Connected);
    store.notify(CHANNEL_CAPACITY, "p").await.expect("notify");
    assert_eq!(
        events.recv().await.expect("event"),
        Event::Notification {
            channel: CHANNEL_CAPACITY.into(),
            payload: "p".into()
        }
    );
    drop(db);
}

/// The database emptied under a running store (replaced by an empty one, or restored from
/// before the service): the first statement that meets a missing table is a typed
/// unavailability, never a database error (a 500); the migrations run again by
/// themselves, and the store works on the new schema.
#[tokio::test]
async fn a_lost_schema_is_unavailable_meanwhile_and_migrated_again() {
    let db = TestDb::new().await;
    let epoch = db.store.schema_epoch();
    db.client()
        .await
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .expect("empty the database");
    let result = tokio::time::timeout(BOUND, db.store.pool("ns/x"))
        .await
        .expect("not hung");
    assert!(
        matches!(result, Err(StoreError::SchemaMissing(_))),
        "{result:?}"
    );
    assert!(result.expect_err("missing").is_unavailable());
    tokio::time::timeout(BOUND, db.store.wait_migrated())
        .await
        .expect("migrated again");
    assert!(db.store.schema_epoch() > epoch);
    assert_eq!(
        db.count("SELECT max(version)::bigint FROM schema_migrations")
            .await,
        20
    );
    assert!(db.store.pool("ns/x").await.expect("works again").is_none());
}
