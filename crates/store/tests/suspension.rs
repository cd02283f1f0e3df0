//! Suspension and reinstatement: reversible, owner-checked, only where the pool allows it,
//! never over a revocation; each change a version the publishers read; written back after
//! a failover like a revocation.

mod common;

use std::convert::Infallible;

use common::*;
use statuslist_store::failover::JournalConfig;
use statuslist_store::testing::TestDb;
use statuslist_store::{
    Artifact, ArtifactKind, BatchRevokeOutcome, PublishJob, RevokeOutcome, StatusChange,
    StatusChangeOutcome, StoreError,
};

/// A database with pool `p` (clients `a` and `b`) allowing suspension, and one list.
async fn with_suspension() -> TestDb {
    let db = TestDb::new().await;
    let mut spec = pool_spec("p", &["a", "b"], 10_000, 100);
    spec.settings.suspension = true;
    db.store.apply_pool(&spec).await.expect("apply");
    db.store
        .ensure_capacity("p")
        .await
        .expect("provision")
        .expect("first list");
    db
}

/// `(idx, status)` of every row the publisher reads, whole (`since` None) or changed after
/// `since`.
async fn published(db: &TestDb, since: Option<i64>) -> Vec<(u64, u8)> {
    let mut seen = Vec::new();
    db.store
        .publish_due(
            10,
            0,
            |_| since,
            |job: PublishJob| {
                seen.extend(job.entries.iter().copied());
                let artifact = Artifact {
                    kind: ArtifactKind::Jwt,
                    body: b"x".to_vec(),
                    etag: format!("\"{}\"", job.list.version),
                    iat: 1_000,
                    exp: 10_000,
                    ttl: 300,
                    kid: "k".into(),
                };
                async move { Ok::<_, Infallible>(vec![artifact]) }
            },
        )
        .await
        .expect("publish pass");
    seen
}

