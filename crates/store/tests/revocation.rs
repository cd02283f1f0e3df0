//! Revocation: owner-checked, final, versioned.

mod common;

use common::*;
use statuslist_store::testing::scans;
use statuslist_store::{BatchRevokeOutcome, RevokeOutcome};

/// Empties slot `idx` of list `list_id`: its entry and its issuance key go, as if never
/// issued (the service writes and keeps the two together).
async fn empty_slot(db: &statuslist_store::testing::TestDb, list_id: &str, idx: u64) {
    db.client()
        .await
        .execute(
            "WITH e AS (DELETE FROM entries WHERE list_id = $1 AND idx = $2 RETURNING list_id, idx)
             DELETE FROM issuance_keys k USING e WHERE k.list_id = e.list_id AND k.idx = e.idx",
            &[&list_id, &(idx as i64)],
        )
        .await
        .expect("a hole");
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
        .query_one("SELECT status FROM revocations", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(status, 1);
    let cap = db.store.capacity("p").await.expect("capacity");
    assert_eq!((cap.allocated, cap.revoked), (1, 1));
}

/// A burst on one list: every revocation acknowledged, each exactly once, durable, with
/// a stable `revokedAt`; duplicates within the burst agree; the list's version moves once
/// per batch, not once per revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_revocations_of_one_list() {
    const N: usize = 1000;
    let db = with_pool(10_000, 1_000).await;
    let lease = claim(&db.store, "w").await;
    let mut issued = Vec::new();
    for _ in 0..N {
        issued.push(issue_one(&db.store, &lease).await);
    }
    let list = issued[0].list_id.clone();
    assert!(issued.iter().all(|i| i.list_id == list));
    // Every entry once, and the first hundred twice more, all at the same time.
    let requests: Vec<_> = issued
        .iter()
        .chain(issued.iter().take(100))
        .chain(issued.iter().take(100))
        .cloned()
        .collect();
    let answers = futures_util::future::join_all(requests.iter().map(|i| {
        let (store, uri, idx) = (db.store.clone(), i.uri.clone(), i.idx);
        tokio::spawn(async move { (idx, store.revoke(&uri, idx, "a").await.expect("revoke")) })
    }))
    .await;
    let mut at_of = std::collections::HashMap::new();
    let mut revoked = 0;
    for answer in answers {
        let (idx, outcome) = answer.expect("task");
        let at = match outcome {
            RevokeOutcome::Revoked { at } => {
                revoked += 1;
                at
            }
            RevokeOutcome::AlreadyRevoked { at } => at,
            RevokeOutcome::NotFound => panic!("entry {idx} not found"),
        };
        assert_eq!(
            *at_of.entry(idx).or_insert(at),
            at,
            "one revokedAt per entry"
        );
    }
    assert_eq!(revoked, N, "each entry revoked exactly once");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM revocations WHERE list_id = '{list}' AND status = 1"
        ))
        .await,
        N as i64
    );
    let cap = db.store.capacity("p").await.expect("capacity");
    assert_eq!(
        cap.revoked, N as u64,
        "the list's counter: duplicates not counted"
    );
    let v = version(&db, &list).await;
    assert!((1..=N as i64 + 200).contains(&v), "{v}");
    // Repeats answer the original time.
    for i in issued.iter().take(20) {
        assert_eq!(
            db.store.revoke(&i.uri, i.idx, "a").await.expect("revoke"),
            RevokeOutcome::AlreadyRevoked { at: at_of[&i.idx] }
        );
    }
    println!("{N} revocations (+200 duplicates) of one list: version moved by {v}");
}

