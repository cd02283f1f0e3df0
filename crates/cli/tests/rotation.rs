//! Signing key rotation as verifiers live it, with a real worker process: a key file added
//! at run time is picked up without a restart, announced in the JWKS before it signs
//! (for the JWKS max-age), and the old key stays in the JWKS while tokens it signed are
//! unexpired — even after its file is gone.

use std::path::Path;
use std::time::{Duration, Instant};

use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::eventually;
use statuslist_tests::service::{
    Issuer, Worker, check, get, issue_eventually, jwks_kids, operator_for_pool, revoke, run,
    signed_by,
};

const BIN: &str = env!("CARGO_BIN_EXE_statuslist");

async fn keygen(bin: &Path, key: &Path) -> String {
    let jwks = key.with_extension("jwks.json");
    let (code, _, err) = run(
        bin,
        &[
            "keygen",
            "--key",
            key.to_str().expect("path"),
            "--jwks",
            jwks.to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&jwks).expect("jwks")).expect("json");
    std::fs::remove_file(&jwks).expect("remove");
    doc["keys"][0]["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_is_announced_before_it_signs_and_the_old_one_stays_while_needed() {
    let bin = Path::new(BIN);
    let db = TestDb::new().await;
    let keys = tempfile::tempdir().expect("dir");
    let outside = tempfile::tempdir().expect("dir");
    let a = keygen(bin, &keys.path().join("2026-01.pem")).await;
    let issuer = Issuer::start(bin, "rotating").await;
    let dir = keys.path().to_str().expect("path");
    let worker = Worker::start(
        bin,
        "worker-1",
        &db.url,
        &[
            ("GENERATE_SIGNING_KEY", "false"),
            ("SIGNING_KEY_DIR", dir),
            ("JWKS_MAX_AGE_SECONDS", "3"),
            ("KEY_RELOAD_SECONDS", "1"),
        ],
    );
    let _operator = operator_for_pool(bin, &db.url, &worker.url, &issuer);
    let (uri, _) = issue_eventually(bin, &worker.url, &issuer, Duration::from_secs(30)).await;
    // More entries of the same list, to revoke one by one (each revocation re-signs it).
    let mut spare = Vec::new();
    while spare.len() < 30 {
        let (u, i) = statuslist_tests::service::issue(bin, &worker.url, &issuer)
            .await
            .expect("issue");
        if u == uri {
            spare.push(i);
        }
    }
    eventually(
        Duration::from_secs(10),
        "the first list signed with A",
        || async { (signed_by(&uri).await.as_deref() == Some(a.as_str())).then_some(()) },
    )
    .await;

    // B is added to the directory (written elsewhere, then moved in, as a Secret update
    // swaps files); the worker picks it up and announces it.
    let b = keygen(bin, &outside.path().join("2026-02.pem")).await;
    std::fs::rename(
        outside.path().join("2026-02.pem"),
        keys.path().join("2026-02.pem"),
    )
    .expect("move B in");
    let added = Instant::now();
    let mut announced = None;
    let mut first_b = None;
    let mut last_revocation: Option<Instant> = None;
    let mut revoked_idx = Vec::new();
    while first_b.is_none() {
        assert!(added.elapsed() < Duration::from_secs(30), "B never signed");
        let kids = jwks_kids(&worker).await;
        let signer = signed_by(&uri).await;
        if signer.as_deref() == Some(b.as_str()) {
            // The first B signature: B was in the JWKS before, for the max-age.
            let since = announced.expect("B signed before it was in the JWKS");
            first_b = Some(Instant::now());
            assert!(
                first_b.expect("set") - since >= Duration::from_secs(2),
                "B signed {:?} after it was announced",
                first_b.expect("set") - since
            );
        }
        if announced.is_none() && kids.contains(&b) {
            announced = Some(Instant::now());
            assert!(
                kids.contains(&a),
                "A left the JWKS when B arrived: {kids:?}"
            );
        }
        if announced.is_some()
            && last_revocation.is_none_or(|t| t.elapsed() > Duration::from_millis(500))
        {
            // A change to publish, twice a second: each re-signs the list at once, with A
            // while B is being announced, then with B.
            let next = spare.pop().expect("an entry left to revoke");
            revoked_idx.push(next);
            revoke(bin, &worker.url, &issuer, &uri, next)
                .await
                .expect("revoke");
            last_revocation = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
    }

    // Every re-render applied its changes onto the publisher's copy of the list: each
    // revoked entry reads INVALID, the others VALID.
    let until = Instant::now() + Duration::from_secs(10);
    for idx in &revoked_idx {
        eventually(
            until.saturating_duration_since(Instant::now()),
            &format!("entry {idx} INVALID"),
            || async { (check(bin, &uri, *idx).await.as_deref() == Ok("INVALID")).then_some(()) },
        )
        .await;
    }
    for idx in spare.iter().take(5) {
        assert_eq!(check(bin, &uri, *idx).await.as_deref(), Ok("VALID"));
    }

    // A's file goes; A stays in the JWKS: the tokens it signed are unexpired (24 h).
    std::fs::remove_file(keys.path().join("2026-01.pem")).expect("remove A");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        // Reloaded: the worker's own keys are B alone now; A comes from the database.
        let (_, body) = get(&format!("{}/healthz", worker.url)).await;
        assert_eq!(body, "ok");
        let kids = jwks_kids(&worker).await;
        assert!(kids.contains(&a) && kids.contains(&b), "{kids:?}");
        if worker
            .process
            .output()
            .iter()
            .filter(|l| l.contains("signing keys reloaded"))
            .count()
            >= 2
        {
            break;
        }
        assert!(Instant::now() < until, "the removal was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
    }
    println!(
        "B announced {:?} after it was added; first B signature {:?} after that",
        announced.expect("set") - added,
        first_b.expect("set") - announced.expect("set")
    );
}
