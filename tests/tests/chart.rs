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

/// The chart in HSM mode: the module, the token, the PIN Secret and a volume the module
/// needs.
const PKCS11: [&str; 6] = [
    "--set",
    "pkcs11.enabled=true,pkcs11.module=/opt/hsm/lib/libpkcs11.so,pkcs11.tokenLabel=lists,pkcs11.pinSecret=hsm-pin",
    "--set-json",
    r#"pkcs11.volumes=[{"name":"hsm-config","configMap":{"name":"hsm-config"}}]"#,
    "--set-json",
    r#"pkcs11.volumeMounts=[{"name":"hsm-config","mountPath":"/etc/hsm","readOnly":true}]"#,
];

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let server = require_apiserver!();
    let Some(helm) = helm::helm() else { return };
    let client = server.admin().await;
    let ns = server.namespace("chart").await;
    let all_on = [
        "--set",
        "worker.ingress.enabled=true,worker.autoscaling.enabled=true,serviceMonitor.enabled=true,demo.enabled=true",
        "--set",
        "networkPolicy.enabled=true,networkPolicy.databaseCidr=10.0.0.0/8,worker.jwksAllowHttp=true",
        "--set",
        "worker.jwksAllowCidrs={10.20.0.0/16,fd00:1::/64}",
        "--set",
        "tracing.otlpEndpoint=http://otel-collector.observability:4318,tracing.collectorCidr=10.30.0.0/16",
        "--set",
        "tracing.sampler=parentbased_traceidratio,tracing.samplerArg=0.25",
        "--set",
        "database.tls.caConfigMap=pg-ca,database.tls.clientCertSecret=pg-client",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
        // Every documented extraEnv shape, as `--set` gives them (the Tiltfile's and
        // scripts/kind-e2e's `value=2` is a number to Helm; server-side apply refused it).
        "--set",
        "worker.extraEnv[0].name=JWKS_REFETCH_INTERVAL_SECONDS,worker.extraEnv[0].value=2",
        "--set",
        "worker.extraEnv[1].name=A_FLAG,worker.extraEnv[1].value=true",
        "--set",
        "worker.extraEnv[2].name=A_TEXT,worker.extraEnv[2].value=some text",
        "--set",
        "worker.extraEnv[3].name=A_FIELD,worker.extraEnv[3].valueFrom.fieldRef.fieldPath=metadata.name",
    ];
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let mut checked = 0;
    let mut skipped = Vec::new();
    for args in [
        &["--set", "crds.install=true"][..],
        &all_on[..],
        &PKCS11[..],
    ] {
        for doc in helm::template(&helm, &ns, &ns, args) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            // The Prometheus Operator's CRDs are not installed on a bare API server.
            if kind == "ServiceMonitor" || kind == "PodMonitor" {
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
    assert_eq!(skipped, ["PodMonitor", "ServiceMonitor"]);
}

/// With `pkcs11.enabled` no key Secret is mounted anywhere: the worker gets the module,
/// the token label and the PIN as a file from its Secret (mode 0400), and the volumes the
/// module needs; without it, the key Secret as before.
#[test]
fn in_pkcs11_mode_no_key_secret_is_mounted() {
    let Some(helm) = helm::helm() else { return };
    let worker = |args: &[&str]| {
        helm::template(&helm, "hsm", "hsm", args)
            .into_iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "hsm-statuslist-worker")
            .expect("the worker Deployment")
    };
    let env = |d: &serde_json::Value| -> Vec<(String, String)> {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let files = worker(&[]);
    let volumes = files["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains("statuslist-signing-keys"), "{volumes}");
    assert!(env(&files).iter().any(|(n, _)| n == "SIGNING_KEY_DIR"));
    assert!(!env(&files).iter().any(|(n, _)| n.starts_with("PKCS11_")));

    let hsm = worker(&PKCS11);
    let spec = &hsm["spec"]["template"]["spec"];
    let env = env(&hsm);
    for (name, value) in [
        ("PKCS11_MODULE", "/opt/hsm/lib/libpkcs11.so"),
        ("PKCS11_TOKEN_LABEL", "lists"),
        ("PKCS11_PIN_FILE", "/etc/statuslist/pkcs11-pin/pin"),
        ("PKCS11_KEY_PREFIX", "statuslist-"),
    ] {
        assert!(
            env.iter().any(|(n, v)| n == name && v == value),
            "{name}={value} missing: {env:?}"
        );
    }
    assert!(!env.iter().any(|(n, _)| n == "SIGNING_KEY_DIR"), "{env:?}");
    let volumes = spec["volumes"].as_array().expect("volumes");
    assert!(
        !spec["volumes"].to_string().contains("signing-keys"),
        "a key Secret is mounted: {volumes:?}"
    );
    let pin = volumes
        .iter()
        .find(|v| v["name"] == "pkcs11-pin")
        .expect("the PIN volume");
    assert_eq!(pin["secret"]["secretName"], "hsm-pin");
    assert_eq!(pin["secret"]["defaultMode"], 256);
    // The user PIN alone: an SO PIN kept in the same Secret stays out of the pod.
    assert_eq!(
        pin["secret"]["items"],
        json!([{"key": "pin", "path": "pin"}])
    );
    assert!(volumes.iter().any(|v| v["name"] == "hsm-config"));
    let mounts = spec["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/etc/hsm") && mounts.contains("/etc/statuslist/pkcs11-pin"),
        "{mounts}"
    );
    // Half a configuration is refused by the values schema, with the field named.
    let err = helm::refusal(
        &helm,
        "hsm",
        &["--set", "pkcs11.enabled=true,pkcs11.module=/x.so"],
    );
    assert!(
        err.contains("tokenLabel") && err.contains("pinSecret"),
        "{err}"
    );
}

/// The Ingress routes only the public port; `/metrics` is on another one, and the
/// workers' JWKS egress (with the NetworkPolicy) leaves internal ranges out.
#[test]
fn the_ingress_never_reaches_metrics_and_jwks_egress_skips_internal_ranges() {
    let Some(helm) = helm::helm() else { return };
    let docs = helm::template(
        &helm,
        "sec",
        "sec",
        &[
            "--set",
            "worker.ingress.enabled=true,networkPolicy.enabled=true,serviceMonitor.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1/PodMonitor",
        ],
    );
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let ingress = find("Ingress", "sec-statuslist-worker");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["port"]["name"], "http");
    let service = find("Service", "sec-statuslist-worker");
    let ports = service["spec"]["ports"].as_array().expect("ports");
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("http port");
    assert_eq!(http["targetPort"], "http");
    let worker = find("Deployment", "sec-statuslist-worker");
    let container = &worker["spec"]["template"]["spec"]["containers"][0];
    let port_of = |name: &str| {
        container["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| p["containerPort"].clone())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    let env = |name: &str| {
        container["env"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["name"] == name))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no env {name}"))
            .to_owned()
    };
    let metrics_port: u64 = env("METRICS_ADDR")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("METRICS_ADDR port");
    assert_eq!(port_of("metrics"), json!(metrics_port));
    assert_ne!(
        port_of("http"),
        json!(metrics_port),
        "metrics on the public port"
    );
    let monitor = find("ServiceMonitor", "sec-statuslist-worker");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");

    let policy = find("NetworkPolicy", "sec-statuslist-worker");
    let https = policy["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .find(|r| r["ports"][0]["port"] == 443)
        .expect("an egress rule for 443");
    let except = &https["to"][0]["ipBlock"]["except"];
    for range in [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ] {
        assert!(
            except
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == range)),
            "443 egress reaches {range}: {except}"
        );
    }
    find("NetworkPolicy", "sec-statuslist-operator");
}

