//! The StatusList CRD on a real kube-apiserver: it installs (the generated YAML and the
//! chart's copy), the examples apply, every schema bound and CEL rule rejects its bad case
//! server-side with its message and accepts the boundary values, and the printer columns
//! come back from the Table API. Client-side CEL and `kubernetes-validate` cannot show any
//! of this: neither runs the apiserver's CEL cost estimator.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use statuslist_crd::StatusList;
use statuslist_tests::envtest::{ApiServer, install_crd};
use statuslist_tests::{helm, repo_root, require_apiserver};

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("statuslist.dev", "v1alpha1", "StatusList"),
        "statuslists",
    )
}

fn read_yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).expect("read YAML");
    serde_yaml_ng::from_str(&text).expect("parse YAML")
}

async fn setup(server: &ApiServer) -> (Client, String) {
    let client = server.admin().await;
    install_crd(&client, &StatusList::crd())
        .await
        .expect("the generated CRD installs");
    let ns = server.namespace("crd").await;
    (client, ns)
}

fn object(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("object")
}

use statuslist_crd::rejections::{minimal_spec as minimal, spec_with as with};

/// `kubectl apply --server-side --dry-run=server` (strict field validation, as kubectl
/// asks for): the full admission chain, nothing stored.
async fn admit(api: &Api<DynamicObject>, spec: Value) -> Result<(), String> {
    let pp = PatchParams::apply("statuslist-tests")
        .dry_run()
        .validation(ValidationDirective::Strict);
    api.patch("x", &pp, &Patch::Apply(object("x", spec)))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_generated_crd_and_the_charts_copy_install_and_the_examples_apply() {
    let server = require_apiserver!();
    let (client, ns) = setup(server).await;
    // The chart's template renders the same CRD; applying it (as helm install would)
    // must succeed. With crds.install=false it renders none.
    if let Some(helm) = helm::helm() {
        let crd_of = |args: &[&str]| {
            helm::template(&helm, "crd", &ns, args)
                .into_iter()
                .find(|d| d["kind"] == "CustomResourceDefinition")
        };
        assert!(crd_of(&["--set", "crds.install=false"]).is_none());
        let chart = crd_of(&[]).expect("the chart renders the CRD");
        assert_eq!(
            chart["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "helm uninstall must keep the CRD (deleting it deletes every StatusList)"
        );
        let chart: CustomResourceDefinition =
            serde_json::from_value(chart).expect("the chart's CRD");
        install_crd(&client, &chart)
            .await
            .expect("the chart's CRD installs");
    }
    let committed: CustomResourceDefinition =
        serde_json::from_value(read_yaml("crds/statuslist.dev_statuslists.yaml")).expect("crds/");
    install_crd(&client, &committed)
        .await
        .expect("crds/ installs");

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource());
    for file in ["examples/token.yaml", "examples/bitstring.yaml"] {
        let mut value = read_yaml(file);
        // Each test has its own namespace.
        value["metadata"]["namespace"] = json!(ns);
        let name = value["metadata"]["name"].as_str().expect("name").to_owned();
        api.patch(
            &name,
            &PatchParams::apply("statuslist-tests"),
            &Patch::Apply(&value),
        )
        .await
        .unwrap_or_else(|e| panic!("{file} applies: {e}"));
        let stored = api.get(&name).await.expect("get");
        // Defaults are applied by the server.
        assert_eq!(stored.data["spec"]["leaseSize"], json!(1000), "{file}");
        assert_eq!(stored.data["spec"]["deletionPolicy"], json!("Retain"));
    }
}

#[tokio::test]
async fn every_bound_and_rule_rejects_its_bad_case_server_side() {
    let server = require_apiserver!();
    let (client, ns) = setup(server).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());
    let long = |n: usize| "a".repeat(n);
    let cases = statuslist_crd::rejections::rejections();
    let mut failures = Vec::new();
    for case in &cases {
        let (spec, expected) = (&case.spec, case.by_the_apiserver);
        match admit(&api, spec.clone()).await {
            Ok(()) => failures.push(format!("accepted: {spec}")),
            Err(e) if !e.contains(expected) => {
                failures.push(format!("{spec}: expected {expected:?} in {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The boundary values themselves are accepted.
    let accepted = [
        with("Bitstring", "entriesPerList", json!(131_072)),
        json!({"format": "Token", "baseUri": "http://127.0.0.1:8080/status", "entriesPerList": 100,
               "leaseSize": 10, "minFreeEntries": 99, "ttlSeconds": 60, "validitySeconds": 60,
               "maxStatusLifetimeSeconds": 1, "issuers": []}),
        json!({"format": "Token", "baseUri": format!("https://{}", long(504)), "entriesPerList": 16_777_216,
               "leaseSize": 1_000_000, "minFreeEntries": 16_777_215, "ttlSeconds": 604_800,
               "validitySeconds": 604_800, "maxStatusLifetimeSeconds": 315_360_000,
               "issuers": (0..64).map(|i| json!({"clientId": format!("{}{i:02}", long(254)),
                   "jwksUri": format!("https://a/{}", long(2038))})).collect::<Vec<_>>()}),
        with("Token", "minFreeEntries", json!(0)),
        with("Token", "bits", json!(8)),
        with("Token", "bits", json!(1)),
        with("Token", "suspension", json!(true)),
        with("Bitstring", "suspension", json!(false)),
    ];
    for spec in accepted {
        admit(&api, spec.clone())
            .await
            .unwrap_or_else(|e| panic!("rejected {spec}: {e}"));
    }
}

#[tokio::test]
async fn format_and_bits_are_immutable_server_side() {
    let server = require_apiserver!();
    let (client, ns) = setup(server).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());
    api.create(&PostParams::default(), &object("pool", minimal("Token")))
        .await
        .expect("create");
    let pp = PatchParams::apply("statuslist-tests").force();
    let change = |spec: Value| {
        json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
               "metadata": {"name": "pool"}, "spec": spec})
    };
    let err = api
        .patch("pool", &pp, &Patch::Apply(change(minimal("Bitstring"))))
        .await
        .expect_err("format changed");
    assert!(err.to_string().contains("format is immutable"), "{err}");
    let err = api
        .patch(
            "pool",
            &pp,
            &Patch::Apply(change(with("Token", "bits", json!(4)))),
        )
        .await
        .expect_err("bits changed");
    assert!(err.to_string().contains("bits is immutable"), "{err}");
    api.patch(
        "pool",
        &pp,
        &Patch::Apply(change(with("Token", "ttlSeconds", json!(60)))),
    )
    .await
    .expect("other fields may change");
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let server = require_apiserver!();
    let (client, ns) = setup(server).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource());
    api.create(&PostParams::default(), &object("pool", minimal("Token")))
        .await
        .expect("create");
    // Status as the operator writes it.
    let status = json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
        "status": {"totals": {"lists": 2, "size": 200000, "allocated": 1234, "revoked": 5, "free": 98766},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
                                   "lastTransitionTime": "2026-12-01T00:00:00Z"}]}});
    api.patch_status(
        "pool",
        &PatchParams::apply("statuslist-operator").force(),
        &Patch::Apply(status),
    )
    .await
    .expect("status");
    let req = http::Request::get(format!(
        "/apis/statuslist.dev/v1alpha1/namespaces/{ns}/statuslists"
    ))
    .header("Accept", "application/json;as=Table;g=meta.k8s.io;v=v1")
    .body(Vec::new())
    .expect("request");
    let table: Value = client.request(req).await.expect("Table API");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Format",
            "Lists",
            "Allocated",
            "Free",
            "Ready",
            "Reconciled",
            "Age"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], json!("pool"));
    assert_eq!(cells[1], json!("Token"));
    assert_eq!(cells[2], json!(2));
    assert_eq!(cells[3], json!(1234));
    assert_eq!(cells[4], json!(98766));
    assert_eq!(cells[5], json!("True"));
    assert!(cells[7].as_str().is_some_and(|age| !age.is_empty()));
}
