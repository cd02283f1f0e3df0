//! OpenTelemetry traces against a real OTLP/HTTP receiver (the protocol's own protobuf
//! types): the `statuslist worker` and `statuslist operator` processes export with the
//! standard variables only, an issuer's `traceparent` is continued through the request,
//! its JWS verification, the JWKS fetch (which carries it on to the issuer) and the lease
//! claim into the database insert; a group-commit batch links the requests it carried;
//! a revocation is published in a trace of its own (read, render, compress, sign,
//! store); the operator traces its reconciles. And an endpoint that hangs costs requests
//! nothing: spans are dropped and counted.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use statuslist_store::testing::TestDb;
use statuslist_tests::otlp::{Receiver, Span};
use statuslist_tests::process::Process;
use statuslist_tests::service::{
    Issuer, Worker, binary, manifest, operator_on_manifests_with, revoke, wait_ready,
};

const WAIT: Duration = Duration::from_secs(60);
/// OTLP `SpanKind`.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// A random trace id (32 hex digits) and parent span id (16).
fn random_ids() -> (String, String) {
    let span = uuid::Uuid::new_v4().simple().to_string();
    (
        uuid::Uuid::new_v4().simple().to_string(),
        span[..16].to_owned(),
    )
}

/// `POST /issue` signed by `issuer`, with `traceparent` when given: the answer's status and body.
async fn issue(
    client: &reqwest::Client,
    worker: &Worker,
    issuer: &Issuer,
    traceparent: Option<&str>,
) -> (u16, Value) {
    let key = statuslist_cli::client::load_key(&issuer.key).expect("key");
    let claims = statuslist_cli::client::issue_claims(&issuer.client_id, None);
    let jwt = statuslist_cli::client::request_jwt(&key, key.kid(), &claims).expect("sign");
    let mut request = client
        .post(format!("{}/issue", worker.url))
        .header("content-type", "application/jwt")
        .body(jwt);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A span's subtree, one line each: name, duration, offset from the root's start.
fn tree(spans: &[Span], root: &Span) -> String {
    fn walk(spans: &[Span], at: &Span, t0: u64, depth: usize, out: &mut String) {
        out.push_str(&format!(
            "{:indent$}{} [{}] {:.3} ms (+{:.3} ms)\n",
            "",
            at.name,
            at.service,
            at.duration().as_secs_f64() * 1000.0,
            at.start_ns.saturating_sub(t0) as f64 / 1e6,
            indent = depth * 2
        ));
        let mut children: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == at.span_id && s.trace_id == at.trace_id)
            .collect();
        children.sort_by_key(|s| s.start_ns);
        for child in children {
            walk(spans, child, t0, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, root, root.start_ns, 0, &mut out);
    out
}

fn child<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.parent_span_id == parent.span_id)
        .unwrap_or_else(|| panic!("no {name} under {}: {}", parent.name, tree(spans, parent)))
}

/// The child lies within its parent's time.
fn within(parent: &Span, child: &Span) {
    assert!(
        child.start_ns >= parent.start_ns && child.end_ns <= parent.end_ns,
        "{} outside {}",
        child.name,
        parent.name
    );
}

async fn metric(worker: &Worker, line_start: &str) -> f64 {
    let (_, text) =
        statuslist_tests::service::get(&format!("{}/metrics", worker.metrics_url)).await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in the worker's metrics"))
}

