//! The controller on a real kube-apiserver and a real PostgreSQL: the whole lifecycle of a
//! StatusList (status, counts, Events, finalizer, both deletion policies, spec changes),
//! issuer conflicts, low capacity, and the database fence against replicas with a stale
//! view. Each test has its own namespace (watched alone) and its own database.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use statuslist_crd::{StatusList, StatusListStatus};
use statuslist_operator::controller::{self, Context};
use statuslist_operator::leader::{Stop, serve};
use statuslist_operator::metrics::Metrics;
use statuslist_store::testing::TestDb;
use statuslist_store::{IssueRequest, Store};
use statuslist_tests::envtest::{ApiServer, eventually, install_crd};
use statuslist_tests::require_apiserver;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// A controller running in this process on one namespace; stopped on drop.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn context(client: Client, store: &Store, ns: &str) -> Context {
    let mut ctx = Context::new(client, store.clone(), Metrics::default(), None);
    ctx.namespace = Some(ns.to_owned());
    ctx
}

fn start(ctx: Context) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let stop = Stop::new(async move {
        let _ = rx.await;
    });
    Running {
        stop: Some(tx),
        task: tokio::spawn(serve(Arc::new(ctx), None, stop)),
    }
}

struct Setup {
    client: Client,
    ns: String,
    db: TestDb,
    lists: Api<StatusList>,
}

async fn setup(server: &ApiServer, prefix: &str) -> Setup {
    let client = server.admin().await;
    install_crd(&client, &<StatusList as kube::CustomResourceExt>::crd())
        .await
        .expect("CRD");
    let ns = server.namespace(prefix).await;
    let db = TestDb::new().await;
    let lists = Api::namespaced(client.clone(), &ns);
    Setup {
        client,
        ns,
        db,
        lists,
    }
}

fn manifest(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
           "metadata": {"name": name}, "spec": spec})
}

fn small(client_id: &str, policy: &str) -> Value {
    json!({"format": "Token", "baseUri": "https://status.example.test", "entriesPerList": 1000,
           "leaseSize": 100, "minFreeEntries": 100, "deletionPolicy": policy,
           "issuers": [{"clientId": client_id, "jwksUri": "https://issuer.example.test/jwks"}]})
}

async fn apply(lists: &Api<StatusList>, name: &str, spec: Value) {
    lists
        .patch(
            name,
            &PatchParams::apply("statuslist-tests").force(),
            &Patch::Apply(manifest(name, spec)),
        )
        .await
        .expect("apply StatusList");
}

fn condition<'a>(status: &'a StatusListStatus, type_: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// Waits until the StatusList's status satisfies `check`, and returns it.
async fn status_where(
    lists: &Api<StatusList>,
    name: &str,
    what: &str,
    check: impl Fn(&StatusList, &StatusListStatus) -> bool,
) -> StatusListStatus {
    eventually(WAIT, what, || async {
        let sl = lists.get_opt(name).await.ok()??;
        let status = sl.status.clone()?;
        check(&sl, &status).then_some(status)
    })
    .await
}