/// The worker PodDisruptionBudget never blocks a drain (one replica or three), and
/// `logFormat` reaches the operator as well as the workers.
#[test]
fn the_disruption_budget_allows_a_drain_and_both_deployments_take_the_log_format() {
    let Some(helm) = helm::helm() else { return };
    for replicas in ["1", "3"] {
        let docs = helm::template(
            &helm,
            "pdb",
            "pdb",
            &["--set", &format!("worker.replicas={replicas}")],
        );
        let pdb = docs
            .iter()
            .find(|d| d["kind"] == "PodDisruptionBudget")
            .expect("a PodDisruptionBudget");
        assert_eq!(
            pdb["spec"]["maxUnavailable"], 1,
            "{replicas} replicas: {pdb}"
        );
        assert!(pdb["spec"]["minAvailable"].is_null(), "{pdb}");
    }
    for format in ["json", "text"] {
        let docs = helm::template(
            &helm,
            "log",
            "log",
            &["--set", &format!("logFormat={format}")],
        );
        for name in ["log-statuslist-operator", "log-statuslist-worker"] {
            let deployment = docs
                .iter()
                .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {name}"));
            let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .expect("env");
            assert!(
                env.iter()
                    .any(|e| e["name"] == "LOG_FORMAT" && e["value"] == format),
                "{name}: no LOG_FORMAT={format}"
            );
        }
    }
}

