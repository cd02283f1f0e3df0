//! Signing keys in a PKCS#11 token, with real processes and a real module (SoftHSM2): the
//! worker signs lists through the module (no key file anywhere), `statuslist check`
//! verifies them against the service's JWKS, and a key generated in the token while the
//! worker runs (`statuslist keygen --pkcs11-module ...`) is announced before it signs,
//! the old one staying in the JWKS, as with key files.

use std::path::Path;
use std::time::Duration;

use statuslist_pkcs11::testing::SoftHsm;
use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::eventually;
use statuslist_tests::service::{
    Issuer, Worker, check, get, issue_eventually, jwks_kids, operator_for_pool, revoke, signed_by,
};

const BIN: &str = env!("CARGO_BIN_EXE_statuslist");
const TOKEN: &str = "statuslist-lists";

/// `statuslist keygen --pkcs11-module ...`: the new key's kid.
fn keygen_in_token(hsm: &SoftHsm, label: &str) -> String {
    let out = std::process::Command::new(BIN)
        .env("SOFTHSM2_CONF", hsm.conf())
        .arg("keygen")
        .arg("--pkcs11-module")
        .arg(&hsm.module)
        .args(["--pkcs11-token-label", TOKEN, "--label", label])
        .arg("--pkcs11-pin-file")
        .arg(hsm.pin_file())
        .output()
        .expect("statuslist keygen");
    assert!(
        out.status.success(),
        "keygen --pkcs11: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JWKS on stdout");
    assert!(
        doc["keys"][0].get("d").is_none(),
        "a private part in the output"
    );
    doc["keys"][0]["kid"].as_str().expect("kid").to_owned()
}

/// A token with key A (`statuslist-2026-01`), a worker signing through it (keys re-read
/// every second, announced for 3 s before they sign), the reconcile core on a manifest of
/// one Token pool for the issuer, and one entry issued in a list signed with A.
struct Signing {
    hsm: SoftHsm,
    a: String,
    _db: TestDb,
    issuer: Issuer,
    worker: Worker,
    _operator: (statuslist_tests::process::Process, tempfile::TempDir),
    uri: String,
    idx: u64,
}

impl Signing {
    /// `None` where SoftHSM2 is not installed (the test then skips, with a line).
    async fn start(name: &str) -> Option<Self> {
        let hsm = SoftHsm::new()?;
        hsm.init_token(TOKEN);
        let bin = Path::new(BIN);
        let a = keygen_in_token(&hsm, "statuslist-2026-01");
        let db = TestDb::new().await;
        let issuer = Issuer::start(bin, &format!("{name}-issuer")).await;
        let path = |p: &Path| p.to_str().expect("path").to_owned();
        let (conf, module, pin) = (path(&hsm.conf()), path(&hsm.module), path(&hsm.pin_file()));
        let worker = Worker::start(
            bin,
            &format!("worker-{name}"),
            &db.url,
            &[
                ("GENERATE_SIGNING_KEY", "false"),
                ("SOFTHSM2_CONF", &conf),
                ("PKCS11_MODULE", &module),
                ("PKCS11_TOKEN_LABEL", TOKEN),
                ("PKCS11_PIN_FILE", &pin),
                ("JWKS_MAX_AGE_SECONDS", "3"),
                ("KEY_RELOAD_SECONDS", "1"),
            ],
        );
        let operator = operator_for_pool(bin, &db.url, &worker.url, &issuer);
        let (uri, idx) = issue_eventually(bin, &worker.url, &issuer, Duration::from_secs(30)).await;
        eventually(
            Duration::from_secs(10),
            "the list signed in the token",
            || async { (signed_by(&uri).await.as_deref() == Some(a.as_str())).then_some(()) },
        )
        .await;
        Some(Self {
            hsm,
            a,
            _db: db,
            issuer,
            worker,
            _operator: operator,
            uri,
            idx,
        })
    }
}

