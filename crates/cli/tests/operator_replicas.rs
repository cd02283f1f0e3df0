//! Two `statuslist operator` processes on a real kube-apiserver: one leads (holds the
//! Lease) and reconciles, the other stands by; SIGKILL the leader and the other takes over
//! within the lease duration; a standby exits within 5 s of SIGTERM.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use statuslist_crd::StatusList;
use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::{eventually, install_crd, wait_ready};
use statuslist_tests::require_apiserver;

mod common;
use common::operator;

const LEASE_SECONDS: u64 = 4;
/// The operators' setting of the same.
const LEASE: &[(&str, &str)] = &[("LEASE_DURATION_SECONDS", "4")];

async fn ready(lists: &Api<StatusList>, name: &str, ns: &str, timeout: Duration) {
    lists
        .patch(
            name,
            &PatchParams::apply("statuslist-tests"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList", "metadata": {"name": name},
                "spec": {"format": "Token", "baseUri": "https://status.example.test", "entriesPerList": 1000,
                         "leaseSize": 100, "issuers": [{"clientId": format!("{ns}-{name}"), "jwksUri": "https://i.example/jwks"}]}})),
        )
        .await
        .expect("apply");
    wait_ready(lists, name, timeout).await;
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("statuslist-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_is_killed() {
    let server = require_apiserver!();
    let client = server.admin().await;
    install_crd(&client, &StatusList::crd()).await.expect("CRD");
    let ns = server.namespace("replicas").await;
    let db = TestDb::new().await;
    let mut a = operator(server, &db, &ns, "replica-a", LEASE);
    let mut b = operator(server, &db, &ns, "replica-b", LEASE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let first = eventually(Duration::from_secs(30), "a leader", || holder(&leases)).await;
    let lists: Api<StatusList> = Api::namespaced(client.clone(), &ns);
    ready(&lists, "one", &ns, Duration::from_secs(30)).await;

    let (leader, standby) = if first == "replica-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    standby.wait_for_line("waiting to lead", Duration::from_secs(10));
    assert!(
        !standby
            .output()
            .iter()
            .any(|l| l.contains("leading: reconciling")),
        "the standby does not reconcile"
    );
    leader.signal("KILL");
    leader.wait_exit(Duration::from_secs(5)).expect("killed");
    let killed = Instant::now();
    let next = eventually(
        Duration::from_secs(LEASE_SECONDS * 3 + 10),
        "the standby to take the Lease",
        || async {
            let h = holder(&leases).await?;
            (h != first).then_some(h)
        },
    )
    .await;
    let takeover = killed.elapsed();
    ready(&lists, "two", &ns, Duration::from_secs(30)).await;
    eprintln!(
        "leader {first} killed; {next} took over after {takeover:?} (lease {LEASE_SECONDS} s)"
    );
    assert!(
        takeover < Duration::from_secs(LEASE_SECONDS * 3),
        "takeover took {takeover:?}"
    );
    let took = standby.terminate_within(Duration::from_secs(5));
    eprintln!("SIGTERM of the new leader: exited in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_exits_promptly_on_sigterm() {
    let server = require_apiserver!();
    let client = server.admin().await;
    install_crd(&client, &StatusList::crd()).await.expect("CRD");
    let ns = server.namespace("standby").await;
    let db = TestDb::new().await;
    let _leader = operator(server, &db, &ns, "leader", LEASE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(30), "a leader", || async {
        (holder(&leases).await.as_deref() == Some("leader")).then_some(())
    })
    .await;
    let mut standby = operator(server, &db, &ns, "standby", LEASE);
    standby.wait_for_line("waiting to lead", Duration::from_secs(30));
    let took = standby.terminate_within(Duration::from_secs(5));
    eprintln!("SIGTERM of a standby: exited in {took:?}");
}
