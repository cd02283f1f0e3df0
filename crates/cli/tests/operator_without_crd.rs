//! `statuslist operator` as a real process on a real kube-apiserver that does not have the
//! StatusList CRD yet: it keeps retrying with a clear log line (and exits within 5 s of
//! SIGTERM while doing so), picks the CRD up once it is applied, and exits within 5 s of
//! SIGTERM while leading. Alone in its test binary: the other tests install the CRD.

use std::time::Duration;

use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use statuslist_crd::StatusList;
use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::{install_crd, wait_ready};
use statuslist_tests::require_apiserver;

mod common;
use common::operator;

const NOT_INSTALLED: &str = "the StatusList CRD is not installed";
const SIGTERM_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_started_before_its_crd_waits_for_it_and_stops_on_sigterm() {
    let server = require_apiserver!();
    let ns = server.namespace("nocrd").await;
    let db = TestDb::new().await;

    // Waiting for the CRD: a clear line, and SIGTERM is honoured.
    let mut first = operator(server, &db, &ns, "operator-a", &[]);
    let line = first.wait_for_line(NOT_INSTALLED, Duration::from_secs(30));
    assert!(
        line.contains("kubectl apply --server-side -f crds/"),
        "{line}"
    );
    let took = first.terminate_within(SIGTERM_BOUND);
    eprintln!("SIGTERM while waiting for the CRD: exited in {took:?}");

    // Started again, it picks the CRD up once applied and reconciles.
    let mut second = operator(server, &db, &ns, "operator-b", &[]);
    second.wait_for_line(NOT_INSTALLED, Duration::from_secs(30));
    let client = server.admin().await;
    install_crd(&client, &StatusList::crd()).await.expect("CRD");
    let lists: Api<StatusList> = Api::namespaced(client.clone(), &ns);
    lists
        .patch(
            "pool",
            &PatchParams::apply("statuslist-tests"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList", "metadata": {"name": "pool"},
                "spec": {"format": "Token", "baseUri": "https://status.example.test", "entriesPerList": 1000,
                         "leaseSize": 100, "issuers": [{"clientId": format!("{ns}-c"), "jwksUri": "https://i.example/jwks"}]}})),
        )
        .await
        .expect("apply");
    wait_ready(&lists, "pool", Duration::from_secs(60)).await;
    let took = second.terminate_within(SIGTERM_BOUND);
    eprintln!("SIGTERM while leading: exited in {took:?}");
    assert!(
        second.output_bytes() < 1 << 20,
        "the log stays small while waiting: {} bytes",
        second.output_bytes()
    );
}