#[tokio::test]
async fn suspension_is_reversible_each_change_a_version_and_revocation_final() {
    let db = with_suspension().await;
    let lease = claim(&db.store, "w").await;
    let one = issue_one(&db.store, &lease).await;
    let two = issue_one(&db.store, &lease).await;
    let set = |idx: u64, client: &'static str, change| {
        let (store, uri) = (db.store.clone(), one.uri.clone());
        async move {
            store
                .set_suspended(&uri, idx, client, change)
                .await
                .expect("set")
        }
    };
    use StatusChange::{Reinstate, Suspend};

    // Another client's entry, an index never issued, past i64, another URI: absent alike.
    assert_eq!(
        set(one.idx, "b", Suspend).await,
        StatusChangeOutcome::NotFound
    );
    let unused = (0..10_000u64)
        .find(|i| *i != one.idx && *i != two.idx)
        .expect("a free index");
    assert_eq!(
        set(unused, "a", Suspend).await,
        StatusChangeOutcome::NotFound
    );
    assert_eq!(
        set(u64::MAX, "a", Suspend).await,
        StatusChangeOutcome::NotFound
    );
    assert_eq!(
        db.store
            .set_suspended(&one.uri.replace("/t/", "/b/"), one.idx, "a", Suspend)
            .await
            .expect("set"),
        StatusChangeOutcome::NotFound
    );
    assert_eq!(version(&db, &one.list_id).await, 0);

    // A reinstatement of an entry never suspended changes nothing and has no time.
    assert_eq!(
        set(one.idx, "a", Reinstate).await,
        StatusChangeOutcome::Unchanged { at: None }
    );
    let StatusChangeOutcome::Changed { at: suspended } = set(one.idx, "a", Suspend).await else {
        panic!("first suspension must change");
    };
    assert_eq!(version(&db, &one.list_id).await, 1);
    assert_eq!(
        set(one.idx, "a", Suspend).await,
        StatusChangeOutcome::Unchanged {
            at: Some(suspended)
        }
    );
    assert_eq!(
        version(&db, &one.list_id).await,
        1,
        "a repeat moves nothing"
    );
    assert_eq!(published(&db, None).await, vec![(one.idx, 2)]);

    let StatusChangeOutcome::Changed { at: reinstated } = set(one.idx, "a", Reinstate).await else {
        panic!("reinstatement must change");
    };
    assert_eq!(version(&db, &one.list_id).await, 2);
    // A publisher holding version 1 reads the reinstatement as a change to 0.
    assert_eq!(published(&db, Some(1)).await, vec![(one.idx, 0)]);
    assert_eq!(
        set(one.idx, "a", Reinstate).await,
        StatusChangeOutcome::Unchanged {
            at: Some(reinstated)
        }
    );
    // Suspended again, then revoked: the revocation takes over, and is final.
    assert!(matches!(
        set(one.idx, "a", Suspend).await,
        StatusChangeOutcome::Changed { .. }
    ));
    let RevokeOutcome::Revoked { at: revoked } = db
        .store
        .revoke(&one.uri, one.idx, "a")
        .await
        .expect("revoke")
    else {
        panic!("a suspended entry must be revoked");
    };
    assert_eq!(
        db.store
            .revoke(&one.uri, one.idx, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::AlreadyRevoked { at: revoked }
    );
    let before = version(&db, &one.list_id).await;
    for change in [Suspend, Reinstate] {
        assert_eq!(
            set(one.idx, "a", change).await,
            StatusChangeOutcome::Revoked { at: revoked }
        );
    }
    assert_eq!(version(&db, &one.list_id).await, before);
    assert_eq!(published(&db, Some(before - 1)).await, vec![(one.idx, 1)]);

    // The revoked count is of revocations alone, not of suspensions.
    assert!(matches!(
        set(two.idx, "a", Suspend).await,
        StatusChangeOutcome::Changed { .. }
    ));
    assert_eq!(
        db.count("SELECT revoked FROM lists WHERE pool = 'p'").await,
        1
    );
    // A batch revocation takes a suspended entry over too.
    let BatchRevokeOutcome::Revoked(outcomes) = db
        .store
        .revoke_all(
            &[(one.uri.clone(), one.idx), (two.uri.clone(), two.idx)],
            "a",
        )
        .await
        .expect("batch")
    else {
        panic!("the batch is the client's");
    };
    assert_eq!(outcomes[0], RevokeOutcome::AlreadyRevoked { at: revoked });
    assert!(matches!(outcomes[1], RevokeOutcome::Revoked { .. }));
    assert_eq!(
        db.count("SELECT revoked FROM lists WHERE pool = 'p'").await,
        2
    );
    let mut all = published(&db, None).await;
    all.sort();
    let mut want = vec![(one.idx, 1), (two.idx, 1)];
    want.sort();
    assert_eq!(all, want);
}

#[tokio::test]
async fn a_pool_without_suspension_refuses_it_and_one_bit_cannot_have_it() {
    let db = with_pool(10_000, 100).await;
    let lease = claim(&db.store, "w").await;
    let one = issue_one(&db.store, &lease).await;
    assert_eq!(
        db.store
            .set_suspended(&one.uri, one.idx, "a", StatusChange::Suspend)
            .await
            .expect("set"),
        StatusChangeOutcome::Disabled
    );
    // Another client's entry stays absent: "disabled" tells nothing of it.
    assert_eq!(
        db.store
            .set_suspended(&one.uri, one.idx, "b", StatusChange::Suspend)
            .await
            .expect("set"),
        StatusChangeOutcome::NotFound
    );
    assert_eq!(version(&db, &one.list_id).await, 0);

    let mut spec = pool_spec("q", &["c"], 10_000, 100);
    spec.settings.bits = statuslist_format::Bits::One;
    spec.settings.suspension = true;
    let refused = db.store.apply_pool(&spec).await;
    assert!(
        matches!(&refused, Err(StoreError::Config(m)) if m.contains("2 bits")),
        "{refused:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pools WHERE name = 'q'")
            .await,
        0
    );
}