/// `tracing.otlpEndpoint` turns traces on in both deployments with the sampler given (and,
/// with network policies, egress to the collector); unset, no OpenTelemetry variable is
/// set at all; a sampler or ratio OpenTelemetry does not know is refused by the schema.
#[test]
fn tracing_reaches_both_deployments_only_when_an_endpoint_is_set() {
    let Some(helm) = helm::helm() else { return };
    let env_of = |docs: &[Value], name: &str| -> Vec<(String, String)> {
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with("OTEL_")))
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let off = helm::template(
        &helm,
        "off",
        "off",
        &["--set", "networkPolicy.enabled=true"],
    );
    for name in ["off-statuslist-operator", "off-statuslist-worker"] {
        assert_eq!(env_of(&off, name), [], "{name}");
    }
    let on = helm::template(
        &helm,
        "on",
        "obs",
        &[
            "--set",
            "tracing.otlpEndpoint=http://collector:4318,tracing.sampler=parentbased_traceidratio,tracing.samplerArg=0.01",
            "--set",
            "networkPolicy.enabled=true,tracing.collectorCidr=10.30.0.0/16",
        ],
    );
    for name in ["on-statuslist-operator", "on-statuslist-worker"] {
        let env = env_of(&on, name);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://collector:4318"),
            "{name}"
        );
        assert_eq!(get("OTEL_TRACES_SAMPLER"), Some("parentbased_traceidratio"));
        assert_eq!(get("OTEL_TRACES_SAMPLER_ARG"), Some("0.01"));
        assert_eq!(
            get("OTEL_RESOURCE_ATTRIBUTES"),
            Some("service.namespace=obs/on,k8s.namespace.name=obs")
        );
        let policy = on
            .iter()
            .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no NetworkPolicy {name}"));
        let egress = policy["spec"]["egress"].as_array().expect("egress");
        assert!(
            egress.iter().any(|rule| rule["ports"][0]["port"] == 4318
                && rule["to"][0]["ipBlock"]["cidr"] == "10.30.0.0/16"),
            "{name}: no egress to the collector: {egress:?}"
        );
    }
    for bad in [
        "tracing.sampler=sometimes",
        "tracing.samplerArg=2",
        "tracing.otlpEndpoint=collector:4318",
    ] {
        let out = std::process::Command::new(&helm)
            .args(["template", "bad"])
            .arg(statuslist_tests::repo_root().join("charts/statuslist"))
            .args(["--set", bad])
            .output()
            .expect("helm");
        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("tracing"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    let mut lease_name = None;
    for doc in helm::template(&helm, &ns, &ns, &[]) {
        let kind = doc["kind"].as_str().unwrap_or_default();
        // The release's Lease is left out: the operator creates it when it is missing.
        if kind == "Lease" {
            lease_name = doc["metadata"]["name"].as_str().map(str::to_owned);
        }
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
    let lease_name = lease_name.expect("the chart has the release's Lease");
    let mut ctx = Context::new(operator.clone(), db.store.clone(), Metrics::default(), None);
    ctx.namespace = Some(ns.clone());
    ctx.owner = format!("{ns}/{lease_name}");
    let scope = statuslist_operator::uninstall::Scope {
        namespace: Some(ns.clone()),
        owner: ctx.owner.clone(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Stop::new(async move {
        let _ = rx.await;
    });
    let mut election = Election::new(ns.clone(), "rbac-replica".into());
    election.lease_name = lease_name.clone();
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
        .get(&lease_name)
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
    // The chart's uninstall guard (a pre-delete Job with this ServiceAccount) sees the
    // StatusList and refuses, naming it; once it is deleted (by the running operator,
    // finalizer and all) the guard lets the uninstall go on.
    let remaining = statuslist_operator::uninstall::remaining(operator.clone(), &scope)
        .await
        .expect("the operator's RBAC lists the StatusLists of its namespace");
    assert_eq!(remaining, [format!("{ns}/pool (deletionPolicy Delete)")]);
    let refusal = statuslist_operator::uninstall::verdict(&remaining).expect_err("refused");
    assert!(refusal.contains("kubectl delete statuslist"), "{refusal}");
    lists
        .delete("pool", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "the finalizer to be released", || async {
        lists.get_opt("pool").await.ok()?.is_none().then_some(())
    })
    .await;
    let remaining = statuslist_operator::uninstall::remaining(operator.clone(), &scope)
        .await
        .expect("list");
    assert!(
        statuslist_operator::uninstall::verdict(&remaining).is_ok(),
        "{remaining:?}"
    );

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

/// What a platform engineer meets on Day 2: the CRD kept by `helm uninstall` and left out
/// when kubectl manages it, the uninstall guard, the operator's update strategy (never
/// more operators than replicas), its metrics scraped, and the demo issuer only on request.
#[test]
fn uninstall_guard_crd_lifecycle_operator_strategy_and_metrics() {
    let Some(helm) = helm::helm() else { return };
    let render = |args: &[&str]| helm::template(&helm, "day2", "day2", args);
    let find = |docs: &[Value], kind: &str| {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };

    let docs = render(&[]);
    let crds = find(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    assert_eq!(
        crds[0]["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(
        find(
            &render(&["--set", "crds.install=false"]),
            "CustomResourceDefinition"
        )
        .is_empty()
    );

    let jobs = find(&docs, "Job");
    assert_eq!(jobs.len(), 1, "the uninstall guard");
    let job = &jobs[0];
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "day2-statuslist-uninstall-guard");
    // It may read and update exactly this revision's Helm record, nothing else of Helm's.
    let guard_role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "day2-statuslist-uninstall-guard")
        .expect("the guard's Role");
    assert_eq!(
        guard_role["rules"][0]["resourceNames"],
        json!(["sh.helm.release.v1.day2.v1"])
    );
    assert_eq!(pod["containers"][0]["args"], json!(["uninstall-check"]));
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert!(find(&render(&["--set", "uninstallGuard.enabled=false"]), "Job").is_empty());

    for (replicas, strategy) in [
        ("1", json!({"type": "Recreate"})),
        (
            "2",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
        ),
    ] {
        let docs = render(&["--set", &format!("operator.replicas={replicas}")]);
        let operator = docs
            .iter()
            .find(|d| {
                d["kind"] == "Deployment" && d["metadata"]["name"] == "day2-statuslist-operator"
            })
            .expect("operator Deployment");
        assert_eq!(
            operator["spec"]["strategy"], strategy,
            "{replicas} replicas"
        );
    }

    assert!(find(&docs, "PodMonitor").is_empty());
    // Where the Prometheus Operator's API is absent, a clear refusal instead of a failed
    // upgrade ("no matches for kind PodMonitor").
    let err = helm::refusal(&helm, "day2", &["--set", "serviceMonitor.enabled=true"]);
    assert!(err.contains("Prometheus Operator's CRDs"), "{err}");
    let docs = render(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
    ]);
    let monitors = find(&docs, "PodMonitor");
    assert_eq!(monitors.len(), 1);
    assert_eq!(
        monitors[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "operator"
    );
    assert_eq!(
        monitors[0]["spec"]["podMetricsEndpoints"][0]["port"],
        "http"
    );

    // The demo issuer: off by default; on, its Service is what deploy/dev/examples.yaml names.
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "day2-statuslist-demo-issuer")
    );
    let docs = helm::template(
        &helm,
        "statuslist",
        "default",
        &["--set", "demo.enabled=true"],
    );
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "statuslist-demo-issuer")
        .expect("the demo issuer's Service");
    let host = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().expect("name"),
        service["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
    );
    let examples =
        std::fs::read_to_string(statuslist_tests::repo_root().join("deploy/dev/examples.yaml"))
            .expect("examples");
    assert_eq!(
        examples
            .matches(&format!("jwksUri: http://{host}/jwks.json"))
            .count(),
        2,
        "{host}"
    );
    let demo = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "statuslist-demo-issuer")
        .expect("the demo issuer");
    let env = demo["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "SERVICE_URL" && e["value"] == "http://statuslist-worker:80"),
        "{env:?}"
    );
}

/// The Tiltfile, checked where no Starlark evaluator runs: it parses (Starlark's syntax
/// is Python's, so python3's parser reads it), never live-updates or builds on the host,
/// applies the CRD once (through the chart), and every workload and object it names is
/// one that its own chart values render, or one of its manifests holds.
#[test]
fn the_tiltfile_names_what_it_deploys() {
    let root = statuslist_tests::repo_root();
    let tiltfile = std::fs::read_to_string(root.join("Tiltfile")).expect("Tiltfile");
    let code: String = tiltfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(root.join("Tiltfile"))
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for banned in ["live_update", "cargo build", "cargo run", "crds/"] {
        assert!(!code.contains(banned), "the Tiltfile uses {banned}");
    }
    assert!(
        code.contains("dockerfile='Dockerfile'"),
        "one image build, from the Dockerfile"
    );
    let quoted = |after: &str| -> Vec<String> {
        code.split(after)
            .skip(1)
            .filter_map(|rest| rest.split('\'').next().map(str::to_owned))
            .collect()
    };
    let Some(helm) = helm::helm() else { return };
    // The chart's values as the Tiltfile sets them.
    let rest = code.split("set=[").nth(1).expect("helm(set=[...])");
    let block = &rest[..rest.find("\n    ],").expect("end of set=[...]")];
    // Starlark string literals: `\\` is one backslash.
    let sets: Vec<String> = block
        .lines()
        .filter_map(|l| l.trim().strip_prefix('\'')?.strip_suffix("',"))
        .map(|s| s.replace("\\\\", "\\"))
        .collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    assert!(sets.contains(&"demo.enabled=true"), "{sets:?}");
    let mut args = Vec::new();
    for s in &sets {
        args.extend(["--set", *s]);
    }
    let docs = helm::template(&helm, "statuslist", "default", &args);
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 1);
    // `tilt down` keeps the CRD (and the examples): never a CRD "deletion in progress"
    // behind StatusLists whose operator is gone.
    assert_eq!(
        crds[0]["metadata"]["annotations"]["tilt.dev/down-policy"],
        "keep"
    );
    // Environment values are strings, whatever Helm made of them.
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
        {
            for e in c["env"].as_array().into_iter().flatten() {
                assert!(
                    e.get("value").is_none_or(Value::is_string),
                    "{} env {e}",
                    d["metadata"]["name"]
                );
            }
        }
    }
    let postgres =
        std::fs::read_to_string(root.join("deploy/dev/postgres.yaml")).expect("postgres");
    for workload in quoted("k8s_resource(\n    '")
        .into_iter()
        .chain(quoted("k8s_resource('"))
    {
        let rendered = docs
            .iter()
            .any(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == workload.as_str());
        assert!(
            rendered || postgres.contains(&format!("name: {workload}")),
            "the Tiltfile names {workload}, which nothing deploys"
        );
    }
    let examples =
        std::fs::read_to_string(root.join("deploy/dev/examples.yaml")).expect("examples");
    for object in ["driving-licence:statuslist", "veteran-card:statuslist"] {
        assert!(code.contains(object), "{object}");
        let name = object.split(':').next().expect("name");
        assert!(examples.contains(&format!("name: {name}")), "{name}");
    }
    assert!(code.contains("k8s_yaml('deploy/dev/examples.yaml')"));
    assert_eq!(
        examples.matches("tilt.dev/down-policy: keep").count(),
        2,
        "tilt down keeps both example StatusLists"
    );
    assert!(
        !code.contains("'5432:5432'"),
        "the PostgreSQL port-forward must not take a local PostgreSQL's port"
    );
    assert!(root.join("deploy/dev/try-it.txt").is_file());
}