async fn metric(worker: &Worker, name: &str) -> Option<f64> {
    let (_, body) = get(&format!("{}/metrics", worker.metrics_url)).await;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_signed_in_the_token_and_a_new_token_key_rotates_in() {
    let Some(Signing {
        hsm,
        a,
        _db,
        issuer,
        worker,
        _operator,
        uri,
        idx,
    }) = Signing::start("hsm").await
    else {
        return;
    };
    let bin = Path::new(BIN);
    // `statuslist check` fetches the list and verifies it against the service's JWKS.
    assert_eq!(check(bin, &uri, idx).await.as_deref(), Ok("VALID"));
    revoke(bin, &worker.url, &issuer, &uri, idx)
        .await
        .expect("revoke");
    eventually(Duration::from_secs(10), "INVALID, verified", || async {
        (check(bin, &uri, idx).await.as_deref() == Ok("INVALID")).then_some(())
    })
    .await;
    assert!(metric(&worker, "statuslist_signer_signatures").await >= Some(2.0));
    assert_eq!(
        metric(&worker, "statuslist_signer_failing").await,
        Some(0.0)
    );

    // B is generated in the token by another process while the worker runs: announced,
    // then signing; A stays in the JWKS (its tokens are unexpired).
    let b = keygen_in_token(&hsm, "statuslist-2026-02");
    let announced = eventually(Duration::from_secs(15), "B in the JWKS", || async {
        let kids = jwks_kids(&worker).await;
        kids.contains(&b).then_some(kids)
    })
    .await;
    assert!(announced.contains(&a), "A left the JWKS: {announced:?}");
    let mut spare = Vec::new();
    while spare.len() < 60 {
        let (u, i) = statuslist_tests::service::issue(bin, &worker.url, &issuer)
            .await
            .expect("issue");
        if u == uri {
            spare.push(i);
        }
    }
    let spare = std::sync::Mutex::new(spare);
    eventually(Duration::from_secs(30), "a list signed with B", || async {
        // A change to publish: each revocation re-signs the list.
        let next = spare.lock().expect("spare").pop()?;
        revoke(bin, &worker.url, &issuer, &uri, next).await.ok()?;
        (signed_by(&uri).await.as_deref() == Some(b.as_str())).then_some(())
    })
    .await;
    assert_eq!(check(bin, &uri, idx).await.as_deref(), Ok("INVALID"));
    let kids = jwks_kids(&worker).await;
    assert!(kids.contains(&a) && kids.contains(&b), "{kids:?}");
    // Nothing of the keys is on disk but the token's own (encrypted) objects.
    assert!(
        !worker
            .process
            .output()
            .iter()
            .any(|l| l.contains("BEGIN PRIVATE KEY")),
        "key material in the log"
    );
}

/// The token's key goes away under a running worker (its objects moved out of the
/// module's reach) and comes back: issuance and revocation go on (200, 202: they do not
/// sign), the list is served as last signed, the worker says so once (a WARN line, and
/// `statuslist_signer_failing` 1), and the revocation made meanwhile is published by
/// itself once the key is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_waits_while_the_key_is_away_and_resumes_by_itself() {
    let Some(Signing {
        hsm,
        a: _,
        _db,
        issuer,
        worker,
        _operator,
        uri,
        idx,
    }) = Signing::start("away").await
    else {
        return;
    };
    let bin = Path::new(BIN);

    let away = hsm.take_keys_away();
    // Issuance and revocation do not sign.
    let (_, second) = statuslist_tests::service::issue(bin, &worker.url, &issuer)
        .await
        .expect("issued while the key is away");
    revoke(bin, &worker.url, &issuer, &uri, idx)
        .await
        .expect("revoked while the key is away");
    eventually(Duration::from_secs(10), "the signer failing", || async {
        (metric(&worker, "statuslist_signer_failing").await == Some(1.0)).then_some(())
    })
    .await;
    // Served as last signed (VALID: the revocation is not published yet), never a 5xx.
    assert_eq!(check(bin, &uri, idx).await.as_deref(), Ok("VALID"));
    let (status, _) = get(&format!("{}/readyz", worker.url)).await;
    assert_eq!(status, Some(200));

    // Back, and another process writes to the token (so the worker's module looks again).
    away.bring_back();
    keygen_in_token(&hsm, "statuslist-2026-01-spare");
    eventually(
        Duration::from_secs(15),
        "the revocation published",
        || async { (check(bin, &uri, idx).await.as_deref() == Ok("INVALID")).then_some(()) },
    )
    .await;
    assert_eq!(
        metric(&worker, "statuslist_signer_failing").await,
        Some(0.0)
    );
    assert!(metric(&worker, "statuslist_signer_failures").await >= Some(1.0));
    assert_eq!(check(bin, &uri, second).await.as_deref(), Ok("VALID"));
    let lines = worker.process.output();
    let warned = lines
        .iter()
        .filter(|l| l.contains("signing through the PKCS#11 module failed"))
        .count();
    let resumed = lines
        .iter()
        .filter(|l| l.contains("signing through the PKCS#11 module works again"))
        .count();
    assert_eq!((warned, resumed), (1, 1), "one line per change: {lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("rendering failed")),
        "a line per list while the signer was down: {lines:#?}"
    );
}
