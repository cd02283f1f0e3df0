//! The controller against a mocked apiserver (tower-test, as kube-rs/controller-rs does)
//! and a real PostgreSQL: finalizer, status with conditions and observedGeneration,
//! cleanup under each deletion policy, a malformed object.

use std::sync::Arc;

use http::{Method, Request, Response};
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use statuslist_operator::controller::{Context, reconcile};
use statuslist_operator::metrics::Metrics;
use statuslist_store::testing::TestDb;
use tokio::task::JoinHandle;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const PATH: &str = "/apis/statuslist.dev/v1alpha1/namespaces/ns/statuslists/pool";
const STATUS_PATH: &str = "/apis/statuslist.dev/v1alpha1/namespaces/ns/statuslists/pool/status";

/// The operator instance of [`context`] (`Context::new`'s default).
const OWNER: &str = "default/statuslist-operator";

fn object(spec: Value, finalizers: &[&str], deleting: bool) -> Value {
    owned_by(spec, finalizers, deleting, Some(OWNER))
}

fn owned_by(spec: Value, finalizers: &[&str], deleting: bool, owner: Option<&str>) -> Value {
    let mut meta = json!({"name": "pool", "namespace": "ns", "uid": "0b8c1c5e-1111-2222-3333-444455556666", "generation": 3, "resourceVersion": "7"});
    if let Some(owner) = owner {
        meta["annotations"] = json!({"statuslist.dev/operator": owner});
    }
    if !finalizers.is_empty() {
        meta["finalizers"] = json!(finalizers);
    }
    if deleting {
        meta["deletionTimestamp"] = json!("2026-11-30T00:00:00Z");
    }
    json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList", "metadata": meta, "spec": spec})
}

fn good_spec(policy: &str) -> Value {
    json!({
        "format": "Token", "bits": 2, "baseUri": "https://status.example.test", "entriesPerList": 1000,
        "leaseSize": 100, "ttlSeconds": 300, "validitySeconds": 3600, "maxStatusLifetimeSeconds": 31536000,
        "deletionPolicy": policy, "issuers": [{"clientId": "a", "jwksUri": "https://a.example/jwks"}]
    })
}

/// One expected request: method, path prefix, and a check of its JSON body; answered with
/// `reply`.
struct Expect {
    method: Method,
    path: &'static str,
    check: Box<dyn Fn(&Value) + Send>,
    reply: Value,
}

/// Plays the apiserver: answers the expected requests in order, then returns what it saw.
fn apiserver(mut handle: Handle, script: Vec<Expect>) -> JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for expect in script {
            let (request, send) = handle.next_request().await.expect("a request");
            assert_eq!(request.method(), expect.method, "{}", request.uri());
            assert!(
                request.uri().path().starts_with(expect.path),
                "{} {}",
                request.method(),
                request.uri()
            );
            let body = request.into_body().collect_bytes().await.expect("body");
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (expect.check)(&body);
            seen.push(body);
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&expect.reply).expect("json")))
                    .expect("response"),
            );
        }
        seen
    })
}

async fn context(db: &TestDb) -> (Arc<Context>, Handle) {
    context_with(db.store.clone())
}

/// A context on `store` whose apiserver is the returned handle.
fn context_with(store: statuslist_store::Store) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (
        Arc::new(Context::new(
            client,
            store,
            Metrics::default(),
            Some("test".into()),
        )),
        handle,
    )
}

fn dynamic(v: Value) -> Arc<DynamicObject> {
    Arc::new(serde_json::from_value(v).expect("object"))
}

fn event_reply() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2026-11-30T00:00:00.000000Z"})
}

