//! `statuslist operator`: the controller against the Kubernetes API, or the same reconcile
//! core on StatusList manifests read from files (`--manifests DIR`), re-read when they
//! change, so workers can run against one database without a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use statuslist_crd::{DeletionPolicy, StatusList};
use statuslist_operator::controller::Context;
use statuslist_operator::core;
use statuslist_operator::leader::{Election, Stop, serve};
use statuslist_operator::metrics::Metrics;
use statuslist_store::{PoolSpec, Store, StoreConfig};

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Read StatusList manifests from this directory instead of the Kubernetes API.
    #[arg(long, env = "STATUSLIST_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Address of /healthz, /readyz and /metrics (Kubernetes mode).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// Reported in Events as the instance and used as the leader-election identity;
    /// defaults to POD_NAME (a random name when neither is set).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Reconcile only while holding the Lease `statuslist-operator` (Kubernetes mode), so
    /// that of several replicas one works and the others stand by.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Watch StatusLists in this namespace only (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds a leader's Lease lasts without renewal (a crashed leader's successor
    /// takes over after at most this).
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Every StatusList document of every `*.yaml`/`*.yml` file in `dir`, as `(pool, spec,
/// deletion policy)`; a document that is not a valid StatusList is reported and skipped.
pub fn read_manifests(dir: &Path) -> Result<Vec<(PoolSpec, DeletionPolicy)>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read manifests in {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = match serde_json::Value::deserialize(document) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "not YAML; skipped");
                    continue;
                }
            };
            if value["kind"] != "StatusList" {
                continue;
            }
            let sl: StatusList = match serde_json::from_value(value) {
                Ok(sl) => sl,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "invalid StatusList; skipped");
                    continue;
                }
            };
            let namespace = sl
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = sl.metadata.name.clone().unwrap_or_default();
            match core::pool_spec(
                core::pool_name(&namespace, &name),
                sl.metadata.generation.unwrap_or(1),
                &sl.spec,
            ) {
                Ok(pool) => out.push((pool, sl.spec.deletion_policy)),
                Err(problems) => {
                    tracing::error!(file = %path.display(), %name, problems = %problems.join("; "), "invalid StatusList; skipped")
                }
            }
        }
    }
    Ok(out)
}

/// Modification times and sizes of the directory's files: changes when a manifest does.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| {
            let m = e.metadata().ok();
            (
                e.path(),
                m.as_ref().and_then(|m| m.modified().ok()),
                m.map_or(0, |m| m.len()),
            )
        })
        .collect();
    v.sort();
    v
}

/// One pass over the manifests: reconciles each, and carries out the deletion policy of
/// pools whose manifest disappeared since `known`.
pub async fn reconcile_manifests(
    store: &Store,
    dir: &Path,
    known: &mut BTreeMap<String, DeletionPolicy>,
) -> Result<(), String> {
    let pools = read_manifests(dir)?;
    let mut seen = BTreeMap::new();
    for (pool, policy) in &pools {
        match core::reconcile_pool(store, pool, now()).await {
            Ok(report) => {
                for list in &report.provisioned {
                    tracing::info!(pool = %pool.name, list = %list.id, uri = %list.uri, "list provisioned");
                }
                for c in &report.conflicts {
                    tracing::warn!(pool = %pool.name, client_id = %c.client_id, held_by = %c.held_by, "clientId held by another pool");
                }
            }
            Err(e) => tracing::warn!(pool = %pool.name, error = %e, "reconcile failed"),
        }
        seen.insert(pool.name.clone(), *policy);
    }
    for (gone, policy) in known.iter().filter(|(name, _)| !seen.contains_key(*name)) {
        match core::cleanup(store, gone, None, *policy).await {
            Ok(()) => {
                tracing::info!(pool = %gone, ?policy, "manifest removed; deletion policy applied")
            }
            Err(e) => tracing::warn!(pool = %gone, error = %e, "cleanup failed"),
        }
    }
    *known = seen;
    Ok(())
}

