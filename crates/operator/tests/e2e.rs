//! Against a real cluster, opt-in: runs only with `KUBECONFIG` and `STATUSLIST_E2E=1` set
//! (and `DATABASE_URL`, or PostgreSQL binaries for a throwaway server). Applies the CRD and
//! a StatusList, waits for Ready=True, checks the status, deletes it, checks the cleanup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use statuslist_crd::StatusList;
use statuslist_operator::controller::{Context, run};
use statuslist_operator::metrics::Metrics;
use statuslist_store::testing::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none()
        || std::env::var("STATUSLIST_E2E").as_deref() != Ok("1")
    {
        eprintln!("skipped: set KUBECONFIG and STATUSLIST_E2E=1 to run against a real cluster");
        return;
    }
    let db = TestDb::new().await;
    let client = Client::try_default()
        .await
        .expect("cluster from KUBECONFIG");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.patch(
        "statuslists.statuslist.dev",
        &PatchParams::apply("statuslist-e2e").force(),
        &Patch::Apply(StatusList::crd()),
    )
    .await
    .expect("apply CRD");
    let ctx = Arc::new(Context::new(
        client.clone(),
        db.store.clone(),
        Metrics::default(),
        None,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(ctx, async move {
        let _ = stopped.await;
    }));
    let lists: Api<StatusList> = Api::namespaced(client.clone(), "default");
    let name = format!("e2e-{}", std::process::id());
    let manifest = json!({
        "apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList", "metadata": {"name": name},
        "spec": {"format": "Token", "baseUri": "https://status.example.test", "entriesPerList": 1000, "leaseSize": 100,
                 "deletionPolicy": "Delete", "issuers": [{"clientId": format!("{name}-client"), "jwksUri": "https://a.example/jwks"}]}
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    // The CRD may take a moment to be served.
    while lists
        .patch(
            &name,
            &PatchParams::apply("statuslist-e2e"),
            &Patch::Apply(&manifest),
        )
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "StatusList not accepted");
        tokio::time::sleep(Duration::from_millis(500)).await; // polling a condition
    }
    loop {
        let sl = lists.get(&name).await.expect("get");
        let ready = sl
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        if ready.as_deref() == Some("True") {
            let status = sl.status.expect("status");
            assert_eq!(status.totals.lists, 1);
            assert_eq!(status.totals.free, 1000);
            break;
        }
        assert!(Instant::now() < deadline, "never Ready");
        tokio::time::sleep(Duration::from_millis(500)).await; // polling a condition
    }
    lists
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    while lists.get_opt(&name).await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "finalizer never released");
        tokio::time::sleep(Duration::from_millis(500)).await; // polling a condition
    }
    assert!(
        db.store
            .pool(&format!("default/{name}"))
            .await
            .expect("read")
            .is_none(),
        "Delete removed the pool"
    );
    let _ = stop.send(());
    let _ = controller.await;
}