/// An object no instance reconciles yet is claimed first (the annotation, guarded by the
/// resourceVersion), before any finalizer, status or row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_object_is_claimed_before_anything_else() {
    let db = TestDb::new().await;
    let (ctx, handle) = context(&db).await;
    let obj = owned_by(good_spec("Retain"), &[], false, None);
    let reply = object(good_spec("Retain"), &[], false);
    let server = apiserver(
        handle,
        vec![Expect {
            method: Method::PATCH,
            path: PATH,
            check: Box::new(|body| {
                assert_eq!(
                    body["metadata"]["annotations"]["statuslist.dev/operator"],
                    OWNER
                );
                assert_eq!(body["metadata"]["resourceVersion"], "7");
                assert!(body.get("status").is_none(), "{body}");
            }),
            reply,
        }],
    );
    let action = reconcile(dynamic(obj), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    server.await.expect("apiserver");
    assert!(db.store.pool("ns/pool").await.expect("read").is_none());
}

/// An object another instance reconciles is left alone: one Warning Event naming the
/// owner, then nothing (no finalizer, no status, no row), however often it is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_of_another_instance_is_left_alone_with_one_event() {
    let db = TestDb::new().await;
    let (ctx, handle) = context(&db).await;
    let other = "team-b/statuslist-operator";
    let obj = owned_by(
        good_spec("Delete"),
        &["statuslist.dev/cleanup"],
        false,
        Some(other),
    );
    let server = apiserver(
        handle,
        vec![Expect {
            method: Method::POST,
            path: "/apis/events.k8s.io/v1/namespaces/ns/events",
            check: Box::new(move |body| {
                assert_eq!(body["reason"], "OwnedByAnotherOperator");
                assert!(
                    body["note"].as_str().unwrap_or_default().contains(other),
                    "{body}"
                );
            }),
            reply: event_reply(),
        }],
    );
    for _ in 0..3 {
        let action = reconcile(dynamic(obj.clone()), ctx.clone())
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
    }
    // Deleted, it is still the other instance's to clean up.
    let deleting = owned_by(
        good_spec("Delete"),
        &["statuslist.dev/cleanup"],
        true,
        Some(other),
    );
    reconcile(dynamic(deleting), ctx).await.expect("reconcile");
    server.await.expect("apiserver");
    assert!(db.store.pool("ns/pool").await.expect("read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_object_gets_the_finalizer_first() {
    let db = TestDb::new().await;
    let (ctx, handle) = context(&db).await;
    let obj = object(good_spec("Retain"), &[], false);
    let reply = object(good_spec("Retain"), &["statuslist.dev/cleanup"], false);
    let server = apiserver(
        handle,
        vec![Expect {
            method: Method::PATCH,
            path: PATH,
            check: Box::new(|body| {
                assert!(
                    body.to_string().contains("statuslist.dev/cleanup"),
                    "{body}"
                )
            }),
            reply,
        }],
    );
    let action = reconcile(dynamic(obj), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    server.await.expect("apiserver");
    assert!(
        db.store.pool("ns/pool").await.expect("read").is_none(),
        "nothing written before the finalizer"
    );
}

/// A database that cannot be reached is not `Ready=True`: the status says why (Ready and
/// DatabaseReady False, reason DatabaseUnavailable, the rest as last seen) and a Warning
/// Event marks the start; the reconcile fails, to be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_turns_ready_false_with_its_reason() {
    // Nothing listens on port 1: every connection is refused.
    let store = statuslist_store::Store::connect_lazy(&statuslist_store::StoreConfig::new(
        "postgres://postgres@127.0.0.1:1/none",
    ))
    .expect("store");
    let (ctx, handle) = context_with(store);
    let mut obj = object(good_spec("Retain"), &["statuslist.dev/cleanup"], false);
    obj["status"] = json!({"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True",
        "reason": "Reconciled", "message": "1 lists", "lastTransitionTime": "2026-11-30T00:00:00Z"}],
        "lists": [], "totals": {"lists": 1, "size": 1000, "allocated": 10, "revoked": 0, "free": 990}});
    let server = apiserver(
        handle,
        vec![
            Expect {
                method: Method::PATCH,
                path: STATUS_PATH,
                check: Box::new(|body| {
                    let conditions = body["status"]["conditions"].as_array().expect("conditions");
                    for type_ in ["Ready", "DatabaseReady"] {
                        let c = conditions.iter().find(|c| c["type"] == type_).expect(type_);
                        assert_eq!(
                            (c["status"].as_str(), c["reason"].as_str()),
                            (Some("False"), Some("DatabaseUnavailable")),
                            "{body}"
                        );
                    }
                    assert_eq!(
                        body["status"]["totals"]["free"], 990,
                        "the counts as last seen"
                    );
                    assert!(body["status"]["reconciledAt"].is_string(), "{body}");
                }),
                reply: object(good_spec("Retain"), &["statuslist.dev/cleanup"], false),
            },
            Expect {
                method: Method::POST,
                path: "/apis/events.k8s.io/v1/namespaces/ns/events",
                check: Box::new(|body| {
                    assert_eq!(body["reason"], "DatabaseUnavailable", "{body}");
                    assert_eq!(body["type"], "Warning", "{body}");
                }),
                reply: event_reply(),
            },
        ],
    );
    let err = reconcile(dynamic(obj), ctx)
        .await
        .expect_err("a failed reconcile");
    assert_eq!(err.reason(), "database_unavailable");
    server.await.expect("apiserver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_applied_with_conditions_and_observed_generation() {
    let db = TestDb::new().await;
    let (ctx, handle) = context(&db).await;
    let obj = object(good_spec("Retain"), &["statuslist.dev/cleanup"], false);
    let server = apiserver(
        handle,
        vec![
            Expect {
                method: Method::PATCH,
                path: STATUS_PATH,
                check: Box::new(|body| {
                    let status = &body["status"];
                    assert_eq!(status["observedGeneration"], 3);
                    let ready = status["conditions"]
                        .as_array()
                        .expect("conditions")
                        .iter()
                        .find(|c| c["type"] == "Ready")
                        .expect("Ready");
                    assert_eq!(
                        (
                            ready["status"].as_str(),
                            ready["observedGeneration"].as_i64()
                        ),
                        (Some("True"), Some(3))
                    );
                    assert_eq!(status["totals"]["lists"], 1);
                    assert_eq!(status["totals"]["free"], 1000);
                    assert_eq!(status["lists"][0]["state"], "Active");
                }),
                reply: object(good_spec("Retain"), &["statuslist.dev/cleanup"], false),
            },
            Expect {
                method: Method::POST,
                path: "/apis/events.k8s.io/v1/namespaces/ns/events",
                check: Box::new(|body| assert_eq!(body["reason"], "ListProvisioned", "{body}")),
                reply: event_reply(),
            },
        ],
    );
    let action = reconcile(dynamic(obj), ctx).await.expect("reconcile");
    // The 5 s resync that keeps the status counts fresh.
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(5)));
    server.await.expect("apiserver");
    let pool = db
        .store
        .pool("ns/pool")
        .await
        .expect("read")
        .expect("pool written");
    assert_eq!(pool.generation, 3);
    assert_eq!(
        db.store
            .issuer("a")
            .await
            .expect("read")
            .expect("issuer")
            .pool
            .name,
        "ns/pool"
    );
}