/// The journal carries suspensions and reinstatements with their order: after a failover
/// that lost them, the latest acknowledged status of each entry comes back, and a
/// revocation still wins over any of them.
#[tokio::test]
async fn the_journal_writes_back_the_latest_acknowledged_status_of_each_entry() {
    let db = with_suspension().await;
    db.store.enable_journal(JournalConfig::new("w"));
    let lease = claim(&db.store, "w").await;
    let mut e = Vec::new();
    for _ in 0..5 {
        e.push(issue_one(&db.store, &lease).await);
    }
    let set = |i: usize, change| {
        let (store, uri, idx) = (db.store.clone(), e[i].uri.clone(), e[i].idx);
        async move {
            assert!(matches!(
                store
                    .set_suspended(&uri, idx, "a", change)
                    .await
                    .expect("set"),
                StatusChangeOutcome::Changed { .. }
            ));
        }
    };
    // 0 suspended; 1 suspended then reinstated; 2 suspended then revoked; 3 revoked;
    // 4 suspended.
    set(0, StatusChange::Suspend).await;
    set(4, StatusChange::Suspend).await;
    set(1, StatusChange::Suspend).await;
    set(1, StatusChange::Reinstate).await;
    set(2, StatusChange::Suspend).await;
    for i in [2, 3] {
        assert!(matches!(
            db.store
                .revoke(&e[i].uri, e[i].idx, "a")
                .await
                .expect("revoke"),
            RevokeOutcome::Revoked { .. }
        ));
    }
    let statuses = || async {
        let client = db.client().await;
        let mut out = Vec::new();
        for x in &e {
            let row = client
                .query_opt(
                    "SELECT status FROM revocations WHERE list_id = $1 AND idx = $2",
                    &[&x.list_id, &(x.idx as i64)],
                )
                .await
                .expect("status");
            out.push(row.map(|r| r.get::<_, i16>(0)));
        }
        out
    };
    assert_eq!(
        statuses().await,
        [Some(2), Some(0), Some(1), Some(1), Some(2)]
    );

    // What a promoted standby that missed them holds: none of these changes; for 1 the
    // suspension without its reinstatement; for 4 a reinstatement made on it after the
    // promotion, which stays.
    let client = db.client().await;
    client
        .execute(
            "DELETE FROM revocations WHERE list_id = $1",
            &[&e[0].list_id],
        )
        .await
        .expect("lose");
    client
        .execute(
            "INSERT INTO revocations (list_id, idx, status, version, revoked_at)
             VALUES ($1, $2, 2, 1, now() - interval '1 hour')",
            &[&e[1].list_id, &(e[1].idx as i64)],
        )
        .await
        .expect("older suspension");
    client
        .execute(
            "INSERT INTO revocations (list_id, idx, status, version, revoked_at)
             VALUES ($1, $2, 0, 1, now() + interval '1 second')",
            &[&e[4].list_id, &(e[4].idx as i64)],
        )
        .await
        .expect("a later reinstatement");
    client
        .execute("UPDATE lists SET revoked = 0 WHERE pool = 'p'", &[])
        .await
        .expect("count");
    let restored = db.store.restore_journal().await.expect("restore");
    assert_eq!(
        statuses().await,
        [Some(2), Some(0), Some(1), Some(1), Some(0)]
    );
    assert_eq!(
        (restored.revocations_restored, restored.revocations_present),
        (4, 1),
        "{restored:?}"
    );
    assert_eq!(
        db.count("SELECT revoked FROM lists WHERE pool = 'p'").await,
        2
    );
    // Written back once: again, everything is present.
    let again = db.store.restore_journal().await.expect("restore");
    assert_eq!(
        (again.revocations_restored, again.revocations_present),
        (0, 5)
    );
}