/// Deletes a StatusList and waits until its finalizer has let it go.
async fn delete_and_wait(lists: &Api<StatusList>, name: &str) {
    lists
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "the StatusList to be gone", || async {
        lists.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

async fn events(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

async fn issue(store: &Store, pool: &str, client_id: &str, n: usize) {
    let mut done = 0;
    while done < n {
        let lease = store
            .claim_lease(pool, "test-worker", Duration::from_secs(30))
            .await
            .expect("claim")
            .expect("a free lease");
        while done < n {
            let req = IssueRequest {
                client_id: client_id.into(),
                jti: uuid::Uuid::new_v4(),
                status_expiry: 4_000_000_000,
            };
            match store.issue(&lease, &req).await {
                Ok(_) => done += 1,
                Err(statuslist_store::StoreError::LeaseExhausted) => break,
                Err(e) => panic!("issue: {e}"),
            }
        }
        store.release_lease(&lease).await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_with_deletion_policy_delete() {
    let server = require_apiserver!();
    let s = setup(server, "life").await;
    let _controller = start(context(s.client.clone(), &s.db.store, &s.ns));
    let pool = format!("{}/pool", s.ns);
    apply(&s.lists, "pool", small("life-client", "Delete")).await;

    let status = status_where(&s.lists, "pool", "Ready=True at generation 1", |_, st| {
        condition(st, "Ready") == Some("True") && st.observed_generation == Some(1)
    })
    .await;
    assert_eq!(status.lists.len(), 1);
    assert_eq!((status.totals.free, status.totals.allocated), (1000, 0));
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1)),
        "every condition carries observedGeneration"
    );
    let first = status.lists[0].id.clone();
    let sl = s.lists.get("pool").await.expect("get");
    assert_eq!(sl.finalizers(), ["statuslist.dev/cleanup"]);

    // Issuance shows in `kubectl get sl` within a few seconds, not at the 30 s resync.
    issue(&s.db.store, &pool, "life-client", 50).await;
    let started = std::time::Instant::now();
    status_where(&s.lists, "pool", "allocated = 50", |_, st| {
        st.totals.allocated == 50
    })
    .await;
    let refreshed = started.elapsed();
    assert!(
        refreshed < Duration::from_secs(15),
        "allocated refreshed after {refreshed:?}"
    );

    // A spec change (generation 2) reaches the database and the status.
    let mut spec = small("life-client", "Delete");
    spec["ttlSeconds"] = json!(120);
    apply(&s.lists, "pool", spec).await;
    status_where(&s.lists, "pool", "observedGeneration 2", |_, st| {
        st.observed_generation == Some(2) && condition(st, "Ready") == Some("True")
    })
    .await;
    let stored = s.db.store.pool(&pool).await.expect("read").expect("pool");
    assert_eq!((stored.generation, stored.settings.ttl_seconds), (2, 120));

    // Spend the list below minFreeEntries: CapacityLow is announced, a second list is
    // provisioned, and each provisioned list has an Event of its own.
    issue(&s.db.store, &pool, "life-client", 860).await;
    let status = status_where(&s.lists, "pool", "a second list", |_, st| {
        st.lists.len() == 2 && condition(st, "Ready") == Some("True")
    })
    .await;
    let second = status
        .lists
        .iter()
        .map(|l| l.id.clone())
        .find(|id| *id != first)
        .expect("a new list");
    let low = eventually(WAIT, "a CapacityLow Event", || async {
        let notes = events(&s.client, &s.ns, "CapacityLow").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    assert!(
        low[0].contains("90 free entries, below minFreeEntries 100"),
        "{low:?}"
    );
    let provisioned = eventually(WAIT, "two ListProvisioned Events", || async {
        let notes = events(&s.client, &s.ns, "ListProvisioned").await;
        (notes.len() >= 2).then_some(notes)
    })
    .await;
    for id in [&first, &second] {
        assert!(
            provisioned.iter().any(|n| n.contains(id.as_str())),
            "list {id} has its Event: {provisioned:?}"
        );
    }

    // Deleted with Delete: the finalizer runs the policy, then lets the object go.
    delete_and_wait(&s.lists, "pool").await;
    assert!(s.db.store.pool(&pool).await.expect("read").is_none());
    assert_eq!(
        s.db.count("SELECT count(*) FROM entries").await,
        0,
        "Delete removes the entries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_entries_and_a_new_resource_resumes_issuance() {
    let server = require_apiserver!();
    let s = setup(server, "retain").await;
    let _controller = start(context(s.client.clone(), &s.db.store, &s.ns));
    let pool = format!("{}/kept", s.ns);
    apply(&s.lists, "kept", small("retain-client", "Retain")).await;
    status_where(&s.lists, "kept", "Ready", |_, st| {
        condition(st, "Ready") == Some("True")
    })
    .await;
    issue(&s.db.store, &pool, "retain-client", 10).await;
    delete_and_wait(&s.lists, "kept").await;
    let stored = s.db.store.pool(&pool).await.expect("read").expect("kept");
    assert!(!stored.issuing, "Retain stops issuance");
    assert_eq!(s.db.count("SELECT count(*) FROM entries").await, 10);
    assert!(
        s.db.store
            .issuer("retain-client")
            .await
            .expect("read")
            .is_some(),
        "its issuers may still revoke"
    );

    // The same name applied again is a new resource (new UID): issuance resumes.
    apply(&s.lists, "kept", small("retain-client", "Retain")).await;
    status_where(&s.lists, "kept", "Ready again", |_, st| {
        condition(st, "Ready") == Some("True")
    })
    .await;
    let stored = s.db.store.pool(&pool).await.expect("read").expect("kept");
    assert!(stored.issuing, "re-applying resumes issuance");
    assert_eq!(s.db.count("SELECT count(*) FROM entries").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statuslist_in_issuer_conflict_provisions_nothing_until_it_holds_its_issuers() {
    let server = require_apiserver!();
    let s = setup(server, "conflict").await;
    let _controller = start(context(s.client.clone(), &s.db.store, &s.ns));
    apply(&s.lists, "first", small("shared-client", "Delete")).await;
    status_where(&s.lists, "first", "first Ready", |_, st| {
        condition(st, "Ready") == Some("True")
    })
    .await;
    apply(&s.lists, "second", small("shared-client", "Delete")).await;
    let status = status_where(&s.lists, "second", "second in IssuerConflict", |_, st| {
        condition(st, "IssuerConflict") == Some("True")
    })
    .await;
    assert_eq!(condition(&status, "Ready"), Some("False"));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(
        ready
            .message
            .contains(&format!("held by StatusList {}/first", s.ns)),
        "{}",
        ready.message
    );
    assert_eq!(
        status.totals.lists, 0,
        "nothing provisioned while in conflict"
    );
    let cap =
        s.db.store
            .capacity(&format!("{}/second", s.ns))
            .await
            .expect("capacity");
    assert!(cap.lists.is_empty(), "no list in the database either");

    // Once the holder is gone, the clientId is free and the second pool provisions.
    s.lists
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    status_where(&s.lists, "second", "second Ready with a list", |_, st| {
        condition(st, "Ready") == Some("True") && st.totals.lists == 1
    })
    .await;
}

/// A second replica (or the old pod of a rolling update) acting on a stale copy of the
/// object: after the deletion, or after a newer generation, its apply changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_stale_view_cannot_resurrect_or_roll_back_a_pool() {
    let server = require_apiserver!();
    let s = setup(server, "stale").await;
    let _controller = start(context(s.client.clone(), &s.db.store, &s.ns));
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        s.client.clone(),
        &s.ns,
        &kube::api::ApiResource::erase::<StatusList>(&()),
    );
    let stale_ctx = Arc::new(context(s.client.clone(), &s.db.store, &s.ns));

    // An older generation after a newer one was applied: not rolled back.
    apply(&s.lists, "gen", small("gen-client", "Delete")).await;
    status_where(&s.lists, "gen", "Ready at 1", |_, st| {
        st.observed_generation == Some(1) && condition(st, "Ready") == Some("True")
    })
    .await;
    let generation_1 = dynamic.get("gen").await.expect("get");
    let mut spec = small("gen-client", "Delete");
    spec["issuers"] =
        json!([{"clientId": "gen-client-2", "jwksUri": "https://issuer.example.test/jwks2"}]);
    apply(&s.lists, "gen", spec).await;
    status_where(&s.lists, "gen", "Ready at 2", |_, st| {
        st.observed_generation == Some(2) && condition(st, "Ready") == Some("True")
    })
    .await;
    controller::reconcile(Arc::new(generation_1), stale_ctx.clone())
        .await
        .expect("a stale reconcile is not an error");
    let pool =
        s.db.store
            .pool(&format!("{}/gen", s.ns))
            .await
            .expect("read")
            .expect("pool");
    assert_eq!(pool.generation, 2, "generation 1 did not overwrite 2");
    assert!(
        s.db.store
            .issuer("gen-client")
            .await
            .expect("read")
            .is_none(),
        "removed issuer not re-added"
    );
    assert!(
        s.db.store
            .issuer("gen-client-2")
            .await
            .expect("read")
            .is_some()
    );

    // After deletion, with either policy: the pool stays deleted (or stays retained).
    for (name, policy) in [("gone", "Delete"), ("kept", "Retain")] {
        let client_id = format!("{name}-client");
        apply(&s.lists, name, small(&client_id, policy)).await;
        status_where(&s.lists, name, "Ready", |_, st| {
            condition(st, "Ready") == Some("True")
        })
        .await;
        let before_delete = dynamic.get(name).await.expect("get");
        delete_and_wait(&s.lists, name).await;
        // The stale copy still carries the finalizer and no deletionTimestamp, so the
        // replica takes it for a live resource and applies it.
        let _ = controller::reconcile(Arc::new(before_delete), stale_ctx.clone()).await;
        let pool =
            s.db.store
                .pool(&format!("{}/{name}", s.ns))
                .await
                .expect("read");
        match policy {
            "Delete" => assert!(pool.is_none(), "a deleted pool is not resurrected"),
            _ => assert!(
                !pool.expect("retained pool").issuing,
                "a retained pool does not resume issuance"
            ),
        }
    }
}