async fn cleanup_with(policy: &str) -> TestDb {
    let db = TestDb::new().await;
    let spec: statuslist_crd::StatusListSpec =
        serde_json::from_value(good_spec(policy)).expect("spec");
    let pool = statuslist_operator::core::pool_spec("ns/pool".into(), 3, &spec).expect("valid");
    statuslist_operator::core::reconcile_pool(&db.store, &pool, 0)
        .await
        .expect("reconcile");
    let (ctx, handle) = context(&db).await;
    let obj = object(good_spec(policy), &["statuslist.dev/cleanup"], true);
    let server = apiserver(
        handle,
        vec![Expect {
            method: Method::PATCH,
            path: PATH,
            check: Box::new(|body| {
                assert!(
                    body.to_string().contains("remove"),
                    "finalizer removed: {body}"
                )
            }),
            reply: object(good_spec(policy), &[], true),
        }],
    );
    reconcile(dynamic(obj), ctx).await.expect("reconcile");
    server.await.expect("apiserver");
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_retain_keeps_entries_and_stops_issuing() {
    let db = cleanup_with("Retain").await;
    let pool = db.store.pool("ns/pool").await.expect("read").expect("kept");
    assert!(!pool.issuing);
    assert!(
        db.store.issuer("a").await.expect("read").is_some(),
        "the issuer can still revoke"
    );
    assert_eq!(
        db.store
            .capacity("ns/pool")
            .await
            .expect("capacity")
            .lists
            .len(),
        1,
        "lists still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_delete_removes_the_rows() {
    let db = cleanup_with("Delete").await;
    assert!(db.store.pool("ns/pool").await.expect("read").is_none());
    assert!(db.store.issuer("a").await.expect("read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_becomes_an_invalid_spec_condition() {
    let db = TestDb::new().await;
    let (ctx, handle) = context(&db).await;
    // Bypassed the schema: an unknown format and no baseUri.
    let bad = json!({"format": "Other", "issuers": "not a list"});
    let obj = object(bad.clone(), &["statuslist.dev/cleanup"], false);
    let server = apiserver(
        handle,
        vec![
            Expect {
                method: Method::PATCH,
                path: STATUS_PATH,
                check: Box::new(|body| {
                    let conditions = body["status"]["conditions"].as_array().expect("conditions");
                    let invalid = conditions
                        .iter()
                        .find(|c| c["type"] == "InvalidSpec")
                        .expect("InvalidSpec");
                    assert_eq!(invalid["status"], "True");
                    assert!(
                        invalid["message"]
                            .as_str()
                            .expect("message")
                            .contains("schema"),
                        "{invalid}"
                    );
                    let ready = conditions
                        .iter()
                        .find(|c| c["type"] == "Ready")
                        .expect("Ready");
                    assert_eq!(
                        (ready["status"].as_str(), ready["reason"].as_str()),
                        (Some("False"), Some("InvalidSpec"))
                    );
                }),
                reply: obj.clone(),
            },
            Expect {
                method: Method::POST,
                path: "/apis/events.k8s.io/v1/namespaces/ns/events",
                check: Box::new(|body| {
                    assert_eq!(
                        (body["reason"].as_str(), body["type"].as_str()),
                        (Some("InvalidSpec"), Some("Warning"))
                    )
                }),
                reply: event_reply(),
            },
        ],
    );
    let action = reconcile(dynamic(obj), ctx)
        .await
        .expect("a malformed object is not an error");
    assert_eq!(action, Action::await_change());
    server.await.expect("apiserver");
    assert!(db.store.pool("ns/pool").await.expect("read").is_none());

    // Valid JSON but invalid values (a spec that bypassed CEL): also a condition.
    let (ctx, handle) = context(&db).await;
    let mut spec = good_spec("Retain");
    spec["bits"] = json!(3);
    let obj = object(spec, &["statuslist.dev/cleanup"], false);
    let server = apiserver(
        handle,
        vec![
            Expect {
                method: Method::PATCH,
                path: STATUS_PATH,
                check: Box::new(|body| {
                    assert!(
                        body.to_string().contains("bits must be 1, 2, 4 or 8"),
                        "{body}"
                    )
                }),
                reply: obj.clone(),
            },
            Expect {
                method: Method::POST,
                path: "/apis/events.k8s.io/v1/namespaces/ns/events",
                check: Box::new(|_| {}),
                reply: event_reply(),
            },
        ],
    );
    reconcile(dynamic(obj), ctx).await.expect("reconcile");
    server.await.expect("apiserver");
}