/// A worker and an operator (on a manifest of one Token pool of a new issuer) on `db`, each
/// with its own extra environment. Keep the directory as long as the operator runs.
async fn start(
    db: &TestDb,
    client_id: &str,
    worker_env: &[(&str, &str)],
    operator_env: &[(&str, &str)],
) -> (Worker, Issuer, Process, tempfile::TempDir) {
    let bin = binary();
    let worker = Worker::start(&bin, "worker-0", &db.url, worker_env);
    let issuer = Issuer::start(&bin, client_id).await;
    let dir = tempfile::tempdir().expect("manifest directory");
    std::fs::write(
        dir.path().join("pool.yaml"),
        manifest("pool", "Token", &worker.url, "Delete", &issuer, ""),
    )
    .expect("write the manifest");
    let operator = operator_on_manifests_with(&bin, "operator", &db.url, dir.path(), operator_env);
    (worker, issuer, operator, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_is_one_trace_from_the_issuers_traceparent_to_the_database() {
    let db = TestDb::new().await;
    let bin = binary();
    let receiver = Receiver::start().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let (worker, issuer, _operator, _dir) = start(&db, "tracing-issuer", &otel, &otel).await;

    // The operator traces its reconcile of the pool.
    let reconcile = receiver
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .find(|s| s.service == "statuslist-operator" && s.name == "reconcile")
                .cloned()
        })
        .await;
    assert_eq!(reconcile.attribute("pool"), Some("tests/pool"));
    // Wait for a list to issue from (no issuance before the traced one: it is the first,
    // so it fetches the issuer's keys and claims the lease).
    let until = tokio::time::Instant::now() + WAIT;
    while db
        .count("SELECT count(*) FROM lists WHERE state = 'Active'")
        .await
        == 0
    {
        assert!(tokio::time::Instant::now() < until, "no list provisioned");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
    }

    let client = reqwest::Client::new();
    wait_ready(&client, &worker.url, WAIT).await;
    let (trace_id, parent) = random_ids();
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let (status, body) = issue(&client, &worker, &issuer, Some(&traceparent)).await;
    assert_eq!(status, 200, "{body}");

    let names = [
        "POST /issue",
        "jws.verify",
        "jwks.fetch",
        "lease.claim",
        "issuance.store",
    ];
    let spans = receiver
        .wait_for(WAIT, |spans| {
            let trace: Vec<Span> = spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            names
                .iter()
                .all(|n| trace.iter().any(|s| s.name == *n))
                .then_some(trace)
        })
        .await;
    let request = spans
        .iter()
        .find(|s| s.name == "POST /issue")
        .expect("request span");
    println!("the trace of one issuance:\n{}", tree(&spans, request));
    assert_eq!(request.service, "statuslist-worker");
    assert_eq!(
        request.parent_span_id, parent,
        "the issuer's span is the parent"
    );
    assert_eq!(request.kind, SERVER);
    assert_eq!(request.attribute("http.route"), Some("/issue"));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    let verify = child(&spans, request, "jws.verify");
    assert_eq!(verify.attribute("client_id"), Some("tracing-issuer"));
    let fetch = child(&spans, verify, "jwks.fetch");
    assert_eq!(fetch.kind, CLIENT);
    assert_eq!(fetch.attribute("url.full"), Some(issuer.jwks_url.as_str()));
    let claim = child(&spans, request, "lease.claim");
    assert_eq!(claim.attribute("pool"), Some("tests/pool"));
    let store = child(&spans, request, "issuance.store");
    for (parent, inner) in [
        (request, verify),
        (verify, fetch),
        (request, claim),
        (request, store),
    ] {
        within(parent, inner);
    }
    // The JWKS fetch carried the trace on to the issuer, as its own span's child.
    let heads = issuer.requests.lock().expect("lock").clone();
    let expected = format!("traceparent: 00-{trace_id}-{}-01", fetch.span_id);
    assert!(
        heads
            .iter()
            .any(|h| h.lines().any(|l| l.eq_ignore_ascii_case(&expected))),
        "{expected} not among the JWKS requests: {heads:#?}"
    );
    // Without a traceparent an issuance starts a trace of its own.
    let (status, _) = issue(&client, &worker, &issuer, None).await;
    assert_eq!(status, 200);
    receiver
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .find(|s| {
                    s.name == "POST /issue" && s.trace_id != trace_id && s.parent_span_id.is_empty()
                })
                .cloned()
        })
        .await;

    // Group commit: concurrent issuances go in batches whose span links to each request it
    // carried. Whether a burst overflows into a batch depends on timing: burst until one does.
    let mut linked = None;
    for _ in 0..20 {
        let traces: Vec<(String, String)> = (0..64).map(|_| random_ids()).collect();
        let answers = futures_util::future::join_all(traces.iter().map(|(t, p)| {
            let tp = format!("00-{t}-{p}-01");
            let (client, worker, issuer) = (&client, &worker, &issuer);
            async move { issue(client, worker, issuer, Some(&tp)).await.0 }
        }))
        .await;
        assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
        let burst: BTreeSet<&str> = traces.iter().map(|(t, _)| t.as_str()).collect();
        // Every request span of the burst is exported before the batches are looked at.
        receiver
            .wait_for(WAIT, |spans| {
                (spans
                    .iter()
                    .filter(|s| s.name == "issuance.store" && burst.contains(s.trace_id.as_str()))
                    .count()
                    == traces.len())
                .then_some(())
            })
            .await;
        let spans = receiver.spans();
        linked = spans
            .iter()
            .find(|s| {
                s.name == "issuance.flush"
                    && s.links.len() > 1
                    && s.links.iter().all(|(t, _)| burst.contains(t.as_str()))
            })
            .cloned();
        if linked.is_some() {
            break;
        }
    }
    let flush = linked.expect("a burst of 64 issuances formed a batch");
    let spans = receiver.spans();
    assert_eq!(
        flush.attribute("db.operation.batch.size"),
        Some(flush.links.len().to_string().as_str())
    );
    assert!(
        flush.parent_span_id.is_empty(),
        "a batch is a trace of its own"
    );
    for (trace, span) in &flush.links {
        let linked = spans
            .iter()
            .find(|s| &s.trace_id == trace && &s.span_id == span)
            .expect("each link names an exported span");
        assert_eq!(linked.name, "issuance.store");
        assert_eq!(linked.attribute("batched"), Some("true"));
    }
    println!(
        "a group-commit batch of {} issuances: {:.3} ms",
        flush.links.len(),
        flush.duration().as_secs_f64() * 1000.0
    );

    // A revocation, and the publication that shows it: a trace per list published.
    let uri = body["uri"].as_str().expect("uri");
    let idx = body["idx"].as_u64().expect("idx");
    revoke(&bin, &worker.url, &issuer, uri, idx)
        .await
        .expect("revoke");
    let spans = receiver
        .wait_for(WAIT, |spans| {
            let published = spans.iter().find(|s| {
                s.name == "publish"
                    && s.attribute("changes").is_some_and(|c| c != "0")
                    && uri.ends_with(s.attribute("list").unwrap_or("-"))
            })?;
            let trace: Vec<Span> = spans
                .iter()
                .filter(|s| s.trace_id == published.trace_id)
                .cloned()
                .collect();
            [
                "publish.read",
                "publish.render",
                "compress",
                "sign",
                "publish.store",
            ]
            .iter()
            .all(|n| trace.iter().any(|s| s.name == *n))
            .then_some(trace)
        })
        .await;
    let publish = spans.iter().find(|s| s.name == "publish").expect("publish");
    println!(
        "the publication after the revocation:\n{}",
        tree(&spans, publish)
    );
    assert!(publish.parent_span_id.is_empty());
    let render = child(&spans, publish, "publish.render");
    for name in ["compress", "sign"] {
        within(render, child(&spans, render, name));
    }
    for name in ["publish.read", "publish.store"] {
        within(publish, child(&spans, publish, name));
    }
    assert!(
        receiver
            .spans()
            .iter()
            .any(|s| s.name == "POST /revoke" && s.service == "statuslist-worker"),
        "the revocation's request"
    );
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    assert!(metric(&worker, "statuslist_trace_spans_exported_total").await > 0.0);
    assert_eq!(
        metric(
            &worker,
            "statuslist_trace_spans_dropped_total{reason=\"queue_full\"}"
        )
        .await,
        0.0
    );
}

