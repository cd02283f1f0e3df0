//! Publish state: due lists, exclusive claims, stored artifacts.

mod common;

use std::convert::Infallible;

use common::*;
use statuslist_store::{Artifact, ArtifactKind, PublishJob};
use tokio::sync::oneshot;

fn artifact(job: &PublishJob, exp: i64) -> Artifact {
    Artifact {
        kind: ArtifactKind::Jwt,
        body: format!("{}:{}:{:?}", job.list.id, job.list.version, job.entries).into_bytes(),
        etag: format!("\"{}-{}\"", job.list.id, job.list.version),
        iat: 1_000,
        exp,
        ttl: 300,
        kid: "kid-1".into(),
    }
}

/// A render that stores one JWT expiring at `exp`.
async fn plain(job: PublishJob, exp: i64) -> Result<Vec<Artifact>, Infallible> {
    Ok(vec![artifact(&job, exp)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_claim_never_hands_one_list_to_two_renderers() {
    let db = with_pool(1_000, 100).await;
    let now = 1_000;
    // Renderer A claims the list and holds it until told to finish.
    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let store = db.store.clone();
    let a = tokio::spawn(async move {
        let mut started = Some(started_tx);
        let mut finish = Some(finish_rx);
        store
            .publish_due(
                10,
                now,
                |_| None,
                |job| {
                    let (started, finish) = (started.take(), finish.take());
                    async move {
                        if let Some(s) = started {
                            let _ = s.send(job.list.id.clone());
                        }
                        if let Some(f) = finish {
                            let _ = f.await;
                        }
                        Ok::<_, Infallible>(vec![artifact(&job, now + 3600)])
                    }
                },
            )
            .await
    });
    let claimed = started_rx.await.expect("A started rendering");

    // Renderer B, meanwhile, gets nothing: the only due list is A's.
    let mut b_jobs = Vec::new();
    let report = db
        .store
        .publish_due(
            10,
            now,
            |_| None,
            |job| {
                b_jobs.push(job.list.id.clone());
                async move { Ok::<_, Infallible>(vec![artifact(&job, now + 3600)]) }
            },
        )
        .await
        .expect("B pass");
    assert!(
        b_jobs.is_empty() && report.published.is_empty(),
        "B rendered {b_jobs:?}"
    );

    finish_tx.send(()).expect("A is waiting");
    let report = a.await.expect("task").expect("A pass");
    assert_eq!(report.published, vec![(claimed.clone(), 0)]);

    // Published and fresh: nobody renders it again.
    let report = db
        .store
        .publish_due(10, now, |_| None, |job| plain(job, now + 3600))
        .await
        .expect("pass");
    assert!(report.published.is_empty());
    let stored = db
        .store
        .artifact(&claimed, ArtifactKind::Jwt)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!((stored.version, stored.artifact.exp), (0, now + 3600));
    assert!(
        db.store
            .artifact(&claimed, ArtifactKind::Cwt)
            .await
            .expect("read")
            .is_none()
    );

    // A revocation makes it due, with its entry in the sparse list; so does nearing exp.
    let lease = claim(&db.store, "w").await;
    let issued = issue_one(&db.store, &lease).await;
    db.store
        .revoke(&issued.uri, issued.idx, "a")
        .await
        .expect("revoke");
    let mut seen = Vec::new();
    let report = db
        .store
        .publish_due(
            10,
            now,
            |_| None,
            |job| {
                seen.push(job.entries.clone());
                async move { Ok::<_, Infallible>(vec![artifact(&job, now + 100)]) }
            },
        )
        .await
        .expect("pass");
    assert_eq!(report.published, vec![(claimed.clone(), 1)]);
    assert_eq!(seen, vec![vec![(issued.idx, 1)]]);
    // Keys are announced before they sign (the publisher registers them first).
    db.store
        .register_signing_key("kid-1", r#"{"kid":"kid-1"}"#)
        .await
        .expect("register");
    db.store
        .register_signing_key("kid-0", r#"{"kid":"kid-0"}"#)
        .await
        .expect("register");
    let report = db
        .store
        .publish_due(10, now + 50, |_| None, |job| plain(job, now + 7200))
        .await
        .expect("pass");
    assert_eq!(
        report.published,
        vec![(claimed.clone(), 1)],
        "past half its validity: re-rendered"
    );
    // In use: an announced key that has not signed yet (kid-0), and a key until the last
    // thing it signed expires (kid-1, exp now + 7200 = 8,200, recorded rounded up to the
    // minute: 8,220), re-signing or not.
    let key = |k: &str| (k.to_owned(), format!(r#"{{"kid":"{k}"}}"#));
    let in_use = |at: i64| {
        let store = db.store.clone();
        async move { store.signing_keys_in_use(at).await.expect("keys") }
    };
    assert_eq!(in_use(now).await, vec![key("kid-0"), key("kid-1")]);
    assert_eq!(in_use(now + 7_219).await, vec![key("kid-0"), key("kid-1")]);
    assert_eq!(in_use(now + 7_220).await, vec![key("kid-0")]);

    // The key's row is written when a publish passes its recorded minute, not by every
    // publish: an `exp` ten seconds later leaves it as it was, thirty seconds later (the
    // next minute) moves it.
    // (last_exp, the transaction that wrote the row version).
    let row = || async {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT last_exp, xmin::text FROM signing_keys WHERE kid = 'kid-1'",
                &[],
            )
            .await
            .expect("kid-1");
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    };
    let before = row().await;
    assert_eq!(before.0, 8_220);
    let report = db
        .store
        .publish_due(10, now + 7_200, |_| None, |job| plain(job, now + 7_210))
        .await
        .expect("pass");
    assert_eq!(report.published.len(), 1, "due again, near its exp");
    assert_eq!(
        row().await,
        before,
        "the same minute: the row is not written"
    );
    let report = db
        .store
        .publish_due(10, now + 7_210, |_| None, |job| plain(job, now + 7_230))
        .await
        .expect("pass");
    assert_eq!(report.published.len(), 1, "due again, near its exp");
    assert_eq!(row().await.0, 8_280, "the next minute: recorded");
}

/// A publisher that dies just after claiming gives its list up within seconds, long before
/// the render bound, and another takes it over; one still rendering keeps its claim past
/// the claim's own length (it is extended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_dies_mid_render_gives_its_list_up_long_before_the_render_bound() {
    use std::time::{Duration, Instant};
    let db = with_pool(1_000, 100).await;
    let mut config = statuslist_store::testing::config(&db.url);
    config.render_bound = Duration::from_secs(120);
    let store = statuslist_store::Store::connect(&config)
        .await
        .expect("store");
    // A renderer that claims a list and never finishes; aborted by the caller.
    let hanging = |store: statuslist_store::Store| {
        let (started_tx, started_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut started = Some(started_tx);
            store
                .publish_due(
                    10,
                    0,
                    |_| None,
                    |job| {
                        if let Some(s) = started.take() {
                            let _ = s.send(job.list.id.clone());
                        }
                        async move {
                            std::future::pending::<()>().await;
                            Ok::<_, Infallible>(vec![artifact(&job, 10_000)])
                        }
                    },
                )
                .await
        });
        (task, started_rx)
    };
    let pass = |store: statuslist_store::Store| async move {
        store
            .publish_due(10, 0, |_| None, |job| plain(job, 10_000))
            .await
            .expect("B pass")
            .published
    };
    let taken_over = |what: &'static str| {
        let store = db.store.clone();
        async move {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                let published = pass(store.clone()).await;
                if !published.is_empty() {
                    return published;
                }
                assert!(
                    Instant::now() < until,
                    "{what}: a dead renderer held its list for a minute"
                );
                tokio::time::sleep(Duration::from_millis(200)).await; // polling
            }
        }
    };

    // Dies at once, before any extension of its claim.
    let (a, started) = hanging(store.clone());
    let claimed = started.await.expect("A started rendering");
    a.abort();
    let _ = a.await;
    assert_eq!(
        taken_over("dead on claim").await,
        vec![(claimed.clone(), 0)]
    );

    // A revocation makes the list due again; this renderer lives for twice the claim's
    // length, and nobody takes the list meanwhile; then it dies too.
    let lease = claim(&db.store, "w").await;
    let issued = issue_one(&db.store, &lease).await;
    db.store
        .revoke(&issued.uri, issued.idx, "a")
        .await
        .expect("revoke");
    let (a, started) = hanging(store);
    assert_eq!(started.await.expect("A started rendering"), claimed);
    let alive_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < alive_until {
        assert_eq!(
            pass(db.store.clone()).await,
            vec![],
            "taken from a live renderer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // polling
    }
    a.abort();
    let _ = a.await;
    assert_eq!(taken_over("dead mid-render").await, vec![(claimed, 1)]);
}

/// Pool `q` (client `c`) with one list, beside `with_pool`'s `p`.
async fn second_pool(db: &statuslist_store::testing::TestDb) {
    db.store
        .apply_pool(&pool_spec("q", &["c"], 1_000, 100))
        .await
        .expect("apply");
    db.store
        .ensure_capacity("q")
        .await
        .expect("provision")
        .expect("a list");
}

#[tokio::test]
async fn a_failed_render_is_reported_backed_off_and_does_not_starve_the_others() {
    let db = with_pool(1_000, 100).await;
    // A second pool, with a list of its own that renders fine.
    second_pool(&db).await;
    let failing = db.store.capacity("p").await.expect("capacity").lists[0]
        .id
        .clone();
    let report = db
        .store
        .publish_due(
            10,
            0,
            |_| None,
            |job| {
                let fail = job.list.id == failing;
                async move {
                    if fail {
                        Err("no signing key".to_owned())
                    } else {
                        Ok(vec![artifact(&job, 10_000)])
                    }
                }
            },
        )
        .await
        .expect("pass");
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, failing);
    assert_eq!(report.published.len(), 1, "the other list is published");
    // Left alone for a moment (not retried back to back), then retried.
    let report = db
        .store
        .publish_due(10, 0, |_| None, |job| plain(job, 10_000))
        .await
        .expect("pass");
    assert!(report.published.is_empty());
    db.client()
        .await
        .execute(
            "UPDATE list_publish SET claimed_until = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("end the backoff");
    let report = db
        .store
        .publish_due(10, 0, |_| None, |job| plain(job, 10_000))
        .await
        .expect("pass");
    assert_eq!(report.published, vec![(failing, 0)]);
}

/// A render that hangs is cut off at the render bound, reported, and the pass publishes
/// the other lists.
#[tokio::test]
async fn a_render_past_its_bound_does_not_hold_up_the_others() {
    let db = with_pool(1_000, 100).await;
    second_pool(&db).await;
    let hanging = db.store.capacity("p").await.expect("capacity").lists[0]
        .id
        .clone();
    let mut config = statuslist_store::testing::config(&db.url);
    config.render_bound = std::time::Duration::from_millis(300);
    let store = statuslist_store::Store::connect(&config)
        .await
        .expect("store");
    let report = store
        .publish_due(
            10,
            0,
            |_| None,
            |job| {
                let hang = job.list.id == hanging;
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(vec![artifact(&job, 10_000)])
                }
            },
        )
        .await
        .expect("pass");
    assert_eq!(report.published.len(), 1);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, hanging);
    assert!(
        report.failed[0].1.contains("longer than"),
        "{:?}",
        report.failed
    );
}

/// A renderer that keeps a copy of the list at version v reads only what changed after v.
#[tokio::test]
async fn a_renderer_with_a_copy_reads_only_the_changes() {
    let db = with_pool(1_000, 100).await;
    let lease = claim(&db.store, "w").await;
    let first = issue_one(&db.store, &lease).await;
    let second = issue_one(&db.store, &lease).await;
    db.store
        .revoke(&first.uri, first.idx, "a")
        .await
        .expect("revoke");
    let mut jobs = Vec::new();
    db.store
        .publish_due(
            10,
            0,
            |_| None,
            |job| {
                jobs.push(job.clone());
                async move { Ok::<_, Infallible>(vec![artifact(&job, 10_000)]) }
            },
        )
        .await
        .expect("pass");
    assert_eq!(jobs.len(), 1);
    let v1 = jobs[0].list.version;
    assert_eq!(
        (jobs[0].since, jobs[0].entries.clone()),
        (None, vec![(first.idx, 1)])
    );

    db.store
        .revoke(&second.uri, second.idx, "a")
        .await
        .expect("revoke");
    let mut jobs = Vec::new();
    db.store
        .publish_due(
            10,
            0,
            |_| Some(v1),
            |job| {
                jobs.push(job.clone());
                async move { Ok::<_, Infallible>(vec![artifact(&job, 10_000)]) }
            },
        )
        .await
        .expect("pass");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].since, Some(v1));
    assert_eq!(
        jobs[0].entries,
        vec![(second.idx, 1)],
        "only the change since v1"
    );
    assert!(jobs[0].list.version > v1);
}

