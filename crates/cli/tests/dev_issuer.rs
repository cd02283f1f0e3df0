//! `statuslist dev-issuer` (the chart's demo issuer for Tilt and kind) as a real process
//! in front of a real worker: the StatusLists register its JWKS, and the flow a developer
//! copies from the Tilt output works — issue, check VALID, revoke, check INVALID — for
//! both formats; bad requests get a clear 400.

use std::path::Path;
use std::time::Duration;

use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::eventually;
use statuslist_tests::process::{Process, free_port};
use statuslist_tests::service::{Pool, Worker, get, operator_on_manifests};

const BIN: &str = env!("CARGO_BIN_EXE_statuslist");

/// `None` while nothing listens yet.
async fn try_post(url: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new().post(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

async fn post(url: &str) -> (u16, String) {
    try_post(url).await.expect("the demo issuer answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_issuer_issues_checks_and_revokes_through_the_service() {
    let bin = Path::new(BIN);
    let db = TestDb::new().await;
    let worker = Worker::start(bin, "worker", &db.url, &[]);
    let addr = format!("127.0.0.1:{}", free_port());
    let demo = format!("http://{addr}");
    let _issuer = Process::start(
        "dev-issuer",
        bin,
        &["dev-issuer"],
        &[
            ("LISTEN_ADDR", addr.as_str()),
            ("SERVICE_URL", worker.url.as_str()),
            ("CLIENT_IDS", "demo-token,demo-bits"),
        ],
    );
    // Its JWKS must answer before the pools name it: a worker that finds an issuer's
    // JWKS unreachable waits its refetch interval before asking again.
    eventually(
        Duration::from_secs(30),
        "the demo issuer's /healthz",
        || async { (get(&format!("{demo}/healthz")).await.0 == Some(200)).then_some(()) },
    )
    .await;
    let jwks = format!("{demo}/jwks.json");
    let manifests = tempfile::tempdir().expect("dir");
    for (name, format, client) in [
        ("token", "Token", "demo-token"),
        ("bits", "Bitstring", "demo-bits"),
    ] {
        std::fs::write(
            manifests.path().join(format!("{name}.yaml")),
            Pool {
                // A Bitstring list holds at least 131,072 entries (16 KB).
                entries_per_list: if format == "Bitstring" { 131_072 } else { 1000 },
                ..Pool::new(name, format, &worker.url, client, &jwks)
            }
            .yaml(""),
        )
        .expect("write");
    }
    let _operator = operator_on_manifests(bin, "operator", &db.url, manifests.path());

    for (client, kind) in [("demo-token", "/t/"), ("demo-bits", "/b/")] {
        // The pools are provisioned and the worker learns the issuer: until then the
        // service answers 503 or 401 (printed if it never comes).
        let answer = statuslist_testkit::eventually(
            Duration::from_secs(30),
            &format!("an issuance through the demo issuer ({client})"),
            || async {
                match try_post(&format!("{demo}/issue?client={client}")).await {
                    Some((200, body)) => Some(body),
                    _ => None,
                }
            },
        )
        .await;
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        let uri = answer["uri"].as_str().expect("uri").to_owned();
        let idx = answer["idx"].as_u64().expect("idx");
        assert!(uri.starts_with(&worker.url) && uri.contains(kind), "{uri}");
        let status = |want: &'static str| {
            let url = format!("{demo}/check?uri={uri}&idx={idx}");
            async move {
                eventually(Duration::from_secs(10), want, || async {
                    let (code, body) = get(&url).await;
                    (code == Some(200) && body.trim() == want).then_some(())
                })
                .await
            }
        };
        status("VALID").await;
        let (code, body) = post(&format!(
            "{demo}/revoke?client={client}&uri={uri}&idx={idx}"
        ))
        .await;
        assert_eq!(code, 202, "{body}");
        status("INVALID").await;
    }

    // Bad requests: named, never forwarded as something else.
    let (code, body) = post(&format!("{demo}/issue?client=nobody")).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown client nobody"), "{body}");
    let (code, body) = post(&format!("{demo}/revoke")).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("uri and idx are required"), "{body}");
    let (code, body) = get(&format!("{demo}/check?uri=ftp://x&idx=1")).await;
    assert_eq!(code, Some(400), "{body}");
}
