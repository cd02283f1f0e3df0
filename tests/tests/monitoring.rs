//! The alerts and the dashboard against the real tools: promtool checks the rules and runs
//! their unit tests (every alert fires in one); the chart ships exactly those rules; and a
//! real Prometheus server, scraping a running worker and an operator (on a real
//! kube-apiserver and PostgreSQL), loads the rules and has every metric the alerts and the
//! dashboard query. Each part skips with a line where its tool is missing (scripts/test
//! installs Debian's `prometheus`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use statuslist_crd::StatusList;
use statuslist_store::testing::TestDb;
use statuslist_tests::envtest::{eventually, install_crd};
use statuslist_tests::helm::{helm, template};
use statuslist_tests::process::{Process, free_port};
use statuslist_tests::service::{Issuer, Worker, binary, issue};
use statuslist_tests::{on_path, repo_root, require_apiserver};

const ALERTS: &str = "charts/statuslist/files/alerts.yaml";
const ALERT_TESTS: &str = "tests/monitoring/alerts.test.yaml";
const DASHBOARD: &str = "charts/statuslist/files/dashboard.json";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).expect("read")
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).expect("YAML")
}

fn alert_names(rules: &Value) -> BTreeSet<String> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

/// Every `statuslist_*` metric name the alerts and the dashboard query.
fn queried_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for text in [read(ALERTS), read(DASHBOARD)] {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("statuslist_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn every_alert_passes_promtool_and_fires_in_its_unit_test() {
    let Some(promtool) = on_path("promtool") else {
        eprintln!("promtool not found: skipped (apt-get install prometheus)");
        return;
    };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(repo_root())
            .output()
            .expect("promtool");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    };
    println!("{}", run(&["check", "rules", ALERTS]));
    println!("{}", run(&["test", "rules", ALERT_TESTS]));

    // Every alert has a case where it fires (and the file tests no alert that is gone).
    let alerts = alert_names(&yaml(ALERTS));
    assert!(alerts.len() >= 9, "{alerts:?}");
    let fired: BTreeSet<String> = yaml(ALERT_TESTS)["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().expect("cases").iter())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|c| c["alertname"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(fired, alerts, "each alert fires in a promtool test");

    // Each alert's runbook is a heading of docs/operations.md.
    let operations = read("docs/operations.md").to_lowercase();
    for alert in &alerts {
        assert!(
            operations.contains(&format!("#### {}", alert.to_lowercase())),
            "no runbook for {alert} in docs/operations.md"
        );
    }
}

#[test]
fn the_chart_ships_the_same_rules_and_dashboard() {
    let Some(helm_bin) = helm() else {
        eprintln!("helm not found: skipped");
        return;
    };
    let docs = template(
        &helm_bin,
        "x",
        "default",
        &[
            "--set",
            "prometheusRule.enabled=true,grafanaDashboard.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule",
        ],
    );
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(
        rule["spec"],
        yaml(ALERTS),
        "the chart's rules are the file's"
    );
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "x-statuslist-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(dashboard["data"]["statuslist.json"].as_str().expect("json"))
            .expect("the dashboard is JSON");
    let file: Value = serde_json::from_str(&read(DASHBOARD)).expect("JSON");
    assert_eq!(shipped, file);
    // Off by default.
    let docs = template(&helm_bin, "x", "default", &[]);
    assert!(!docs.iter().any(
        |d| d["kind"] == "PrometheusRule" || d["metadata"]["name"] == "x-statuslist-dashboard"
    ));
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

fn write_config(dir: &Path, worker: &str, operator: &str, ns: &str) -> PathBuf {
    let config = dir.join("prometheus.yml");
    let alerts = repo_root().join(ALERTS);
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ['{}']
scrape_configs:
  - job_name: worker
    static_configs: [{{targets: ['{worker}'], labels: {{namespace: '{ns}', pod: worker-0}}}}]
  - job_name: operator
    static_configs: [{{targets: ['{operator}'], labels: {{namespace: '{ns}', pod: operator-0}}}}]
",
            alerts.display()
        ),
    )
    .expect("config");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_every_metric_the_alerts_and_dashboard_query() {
    let Some(prometheus) = on_path("prometheus") else {
        eprintln!("prometheus not found: skipped (apt-get install prometheus)");
        return;
    };
    let server = require_apiserver!();
    let bin = binary();
    let client = server.admin().await;
    install_crd(&client, &StatusList::crd()).await.expect("CRD");
    let ns = server.namespace("monitoring").await;
    let db = TestDb::new().await;

    // A worker, an issuer, and the operator on the real API server with one StatusList.
    let worker = Worker::start(&bin, "worker-0", &db.url, &[]);
    let issuer = Issuer::start(&bin, "monitoring-issuer").await;
    // An issuer whose JWKS cannot be fetched (a closed port): its failures are a series.
    let unreachable = Issuer::start(&bin, "monitoring-unreachable").await;
    let operator_addr = format!("127.0.0.1:{}", free_port());
    let kubeconfig = server.kubeconfig.display().to_string();
    let _operator = Process::start(
        "operator",
        &bin,
        &["operator"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("KUBECONFIG", kubeconfig.as_str()),
            ("LISTEN_ADDR", operator_addr.as_str()),
            ("WATCH_NAMESPACE", ns.as_str()),
            ("POD_NAMESPACE", ns.as_str()),
            ("POD_NAME", "operator-0"),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ],
    );
    let lists: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::core::ApiResource::erase::<StatusList>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList",
        "metadata": {"name": "driving-licence"},
        "spec": {"format": "Token", "baseUri": worker.url, "entriesPerList": 1000,
                 "leaseSize": 100, "deletionPolicy": "Delete", "suspension": true,
                 "issuers": [{"clientId": issuer.client_id, "jwksUri": issuer.jwks_url},
                             {"clientId": unreachable.client_id, "jwksUri": "http://127.0.0.1:1/jwks.json"}]}
    }))
    .expect("object");
    lists
        .create(&PostParams::default(), &object)
        .await
        .expect("StatusList");
    let (uri, idx) = eventually(Duration::from_secs(60), "an issuance", || async {
        issue(&bin, &worker.url, &issuer).await.ok()
    })
    .await;
    let _ = statuslist_tests::service::revoke(&bin, &worker.url, &issuer, &uri, idx).await;
    let refused = issue(&bin, &worker.url, &unreachable).await;
    assert_eq!(refused.map_err(|(status, _)| status), Err(Some(401)));

    let dir = tempfile::tempdir().expect("dir");
    let worker_metrics = worker.metrics_url.trim_start_matches("http://").to_owned();
    let config = write_config(dir.path(), &worker_metrics, &operator_addr, &ns);
    let web = format!("127.0.0.1:{}", free_port());
    let storage = dir.path().join("data").display().to_string();
    let _prometheus = Process::start(
        "prometheus",
        &prometheus,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={storage}"),
            &format!("--web.listen-address={web}"),
        ],
        &[],
    );
    let api = format!("http://{web}/api/v1");
    let http = reqwest::Client::new();

    // Both targets up, and the series of a reconciled pool and an issuance scraped.
    eventually(Duration::from_secs(60), "both targets up", || async {
        let targets = get_json(&http, &format!("{api}/targets")).await?;
        let active = targets["data"]["activeTargets"].as_array()?.clone();
        (active.len() == 2 && active.iter().all(|t| t["health"] == "up")).then_some(())
    })
    .await;
    let series = eventually(
        Duration::from_secs(60),
        "the pool and issuance series",
        || async {
            let names = get_json(&http, &format!("{api}/label/__name__/values")).await?;
            let names: BTreeSet<String> = names["data"]
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            (names.contains("statuslist_operator_pool_free_entries")
                && names.contains("statuslist_http_requests_total"))
            .then_some(names)
        },
    )
    .await;
    // Families without samples yet (no reconcile failure happened) are known by their
    // metadata (`# TYPE`), under their family name.
    let metadata = get_json(&http, &format!("{api}/metadata"))
        .await
        .expect("metadata");
    let families: BTreeSet<String> = metadata["data"]
        .as_object()
        .expect("metadata")
        .keys()
        .cloned()
        .collect();
    let mut missing = Vec::new();
    for name in queried_metrics() {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        if !series.contains(&name) && !families.contains(family) && !families.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "queried by the alerts or the dashboard but not exported: {missing:?}"
    );
    println!(
        "{} metric names queried, all exported; {} series names scraped",
        queried_metrics().len(),
        series.len()
    );

    // Prometheus loaded every rule and evaluates it without error; the pool's capacity
    // is what the operator reports.
    let rules = eventually(Duration::from_secs(30), "every rule evaluated", || async {
        let rules = get_json(&http, &format!("{api}/rules")).await?;
        let all: Vec<Value> = rules["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!all.is_empty() && all.iter().all(|r| r["health"] == "ok")).then_some(all)
    })
    .await;
    let loaded: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(loaded, alert_names(&yaml(ALERTS)));
    let free = get_json(
        &http,
        &format!("{api}/query?query=statuslist_operator_pool_free_entries"),
    )
    .await
    .expect("query");
    let value = &free["data"]["result"][0];
    assert_eq!(
        value["metric"]["statuslist"].as_str(),
        Some(format!("{ns}/driving-licence").as_str()),
        "{free}"
    );
    let free: u64 = value["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(0 < free && free < 1000, "one entry issued of 1,000: {free}");
}