/// The CloudNativePG example (docs/scaling.md): the cluster keeps a synchronous standby,
/// and the chart with the example's values reads the URL from the Secret the comments
/// create, mounts the CA ConfigMap where that URL names it, and autoscales the workers.
#[test]
fn the_cloudnativepg_example_renders_as_documented() {
    let Some(helm) = helm::helm() else { return };
    let root = statuslist_tests::repo_root();
    let cluster: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/cnpg/cluster.yaml")).expect("cluster.yaml"),
    )
    .expect("YAML");
    assert_eq!(cluster["kind"], "Cluster");
    let (name, ns) = (
        cluster["metadata"]["name"].as_str().expect("name"),
        cluster["metadata"]["namespace"]
            .as_str()
            .expect("namespace"),
    );
    let sync = &cluster["spec"]["postgresql"]["synchronous"];
    assert!(sync["number"].as_u64() >= Some(1), "{sync}");
    assert_eq!(sync["dataDurability"], "required");

    let values_path = root.join("deploy/cnpg/values.yaml");
    let values = std::fs::read_to_string(&values_path).expect("values.yaml");
    // The documented URL points at the cluster's -rw Service and the mounted CA.
    let url_line = values
        .lines()
        .find(|l| l.contains("--from-literal=url="))
        .expect("the documented URL");
    assert!(
        url_line.contains(&format!("@{name}-rw.{ns}.svc:5432/"))
            && url_line.contains("sslmode=verify-full")
            && url_line.contains("sslrootcert=/etc/statuslist/database-ca/ca.crt"),
        "{url_line}"
    );
    assert!(
        values.contains(&format!("get secret {name}-ca ")),
        "the CA comes from {name}-ca"
    );
    let docs = helm::template(
        &helm,
        "statuslist",
        ns,
        &["-f", values_path.to_str().expect("path")],
    );
    let worker = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "statuslist-worker")
        .expect("worker Deployment");
    let pod = &worker["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "DATABASE_URL"
            && e["valueFrom"]["secretKeyRef"]["name"] == "statuslist-database"
            && e["valueFrom"]["secretKeyRef"]["key"] == "url"),
        "{env:?}"
    );
    let volumes = pod["volumes"].as_array().expect("volumes");
    let ca = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == "statuslist-db-ca")
        .expect("the CA ConfigMap mounted");
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == ca["name"] && m["mountPath"] == "/etc/statuslist/database-ca"),
        "{mounts:?}"
    );
    let hpa = docs
        .iter()
        .find(|d| d["kind"] == "HorizontalPodAutoscaler")
        .expect("an HPA");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
}
