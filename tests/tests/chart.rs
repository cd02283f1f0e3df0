//! The Helm chart against a real kube-apiserver: every rendered object passes a
//! server-side dry-run apply (the apiserver's own validation, not a schema copy), and the
//! operator runs with exactly the RBAC the chart grants it, through a token minted for
//! its ServiceAccount.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use statuslist_crd::StatusList;
use statuslist_operator::controller::Context;
use statuslist_operator::leader::{Election, Stop, serve};
use statuslist_operator::metrics::Metrics;
use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::{ApiServer, eventually, install_crd, wait_ready};
use statuslist_tests::{helm, require_apiserver};

const WAIT: Duration = Duration::from_secs(30);

/// `kubectl apply --server-side` of one rendered object, with `params` (a dry run or not).
async fn server_side_apply(
    client: &Client,
    discovery: &Discovery,
    namespace: &str,
    doc: &Value,
    params: &PatchParams,
) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = doc["kind"].as_str().unwrap_or_default();
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| format!("unknown kind {gvk:?}"))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(name, params, &Patch::Apply(doc))
        .await
        .map(|_| ())
        .map_err(|e| format!("{kind} {name}: {e}"))
}

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let server = require_apiserver!();
    let Some(helm) = helm::helm() else { return };
    let client = server.admin().await;
    let ns = server.namespace("chart").await;
    let all_on = [
        "--include-crds",
        "--set",
        "worker.ingress.enabled=true,worker.autoscaling.enabled=true,serviceMonitor.enabled=true",
        "--set",
        "networkPolicy.enabled=true,networkPolicy.databaseCidr=10.0.0.0/8,worker.jwksAllowHttp=true",
        "--set",
        "database.tls.caConfigMap=pg-ca,database.tls.clientCertSecret=pg-client",
    ];
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let mut checked = 0;
    let mut skipped = Vec::new();
    for args in [&["--include-crds"][..], &all_on[..]] {
        for doc in helm::template(&helm, &ns, &ns, args) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            // The Prometheus Operator's CRD is not installed on a bare API server.
            if kind == "ServiceMonitor" {
                skipped.push(kind);
                continue;
            }
            let dry_run = PatchParams::apply("helm-dry-run").dry_run();
            server_side_apply(&client, &discovery, &ns, &doc, &dry_run)
                .await
                .unwrap_or_else(|e| panic!("rendered with {args:?}: {e}"));
            checked += 1;
        }
    }
    eprintln!("dry-run applied {checked} objects; skipped (no CRD on this server): {skipped:?}");
    assert!(checked >= 20, "only {checked} objects rendered");
    assert_eq!(skipped, ["ServiceMonitor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_exactly_the_charts_rbac() {
    let server = require_apiserver!();
    let Some(helm) = helm::helm() else { return };
    let admin = server.admin().await;
    install_crd(&admin, &StatusList::crd()).await.expect("CRD");
    let ns = server.namespace("rbac").await;
    let discovery = Discovery::new(admin.clone())
        .run()
        .await
        .expect("discovery");
    let rbac_kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let mut operator_sa = None;
    for doc in helm::template(&helm, &ns, &ns, &[]) {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !rbac_kinds.contains(&kind) {
            continue;
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if kind == "ServiceAccount" && name.ends_with("-operator") {
            operator_sa = Some(name);
        }
        let params = PatchParams::apply("statuslist-tests").force();
        server_side_apply(&admin, &discovery, &ns, &doc, &params)
            .await
            .expect("apply");
    }
    let operator_sa = operator_sa.expect("the chart has an operator ServiceAccount");

    // A token for the ServiceAccount, as the kubelet would mount it.
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .expect("TokenRequest");
    let minted: TokenRequest = Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create_subresource("token", &operator_sa, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = minted.status.expect("token status").token;
    let kubeconfig = server
        .kubeconfig_for_token(&ns, &token)
        .expect("kubeconfig");
    let operator = Client::try_from(ApiServer::config_of(&kubeconfig).await.expect("config"))
        .expect("operator client");

    // The lifecycle works with that identity, leader election included.
    let db = TestDb::new().await;
    let mut ctx = Context::new(operator.clone(), db.store.clone(), Metrics::default(), None);
    ctx.namespace = Some(ns.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Stop::new(async move {
        let _ = rx.await;
    });
    let election = Election::new(ns.clone(), "rbac-replica".into());
    let controller = tokio::spawn(serve(Arc::new(ctx), Some(election), stop));
    let lists: Api<StatusList> = Api::namespaced(admin.clone(), &ns);
    lists
        .patch(
            "pool",
            &PatchParams::apply("statuslist-tests"),
            &Patch::Apply(json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
                "metadata": {"name": "pool"},
                "spec": {"format": "Token", "baseUri": "https://status.example.test", "entriesPerList": 1000,
                         "leaseSize": 100, "deletionPolicy": "Delete",
                         "issuers": [{"clientId": format!("{ns}-client"), "jwksUri": "https://issuer.example.test/jwks"}]}})),
        )
        .await
        .expect("apply StatusList");
    wait_ready(&lists, "pool", WAIT).await;
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("statuslist-operator")
        .await
        .expect("the leader-election Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rbac-replica")
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &ns);
    eventually(WAIT, "a ListProvisioned Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ListProvisioned"))
            .then_some(())
    })
    .await;
    lists
        .delete("pool", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "the finalizer to be released", || async {
        lists.get_opt("pool").await.ok()?.is_none().then_some(())
    })
    .await;

    // Nothing beyond its role is reachable.
    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    };
    forbidden(
        Api::<Secret>::namespaced(operator.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list secrets",
    );
    forbidden(
        Api::<ConfigMap>::namespaced(operator.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list configmaps",
    );
    let own: Api<StatusList> = Api::namespaced(operator.clone(), &ns);
    forbidden(
        own.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
                "metadata": {"name": "mine"},
                "spec": {"format": "Token", "baseUri": "https://x.example", "issuers": []}}),
            )
            .expect("object"),
        )
        .await
        .map(|_| ()),
        "create a StatusList",
    );
    forbidden(
        own.delete("pool", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete a StatusList",
    );
    forbidden(
        Api::<Lease>::namespaced(operator.clone(), "default")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "leases of another namespace",
    );
    forbidden(
        Api::<Lease>::namespaced(operator.clone(), &ns)
            .get("someone-elses-lease")
            .await
            .map(|_| ()),
        "a Lease other than its own",
    );
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}
