//! Revocation under load with real processes: concurrent `statuslist revoke` clients, the
//! worker SIGKILLed while batches are in flight. Every 202 must be durable; what was not
//! acknowledged can be sent again and ends revoked exactly once.

use std::path::Path;
use std::time::Duration;

use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::eventually;
use statuslist_tests::service::{
    Issuer, Worker, issue, issue_eventually, operator_for_pool, revoke,
};

const BIN: &str = env!("CARGO_BIN_EXE_statuslist");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_revocation_survives_a_killed_worker() {
    const N: usize = 200;
    let bin = Path::new(BIN);
    let db = TestDb::new().await;
    let issuer = Issuer::start(bin, "revoker").await;
    let worker = Worker::start(bin, "worker-1", &db.url, &[]);
    let _operator = operator_for_pool(bin, &db.url, &worker.url, &issuer);
    let mut entries =
        vec![issue_eventually(bin, &worker.url, &issuer, Duration::from_secs(30)).await];
    while entries.len() < N {
        entries.push(issue(bin, &worker.url, &issuer).await.expect("issue"));
    }

    // All at once; the worker dies while they are in flight.
    let url = worker.url.clone();
    let clients: Vec<_> = entries
        .iter()
        .cloned()
        .map(|(uri, idx)| {
            let (url, issuer) = (url.clone(), &issuer);
            async move { revoke(bin, &url, issuer, &uri, idx).await.is_ok() }
        })
        .collect();
    let killer = async {
        // Once some revocations are acknowledged, kill it mid-stream.
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let done = db.count("SELECT count(*) FROM revocations").await;
            if done >= (N / 4) as i64 || tokio::time::Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await; // polling a condition
        }
        worker.process.signal("KILL");
    };
    let (acked, ()) = tokio::join!(futures_util::future::join_all(clients), killer);
    let acknowledged: Vec<_> = entries
        .iter()
        .zip(&acked)
        .filter(|(_, ok)| **ok)
        .map(|(e, _)| e.clone())
        .collect();
    let revoked_rows = db.count("SELECT count(*) FROM revocations").await;
    assert!(!acknowledged.is_empty());
    assert!(
        revoked_rows >= acknowledged.len() as i64,
        "{revoked_rows} rows revoked, {} acknowledged",
        acknowledged.len()
    );
    for (uri, idx) in &acknowledged {
        let list = uri.rsplit('/').next().expect("id");
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM revocations WHERE list_id = '{list}' AND idx = {idx} AND status = 1"
            ))
            .await,
            1,
            "acknowledged revocation of {uri} {idx} lost"
        );
    }

    // A new worker; the unacknowledged ones are sent again: everything ends revoked.
    let worker = Worker::start(bin, "worker-2", &db.url, &[]);
    for (uri, idx) in entries
        .iter()
        .zip(&acked)
        .filter(|(_, ok)| !**ok)
        .map(|(e, _)| e)
    {
        let mut tries = 0;
        while revoke(bin, &worker.url, &issuer, uri, *idx).await.is_err() {
            tries += 1;
            assert!(tries < 100, "revocation of {uri} {idx} not accepted");
            tokio::time::sleep(Duration::from_millis(100)).await; // the worker is starting
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM revocations").await, N as i64);
    // Published by the new worker: every list's latest version rendered.
    eventually(Duration::from_secs(10), "every list published", || async {
        (db.count("SELECT count(*) FROM lists l JOIN list_publish p ON p.list_id = l.id WHERE p.published_version < l.version")
            .await
            == 0)
            .then_some(())
    })
    .await;
    println!(
        "{} of {N} revocations acknowledged before the kill, all durable",
        acknowledged.len()
    );
}