/// An OTLP endpoint that accepts connections and never answers: every request is still
/// answered, and what could not be exported is dropped and counted, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_hangs_costs_requests_nothing_and_drops_are_counted() {
    let db = TestDb::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    // Accepts, reads nothing, answers nothing; the connections stay open until the test ends.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if held_tx.send(stream).is_err() {
                return;
            }
        }
    });
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "300"),
    ];
    let (worker, issuer, _operator, _dir) = start(&db, "hanging-issuer", &otel, &[]).await;
    let client = reqwest::Client::new();
    wait_ready(&client, &worker.url, WAIT).await;
    let until = tokio::time::Instant::now() + WAIT;
    while issue(&client, &worker, &issuer, None).await.0 != 200 {
        assert!(tokio::time::Instant::now() < until, "no issuance");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
    }
    for _ in 0..3 {
        let answers = futures_util::future::join_all((0..32).map(|_| {
            let (t, p) = random_ids();
            let tp = format!("00-{t}-{p}-01");
            let (client, worker, issuer) = (&client, &worker, &issuer);
            async move { issue(client, worker, issuer, Some(&tp)).await.0 }
        }))
        .await;
        assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    }
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let full = metric(
            &worker,
            "statuslist_trace_spans_dropped_total{reason=\"queue_full\"}",
        )
        .await;
        let failed = metric(
            &worker,
            "statuslist_trace_spans_dropped_total{reason=\"export_failed\"}",
        )
        .await;
        if full > 0.0 && failed > 0.0 {
            println!("dropped: {full} (queue full), {failed} (export failed)");
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "drops not counted: queue_full {full}, export_failed {failed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
    }
    assert_eq!(
        metric(&worker, "statuslist_trace_spans_exported_total").await,
        0.0
    );
    assert!(
        worker
            .process
            .output()
            .iter()
            .any(|l| l.contains("trace export failing")),
        "the failure is logged once"
    );
    drop(held_rx);
}