/// A publish that shows a status change reports the time since the change's commit (the
/// worker's `statuslist_publish_delay_seconds`); one that shows none reports nothing.
#[tokio::test]
async fn a_publish_reports_the_delay_from_the_status_changes_it_shows() {
    let db = with_pool(1_000, 100).await;
    let lease = claim(&db.store, "w").await;
    let first = issue_one(&db.store, &lease).await;
    let pass = || async {
        db.store
            .publish_due(10, 0, |_| None, |job| plain(job, 10_000))
            .await
            .expect("pass")
    };
    let report = pass().await;
    assert_eq!(report.published.len(), 1);
    assert!(report.change_delays.is_empty(), "{report:?}");
    // The revocation's time is an hour ago: the delay says so.
    db.store
        .revoke(&first.uri, first.idx, "a")
        .await
        .expect("revoke");
    db.client()
        .await
        .execute(
            "UPDATE revocations SET revoked_at = now() - interval '1 hour'",
            &[],
        )
        .await
        .expect("backdate");
    let (lists, oldest) = db.store.publish_backlog().await.expect("backlog");
    assert_eq!(lists, 1);
    assert!((3600.0..3700.0).contains(&oldest), "{oldest}");
    let report = pass().await;
    assert_eq!(db.store.publish_backlog().await.expect("backlog"), (0, 0.0));
    assert_eq!(report.change_delays.len(), 1, "{report:?}");
    assert!(
        (3600.0..3700.0).contains(&report.change_delays[0]),
        "{report:?}"
    );
    assert!(pass().await.published.is_empty(), "nothing due");
}