/// Reconciles the manifests until `shutdown` resolves: at once, on every change, and every
/// `resync` regardless.
pub async fn watch_manifests(
    store: Store,
    dir: PathBuf,
    resync: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut known = BTreeMap::new();
    let mut last = Vec::new();
    let mut last_pass = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        let print = fingerprint(&dir);
        if print != last || last_pass.elapsed() >= resync {
            reconcile_manifests(&store, &dir, &mut known).await?;
            last = print;
            last_pass = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

pub async fn operator(args: OperatorArgs) -> Result<(), String> {
    statuslist_worker::config::init_tracing(statuslist_worker::config::LogFormat::Json);
    let store = Store::connect(&StoreConfig::new(&args.database_url))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(dir) = args.manifests {
        tracing::info!(dir = %dir.display(), "operator on manifest files");
        return watch_manifests(
            store,
            dir,
            Duration::from_secs(30),
            statuslist_worker::config::shutdown_signal(),
        )
        .await;
    }
    let stop = Stop::new(statuslist_worker::config::shutdown_signal());
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let identity = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("statuslist-operator-{}", uuid::Uuid::new_v4().simple()));
    let mut ctx = Context::new(client, store, Metrics::default(), Some(identity.clone()));
    ctx.namespace = args.watch_namespace.clone().filter(|n| !n.is_empty());
    let ctx = Arc::new(ctx);
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| format!("{}: {e}", args.listen_addr))?;
    let app = statuslist_operator::router(ctx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(addr = %args.listen_addr, "operator running");
    let election = args.leader_election.then(|| {
        let mut e = Election::new(args.lease_namespace.clone(), identity);
        e.duration = Duration::from_secs(args.lease_duration_seconds.max(2));
        e.grace = (e.duration / 3).max(Duration::from_secs(1));
        e
    });
    serve(ctx, election, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use statuslist_store::testing::TestDb;

    const TOKEN: &str = "apiVersion: statuslist.dev/v1alpha1
kind: StatusList
metadata: {name: tok, namespace: ns}
spec:
  format: Token
  baseUri: https://status.example.test
  entriesPerList: 1000
  leaseSize: 100
  deletionPolicy: Delete
  issuers: [{clientId: a, jwksUri: https://a.example/jwks}]
";

    #[tokio::test]
    async fn manifests_are_reconciled_re_read_and_removed() {
        let db = TestDb::new().await;
        let dir =
            std::env::temp_dir().join(format!("statuslist-manifests-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        // One valid StatusList, one invalid (skipped), one other kind, one non-YAML file.
        std::fs::write(
            dir.join("a.yaml"),
            format!("{TOKEN}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"),
        )
        .expect("write");
        std::fs::write(
            dir.join("b.yaml"),
            TOKEN
                .replace("name: tok", "name: bad")
                .replace("format: Token", "format: Nope"),
        )
        .expect("write");
        std::fs::write(dir.join("notes.txt"), "not a manifest").expect("write");
        let mut known = BTreeMap::new();
        reconcile_manifests(&db.store, &dir, &mut known)
            .await
            .expect("pass");
        assert_eq!(known.keys().collect::<Vec<_>>(), vec!["ns/tok"]);
        let cap = db.store.capacity("ns/tok").await.expect("capacity");
        assert_eq!((cap.lists.len(), cap.free), (1, 1000));
        assert!(db.store.pool("ns/bad").await.expect("read").is_none());

        // Changed: the new settings are written.
        std::fs::write(
            dir.join("a.yaml"),
            TOKEN.replace("https://a.example/jwks", "https://a.example/jwks2"),
        )
        .expect("write");
        reconcile_manifests(&db.store, &dir, &mut known)
            .await
            .expect("pass");
        assert_eq!(
            db.store
                .issuer("a")
                .await
                .expect("read")
                .expect("issuer")
                .jwks_uri,
            "https://a.example/jwks2"
        );

        // Removed: its deletion policy (Delete) is carried out.
        std::fs::remove_file(dir.join("a.yaml")).expect("remove");
        reconcile_manifests(&db.store, &dir, &mut known)
            .await
            .expect("pass");
        assert!(known.is_empty());
        assert!(db.store.pool("ns/tok").await.expect("read").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
