//! Revocation: owner-checked, final, versioned.

mod common;

use common::*;
use statuslist_store::RevokeOutcome;

async fn version(db: &statuslist_store::testing::TestDb, list: &str) -> i64 {
    db.store
        .list(list)
        .await
        .expect("list")
        .expect("exists")
        .version
}

#[tokio::test]
async fn revoke_not_found_other_owner_first_time_and_again() {
    let db = with_pool(10_000, 100).await;
    let lease = claim(&db.store, "w").await;
    let issued = issue_one(&db.store, &lease).await;
    let other_idx = (issued.idx + 1) % 10_000;

    // Not found: an index never issued, a URI we never issued, an index past i64.
    assert_eq!(
        db.store
            .revoke(&issued.uri, other_idx, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        db.store
            .revoke(
                "https://status.example.test/t/000000000000",
                issued.idx,
                "a"
            )
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        db.store
            .revoke(&issued.uri, u64::MAX, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    // The same list under the other format's path is another URI.
    let wrong_path = issued.uri.replace("/t/", "/b/");
    assert_eq!(
        db.store
            .revoke(&wrong_path, issued.idx, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    // Another client's entry: the same answer as absent, and nothing changes.
    assert_eq!(
        db.store
            .revoke(&issued.uri, issued.idx, "b")
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    assert_eq!(version(&db, &issued.list_id).await, 0);

    let RevokeOutcome::Revoked { at } = db
        .store
        .revoke(&issued.uri, issued.idx, "a")
        .await
        .expect("revoke")
    else {
        panic!("first revocation must revoke");
    };
    assert_eq!(version(&db, &issued.list_id).await, 1);
    // Again: the original time, no new version.
    assert_eq!(
        db.store
            .revoke(&issued.uri, issued.idx, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::AlreadyRevoked { at }
    );
    assert_eq!(version(&db, &issued.list_id).await, 1);
    // Still another client's business only by its owner.
    assert_eq!(
        db.store
            .revoke(&issued.uri, issued.idx, "b")
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );

    // INVALID is final: a repeated issuance of the same key returns the entry unchanged,
    // and the stored status stays 1.
    let client = db.client().await;
    let status: i16 = client
        .query_one("SELECT status FROM entries", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(status, 1);
    let cap = db.store.capacity("p").await.expect("capacity");
    assert_eq!((cap.allocated, cap.revoked), (1, 1));
}