/// Revocation and replay follow the registration (the pool a clientId is registered in),
/// not the bare clientId: once `a` leaves pool `p` and another pool registers it, that
/// registration can neither revoke nor replay-read what `a` issued under `p`.
#[tokio::test]
async fn a_re_registered_client_id_has_no_power_over_entries_of_its_old_registration() {
    let db = with_pool(10_000, 100).await;
    let lease = claim(&db.store, "w").await;
    let first = request("a", FAR_FUTURE);
    let issued = db.store.issue(&lease, &first).await.expect("issue");
    let kept = issue_one(&db.store, &lease).await;

    // `a` leaves `p`; another tenant's pool `q` registers the same clientId.
    db.store
        .apply_pool(&pool_spec("p", &["b"], 10_000, 100))
        .await
        .expect("drop a from p");
    let outcome = db
        .store
        .apply_pool(&pool_spec("q", &["a"], 10_000, 100))
        .await
        .expect("q");
    assert!(outcome.conflicts.is_empty(), "{:?}", outcome.conflicts);

    // The new registration cannot revoke the old entry: the answer of an absent one.
    assert_eq!(
        db.store
            .revoke(&issued.uri, issued.idx, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::NotFound
    );
    // Nor learn its slot by replaying the old request: answered as a changed request.
    assert!(matches!(
        db.store.find_issued(&first).await,
        Err(statuslist_store::StoreError::IdempotencyConflict)
    ));
    let status: i16 = db
        .client()
        .await
        .query_one(
            "SELECT coalesce((SELECT status FROM revocations WHERE list_id = $1 AND idx = $2), 0::smallint)",
            &[&issued.list_id, &(issued.idx as i64)],
        )
        .await
        .expect("entry")
        .get(0);
    assert_eq!(status, 0, "the old entry is untouched");

    // Back in its own pool, the clientId has its authority again.
    db.store
        .apply_pool(&pool_spec("q", &[], 10_000, 100))
        .await
        .expect("drop a from q");
    db.store
        .apply_pool(&pool_spec("p", &["a", "b"], 10_000, 100))
        .await
        .expect("a back in p");
    assert!(matches!(
        db.store
            .revoke(&kept.uri, kept.idx, "a")
            .await
            .expect("revoke"),
        RevokeOutcome::Revoked { .. }
    ));
    assert_eq!(
        db.store.find_issued(&first).await.expect("replay"),
        Some(statuslist_store::IssueOutcome {
            created: false,
            ..issued
        })
    );
}

/// Revocations over many lists at once, in random order, from many tasks of three stores
/// (so batches of three workers' flushers, and lone statements, span the same lists):
/// every one is
/// acknowledged, none fails (no deadlock between batches, with each other or with the
/// operator marking lists Full meanwhile), and each list's counter is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_across_many_lists_never_fail() {
    const LISTS: usize = 10;
    let db = with_pool(100, 100).await;
    let issued: Vec<_> = full_lists(&db, LISTS).await.into_iter().flatten().collect();
    let lists: std::collections::HashSet<_> = issued.iter().map(|i| i.list_id.clone()).collect();
    assert_eq!(lists.len(), LISTS, "{} entries", issued.len());
    // A deterministic shuffle: neighbours in the request stream belong to different lists.
    let n = issued.len();
    let order: Vec<usize> = (0..n).map(|i| (i * 7919) % n).collect();
    let store = db.store.clone();
    let marker = tokio::spawn(async move {
        for _ in 0..50 {
            store.mark_full("p").await.expect("mark full");
            store.capacity("p").await.expect("capacity");
        }
    });
    // Three stores, as three workers: batches of different processes over the same lists.
    let config = statuslist_store::testing::config(&db.url);
    let stores = [
        db.store.clone(),
        statuslist_store::Store::connect(&config)
            .await
            .expect("second store"),
        statuslist_store::Store::connect(&config)
            .await
            .expect("third store"),
    ];
    let answers = futures_util::future::join_all(order.iter().enumerate().map(|(k, &i)| {
        let (store, uri, idx) = (stores[k % 3].clone(), issued[i].uri.clone(), issued[i].idx);
        tokio::spawn(async move { store.revoke(&uri, idx, "a").await })
    }))
    .await;
    marker.await.expect("marker");
    let failed: Vec<String> = answers
        .into_iter()
        .filter_map(|a| match a.expect("task") {
            Ok(RevokeOutcome::Revoked { .. }) => None,
            other => Some(format!("{other:?}")),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {n} not revoked: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let cap = db.store.capacity("p").await.expect("capacity");
    assert_eq!(cap.revoked, n as u64);
    for list in &cap.lists {
        if lists.contains(&list.id) {
            assert_eq!(list.revoked, 100, "{}", list.id);
        }
    }
}

/// A revocation is notified on `statuslist_changed`, naming its list, once its commit is
/// visible to every other connection (the notification is sent after the commit, not in
/// the revoking transaction); an answer that changed nothing (a repeat, an absent entry,
/// another client's) notifies nothing.
#[tokio::test]
async fn a_revocation_is_notified_after_its_commit_and_only_a_change_is() {
    use statuslist_store::notify::{CHANNEL_CHANGED, Event};
    use std::time::Duration;
    let db = with_pool(100, 100).await;
    let mut issued = Vec::new();
    for _ in 0..2 {
        let lease = claim(&db.store, "w").await;
        issued.push(issue_one(&db.store, &lease).await);
        while db
            .store
            .issue(&lease, &request("a", FAR_FUTURE))
            .await
            .is_ok()
        {}
        db.store.release_lease(&lease).await.expect("release");
        db.store.mark_full("p").await.expect("mark full");
        db.store.ensure_capacity("p").await.expect("provision");
    }
    let (first, second) = (&issued[0], &issued[1]);
    assert_ne!(first.list_id, second.list_id);
    let (mut events, _task) = db.store.listen(&[CHANNEL_CHANGED]);
    assert_eq!(events.recv().await.expect("event"), Event::Connected);
    let next = |events: &mut tokio::sync::broadcast::Receiver<Event>| {
        let mut events = events.resubscribe();
        async move {
            tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("a notification within 10 s")
                .expect("event")
        }
    };
    let pending = next(&mut events);
    let at = match db.store.revoke(&first.uri, first.idx, "a").await {
        Ok(RevokeOutcome::Revoked { at }) => at,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        pending.await,
        Event::Notification {
            channel: CHANNEL_CHANGED.into(),
            payload: first.list_id.clone()
        }
    );
    // Notified, so committed: another connection sees it.
    let seen = db
        .count(&format!(
            "SELECT count(*) FROM revocations WHERE list_id = '{}' AND idx = {}",
            first.list_id, first.idx
        ))
        .await;
    assert_eq!(seen, 1);

    // Nothing changes: a repeat, another client's, an absent entry. Then a change on the
    // second list: the next notification names it (nothing came in between).
    let pending = next(&mut events);
    assert_eq!(
        db.store
            .revoke(&first.uri, first.idx, "a")
            .await
            .expect("repeat"),
        RevokeOutcome::AlreadyRevoked { at }
    );
    assert_eq!(
        db.store
            .revoke(&first.uri, first.idx + 1, "b")
            .await
            .expect("other client"),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        db.store
            .revoke(&first.uri, 99_999, "a")
            .await
            .expect("absent"),
        RevokeOutcome::NotFound
    );
    assert!(matches!(
        db.store.revoke(&second.uri, second.idx, "a").await,
        Ok(RevokeOutcome::Revoked { .. })
    ));
    assert_eq!(
        pending.await,
        Event::Notification {
            channel: CHANNEL_CHANGED.into(),
            payload: second.list_id.clone()
        }
    );
}

/// One call revoking entries of several lists at once, interleaved. Each of these refuses
/// the batch at its position and changes nothing: an entry under another path ending in
/// its list's id, one of a list never made, one past the list, and an index its own list
/// does not hold but the batch's other lists do; so does another client's batch. Without
/// them every entry of every list is revoked once, a repeat answered as its first, and
/// each list's version moves once.
#[tokio::test]
async fn a_batch_over_several_lists_is_looked_up_entry_by_entry() {
    let db = with_pool(100, 100).await;
    // Each list filled before the next is made; four of its entries revoked.
    let full = full_lists(&db, 3).await;
    let issued: Vec<_> = full.iter().flat_map(|l| l[..4].iter().cloned()).collect();
    // An entry of the first list left out of the batches.
    let left_out = full[0].last().cloned();
    let lists: std::collections::HashSet<_> = issued.iter().map(|i| i.list_id.clone()).collect();
    assert_eq!(lists.len(), 3);
    let mut good: Vec<(String, u64)> = issued.iter().map(|i| (i.uri.clone(), i.idx)).collect();
    // Interleaved: neighbours belong to different lists.
    good.sort_by_key(|(uri, idx)| (*idx, uri.clone()));
    let first = &issued[0];
    // Its slot emptied: the other lists hold that index, this one no longer does.
    let hole = left_out.expect("an entry left out");
    empty_slot(&db, &hole.list_id, hole.idx).await;
    for bad in [
        (first.uri.replace("/t/", "/b/"), first.idx),
        (
            "https://status.example.test/t/000000000000".to_owned(),
            first.idx,
        ),
        (first.uri.clone(), 100),
        (hole.uri.clone(), hole.idx),
    ] {
        let mut batch = good.clone();
        batch.insert(5, bad.clone());
        assert_eq!(
            db.store.revoke_all(&batch, "a").await.expect("batch"),
            BatchRevokeOutcome::Refused { position: 5 },
            "{bad:?}"
        );
    }
    assert_eq!(
        db.store.revoke_all(&good, "b").await.expect("batch"),
        BatchRevokeOutcome::Refused { position: 0 },
        "another client's"
    );
    assert_eq!(db.count("SELECT count(*) FROM revocations").await, 0);
    let mut batch = good.clone();
    batch.push(good[3].clone());
    let BatchRevokeOutcome::Revoked(outcomes) =
        db.store.revoke_all(&batch, "a").await.expect("batch")
    else {
        panic!("every entry is the client's");
    };
    assert!(
        outcomes[..good.len()]
            .iter()
            .all(|o| matches!(o, RevokeOutcome::Revoked { .. }))
    );
    assert_eq!(outcomes[good.len()], outcomes[3]);
    assert_eq!(
        db.count("SELECT count(*) FROM revocations WHERE status = 1")
            .await,
        12
    );
    for list in &lists {
        assert_eq!(version(&db, list).await, 1, "{list}: one version per batch");
    }
}

/// Single revocations (each a request of its own, gathered into batches by the store) find
/// their entries list by list, one lookup per list a batch names. Interleaved over
/// three lists and all in flight at once, each of these is not found and changes nothing:
/// an entry under another path ending in its list's id, one of a list never made, one
/// under an id that cannot be a list's, one past the list, an index its own list does not
/// hold while another list's entry at that index is revoked at the same time, and another
/// client's entry; every other is revoked once, and a repeat is answered with its first
/// time. (Which rows share a batch is the store's choice here; the crate's own test of
/// `revoke_rows` puts such rows in one batch.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_revocations_look_their_entries_up_list_by_list() {
    let db = with_pool(100, 100).await;
    // Each list filled (it holds every index) before the next is made.
    let full = full_lists(&db, 3).await;
    assert!(full.iter().all(|l| l.len() == 100));
    let issued: Vec<_> = full.iter().flat_map(|l| l[..4].iter().cloned()).collect();
    let lists: std::collections::HashSet<_> = issued.iter().map(|i| i.list_id.clone()).collect();
    assert_eq!(lists.len(), 3);
    let first = &issued[0];
    // A hole in the first list at an index the batch revokes in the second.
    let hole = issued[4..8]
        .iter()
        .find(|i| issued[..4].iter().all(|f| f.idx != i.idx))
        .map(|i| (first.uri.clone(), i.idx))
        .expect("an index the first list's four do not have");
    empty_slot(&db, &first.list_id, hole.1).await;
    let mut good: Vec<(String, u64, &str)> =
        issued.iter().map(|i| (i.uri.clone(), i.idx, "a")).collect();
    good.sort_by_key(|(uri, idx, _)| (*idx, uri.clone()));
    let bad = vec![
        (first.uri.replace("/t/", "/b/"), first.idx, "a"),
        (
            "https://status.example.test/t/000000000000".to_owned(),
            first.idx,
            "a",
        ),
        (
            "https://status.example.test/t/not-a-list".to_owned(),
            1,
            "a",
        ),
        (first.uri.clone(), 100, "a"),
        (hole.0.clone(), hole.1, "a"),
        (issued[1].uri.clone(), issued[1].idx, "b"),
    ];
    let all: Vec<_> = good.iter().chain(&bad).collect();
    let outcomes = futures_util::future::join_all(
        all.iter()
            .map(|(uri, idx, client)| db.store.revoke(uri, *idx, client)),
    )
    .await;
    for (request, outcome) in all.iter().zip(&outcomes) {
        let outcome = outcome.as_ref().expect("answered");
        if good.contains(request) {
            assert!(
                matches!(outcome, RevokeOutcome::Revoked { .. }),
                "{request:?}: {outcome:?}"
            );
        } else {
            assert_eq!(*outcome, RevokeOutcome::NotFound, "{request:?}");
        }
    }
    assert_eq!(
        db.count("SELECT count(*) FROM revocations WHERE status = 1")
            .await,
        12
    );
    for list in &lists {
        assert_eq!(
            db.count(&format!("SELECT revoked FROM lists WHERE id = '{list}'"))
                .await,
            4,
            "{list}"
        );
    }
    let (uri, idx, _) = &good[5];
    let Ok(RevokeOutcome::Revoked { at }) = &outcomes[5] else {
        panic!("revoked");
    };
    assert_eq!(
        db.store.revoke(uri, *idx, "a").await.expect("again"),
        RevokeOutcome::AlreadyRevoked { at: *at }
    );
}

/// A list whose partition is dropped (the list retired and swept) after a revocation in it
/// on the same connection (a store of one connection, whose cached batch plan met the
/// partition): its other entries are not found, an answer and not an error, and the
/// connection goes on revoking in the next list.
#[tokio::test]
async fn a_list_swept_after_a_revocation_in_it_has_no_entries() {
    let db = with_pool(100, 100).await;
    let now = 1_700_000_000;
    let lease = claim(&db.store, "w").await;
    let mut issued = Vec::new();
    while let Ok(outcome) = db.store.issue(&lease, &request("a", now + 10)).await {
        issued.push(outcome);
    }
    db.store.release_lease(&lease).await.expect("release");
    let mut config = statuslist_store::testing::config(&db.url);
    config.max_connections = 1;
    let store = statuslist_store::Store::connect(&config)
        .await
        .expect("a store of one connection");
    let (a, b) = (&issued[0], &issued[1]);
    assert!(matches!(
        store.revoke(&a.uri, a.idx, "a").await.expect("revoke"),
        RevokeOutcome::Revoked { .. }
    ));
    db.store.mark_full("p").await.expect("mark full");
    db.store.ensure_capacity("p").await.expect("provision");
    assert_eq!(
        db.store
            .retire_expired("p", now + 11)
            .await
            .expect("retire"),
        vec![a.list_id.clone()]
    );
    assert_eq!(
        db.store
            .drop_dead_partitions(std::time::Duration::from_secs(60))
            .await
            .expect("sweep"),
        vec![a.list_id.clone()]
    );
    for _ in 0..2 {
        assert_eq!(
            store.revoke(&b.uri, b.idx, "a").await.expect("an answer"),
            RevokeOutcome::NotFound
        );
    }
    let next = db.store.capacity("p").await.expect("capacity");
    let lease = claim(&db.store, "w").await;
    let c = db
        .store
        .issue(&lease, &request("a", FAR_FUTURE))
        .await
        .expect("issue");
    assert_ne!(c.list_id, a.list_id);
    assert!(next.lists.iter().any(|l| l.id == c.list_id));
    assert!(matches!(
        store.revoke(&c.uri, c.idx, "a").await.expect("revoke"),
        RevokeOutcome::Revoked { .. }
    ));
}

/// A revocation batch finds its entries through their issuance keys, one index probe a
/// row, whatever lists it names (schema 20): it reads no list's entries partition (a
/// statement per list, parsed and planned at every call, did) and scans nothing. What
/// it read is the transaction's own counts of the tables.
#[tokio::test]
async fn a_batch_finds_its_entries_by_their_keys_alone() {
    let db = with_pool(100, 100).await;
    let full = full_lists(&db, 3).await;
    let mut client = db.client().await;
    let tx = client.transaction().await.expect("begin");
    let uris: Vec<&str> = vec![
        &full[0][0].uri,
        &full[1][0].uri,
        &full[2][0].uri,
        &full[2][1].uri,
    ];
    let idxs: Vec<i64> = vec![
        full[0][0].idx as i64,
        full[1][0].idx as i64,
        full[2][0].idx as i64,
        full[2][1].idx as i64,
    ];
    // The last one is asked for by another client: not revoked.
    let clients = vec!["a", "a", "a", "b"];
    let revoked: Vec<i64> = tx
        .query(
            "SELECT out_n FROM statuslist_revoke($1, $2, $3, NULL) ORDER BY out_n",
            &[&uris, &idxs, &clients],
        )
        .await
        .expect("revoke")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(revoked, [1, 2, 3]);
    let (keys_scanned, keys_probed) = scans(&tx, "issuance_keys").await;
    assert_eq!(keys_scanned, 0, "issuance keys scanned");
    assert!(keys_probed >= 1, "issuance keys probed {keys_probed} times");
    assert_eq!(
        scans(&tx, "entries%").await,
        (0, 0),
        "entries scanned, probed"
    );
    tx.rollback().await.expect("rollback");
}
