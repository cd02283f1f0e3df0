//! `statuslist operator`: the controller against the Kubernetes API, or the same reconcile
//! core on StatusList manifests read from files (`--manifests DIR`), re-read when they
//! change, so workers can run against one database without a cluster.

use statuslist_format::unix_now;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use crate::controller::Context;
use crate::core;
use crate::leader::{Election, Stop, serve};
use crate::manifests::{FileScan, scan_dir, scan_text};
use crate::metrics::Metrics;
use statuslist_crd::DeletionPolicy;
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
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: statuslist_process::LogFormat,
    /// Reported in Events as the instance and used as the leader-election identity;
    /// defaults to POD_NAME (a random name when neither is set).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Reconcile only while holding the Lease `statuslist-operator` (Kubernetes mode), so
    /// that of several replicas one works and the others stand by.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Seconds a leader's Lease lasts without renewal (a crashed leader's successor
    /// takes over after at most this).
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// With `--manifests`: seconds a pool's document must stay gone before its deletion
    /// policy applies (a file caught mid-rewrite reads as empty).
    #[arg(long, env = "MANIFEST_REMOVAL_WAIT_SECONDS", default_value_t = 2)]
    pub manifest_removal_wait_seconds: u64,
}

/// The example StatusLists, built in: what `statuslist dev` loads without `--manifests`.
pub const EXAMPLES: [(&str, &str); 2] = [
    (
        "examples/token.yaml",
        include_str!("../../../examples/token.yaml"),
    ),
    (
        "examples/bitstring.yaml",
        include_str!("../../../examples/bitstring.yaml"),
    ),
];

/// The valid StatusLists of `dir` (or of the built-in examples when `None`), each
/// problem logged; for `statuslist dev`.
pub fn read_manifests(dir: Option<&Path>) -> Result<Vec<(PoolSpec, DeletionPolicy)>, String> {
    let scans = match dir {
        Some(dir) => scan_dir(dir)?,
        None => EXAMPLES
            .iter()
            .map(|(file, text)| scan_text(file, text))
            .collect(),
    };
    let mut pools = Vec::new();
    for scan in scans {
        for problem in &scan.problems {
            tracing::error!(%problem, "StatusList manifest skipped");
        }
        pools.extend(scan.pools);
    }
    Ok(pools)
}

/// What the manifest loop remembers between passes.
#[derive(Debug)]
pub struct Known {
    /// Each pool's last valid spec and deletion policy: reconciled as it was while its
    /// document is invalid or its file does not parse.
    pub pools: BTreeMap<String, (PoolSpec, DeletionPolicy)>,
    /// The problems reported last, so that each is logged once, not once per pass.
    problems: Vec<String>,
    /// Pools whose document a complete scan found gone, and since when: their deletion
    /// policy applies once they have been gone for `removal_wait`.
    gone_since: BTreeMap<String, std::time::Instant>,
    /// How long a pool's document must stay gone before its deletion policy applies. A
    /// file read while it is being rewritten in place (truncated, then written: what
    /// `std::fs::write`, many editors and configuration tools do) parses as a file
    /// without documents; read as the pools' removal, that deleted their lists and the
    /// entries of every credential issued from them (the 60-second soak: a Bitstring list
    /// of 33,263 issued entries dropped by a manifest rewrite). A pass runs every second
    /// while a removal waits.
    removal_wait: Duration,
}

impl Known {
    pub fn new(removal_wait: Duration) -> Self {
        Self {
            pools: BTreeMap::new(),
            problems: Vec::new(),
            gone_since: BTreeMap::new(),
            removal_wait,
        }
    }
}

/// One pass over the manifests: reconciles each valid pool; keeps every pool whose
/// document is invalid or whose file does not parse as it was (reconciled with its last
/// valid spec); carries out the deletion policy of pools whose document is gone, only
/// when every file of the directory parsed and the document has stayed gone for
/// `known.removal_wait`. Returns whether a pool is still short of capacity or a removal
/// waits (the caller comes back soon).
pub async fn reconcile_manifests(store: &Store, dir: &Path, known: &mut Known) -> bool {
    let mut short = false;
    let (scans, readable) = match scan_dir(dir) {
        Ok(scans) => (scans, true),
        Err(problem) => (
            vec![FileScan {
                problems: vec![problem],
                ..FileScan::default()
            }],
            false,
        ),
    };
    let complete = readable && scans.iter().all(|s| s.complete);
    let problems: Vec<String> = scans.iter().flat_map(|s| s.problems.clone()).collect();
    if problems != known.problems {
        for problem in problems.iter().filter(|p| !known.problems.contains(p)) {
            tracing::error!(%problem, "StatusList manifest not applied; its pools are kept as they were");
        }
        if problems.is_empty() {
            tracing::info!("every StatusList manifest is valid again");
        }
        known.problems = problems;
    }
    let mut next = BTreeMap::new();
    for scan in &scans {
        for (pool, policy) in &scan.pools {
            next.insert(pool.name.clone(), (pool.clone(), *policy));
        }
    }
    let invalid: Vec<&String> = scans.iter().flat_map(|s| &s.invalid).collect();
    // A removal that waited and whose document is back (or valid again) is forgotten.
    known.gone_since.retain(|name, _| {
        let back = next.contains_key(name) || invalid.contains(&name);
        if back {
            tracing::info!(
                pool = %name,
                "manifest back before its removal was confirmed; nothing deleted"
            );
        }
        !back
    });
    let mut gone = Vec::new();
    let mut waiting = false;
    for (name, previous) in &known.pools {
        if next.contains_key(name) {
            continue;
        }
        let removable = complete && !invalid.contains(&name);
        let confirmed = removable && {
            let since = known.gone_since.entry(name.clone()).or_insert_with(|| {
                tracing::info!(
                    pool = %name,
                    wait = ?known.removal_wait,
                    "manifest gone: its deletion policy applies if it stays gone"
                );
                std::time::Instant::now()
            });
            since.elapsed() >= known.removal_wait
        };
        if confirmed {
            gone.push((name.clone(), previous.1));
        } else {
            waiting |= removable;
            next.insert(name.clone(), previous.clone());
        }
    }
    for (pool, _) in next.values() {
        let span = tracing::info_span!("reconcile", pool = %pool.name);
        match core::reconcile_pool(store, pool, unix_now())
            .instrument(span)
            .await
        {
            Ok(report) => {
                short |= report.capacity_low() && report.conflicts.is_empty();
                for list in &report.provisioned {
                    tracing::info!(pool = %pool.name, list = %list.id, uri = %list.uri, "list provisioned");
                }
                for c in &report.conflicts {
                    tracing::warn!(pool = %pool.name, client_id = %c.client_id, held_by = %c.held_by, "clientId held by another pool");
                }
            }
            Err(e) => tracing::warn!(pool = %pool.name, error = %e, "reconcile failed"),
        }
    }
    for (name, policy) in gone {
        match core::cleanup(store, &name, None, policy).await {
            Ok(()) => {
                known.gone_since.remove(&name);
                tracing::info!(pool = %name, ?policy, "manifest removed; deletion policy applied")
            }
            Err(e) => {
                tracing::warn!(pool = %name, error = %e, "cleanup failed; retried next pass");
                if let Some(previous) = known.pools.get(&name) {
                    next.insert(name, previous.clone());
                }
            }
        }
    }
    known.pools = next;
    match core::sweep_retained(store, unix_now()).await {
        Ok(drained) => core::log_drained(&drained),
        Err(e) => tracing::warn!(error = %e, "sweep of retained pools failed"),
    }
    short || waiting
}

/// Reconciles the manifests until `shutdown` resolves: at once, on every change, when a
/// worker asks for capacity (`statuslist_capacity`) for a pool that needs a list (or the
/// request cannot be checked), every second while a pool is short,
/// and every `resync` regardless. `shutdown` interrupts a pass (a database that does not
/// answer must not delay the exit).
pub async fn watch_manifests(
    store: Store,
    dir: PathBuf,
    resync: Duration,
    removal_wait: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut known = Known::new(removal_wait);
    let mut last = Vec::new();
    let mut last_pass = tokio::time::Instant::now();
    let mut short = false;
    let mut asked = false;
    let mut closed = false;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return,
        _ = store.wait_migrated() => {}
    }
    let (mut capacity, _listener) = store.listen(&[statuslist_store::notify::CHANNEL_CAPACITY]);
    loop {
        let print = statuslist_process::fingerprint(&dir);
        let due = if short {
            Duration::from_secs(1)
        } else {
            resync
        };
        if print != last || asked || last_pass.elapsed() >= due {
            tokio::select! {
                _ = &mut shutdown => return,
                s = reconcile_manifests(&store, &dir, &mut known) => short = s,
            }
            last = print;
            last_pass = tokio::time::Instant::now();
            asked = false;
        }
        tokio::select! {
            _ = &mut shutdown => return,
            event = capacity.recv(), if !closed => {
                // A worker runs short (or the listener reconnected): a pass now, when one
                // of the pools asked for needs a list. A lagging receiver only means
                // several asked (a pass, unchecked). Every ask queued by now is answered
                // by that one pass: a burst of asks (one per lease at three quarters
                // spent, from every worker) made one pass each, back to back, long after
                // the burst (measured: ~5 passes a second through a 5 s revocation run
                // that followed 40,000 issuances).
                let asks = core::Asks::gather(event, &mut capacity);
                closed = asks.closed;
                asked = !closed
                    && (asks.reconnected
                        || asks.lagged
                        || tokio::select! {
                            _ = &mut shutdown => return,
                            need = core::asks_need_a_pass(&store, asks.pools.iter().map(String::as_str)) => need,
                        });
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

pub async fn operator(args: OperatorArgs) -> Result<(), String> {
    let telemetry = statuslist_process::init_tracing(args.log_format, "statuslist-operator")?;
    let result = run(args).await;
    telemetry.shutdown(Duration::from_secs(5)).await;
    result
}

async fn run(args: OperatorArgs) -> Result<(), String> {
    // Started before the database answers: migrations are retried in the background.
    let store = Store::start(&StoreConfig::new(&args.database_url)).map_err(|e| e.to_string())?;
    if let Some(dir) = args.manifests {
        tracing::info!(dir = %dir.display(), "operator on manifest files");
        watch_manifests(
            store,
            dir,
            Duration::from_secs(30),
            Duration::from_secs(args.manifest_removal_wait_seconds),
            statuslist_process::shutdown_signal(),
        )
        .await;
        return Ok(());
    }
    let stop = Stop::new(statuslist_process::shutdown_signal());
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let identity = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("statuslist-operator-{}", uuid::Uuid::new_v4().simple()));
    let mut ctx = Context::new(client, store, Metrics::default(), Some(identity.clone()));
    let scope = args.scope.scope();
    (ctx.namespace, ctx.owner) = (scope.namespace, scope.owner);
    tracing::info!(
        instance = %ctx.owner,
        watch = ctx.namespace.as_deref().unwrap_or("all namespaces"),
        "operator scope"
    );
    let ctx = Arc::new(ctx);
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| format!("{}: {e}", args.listen_addr))?;
    let app = crate::router(ctx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(addr = %args.listen_addr, "operator running");
    tokio::select! {
        _ = ctx.store.wait_migrated() => {}
        _ = stop.wait() => return Ok(()),
    }
    let election = args.leader_election.then(|| {
        let mut e = Election::new(args.scope.lease_namespace.clone(), identity);
        e.lease_name = args.scope.lease_name.clone();
        e.duration = Duration::from_secs(args.lease_duration_seconds.max(2));
        e.grace = (e.duration / 3).max(Duration::from_secs(1));
        e
    });
    serve(ctx, election, stop).await
}

/// What an operator instance answers for; the operator and its release's uninstall guard
/// read the same settings.
#[derive(Debug, clap::Args)]
pub struct ScopeArgs {
    /// Watch StatusLists in this namespace only (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease: the operator's own (its release's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease (the chart: `<release>-operator`). Together with
    /// its namespace it names this operator instance: the `statuslist.dev/operator`
    /// annotation of the StatusLists it reconciles, which other instances leave alone.
    #[arg(long, env = "LEASE_NAME", default_value = "statuslist-operator")]
    pub lease_name: String,
}

impl ScopeArgs {
    /// The watched namespace (`None`: all) and this operator instance
    /// (`namespace/lease name`).
    pub fn scope(&self) -> crate::uninstall::Scope {
        crate::uninstall::Scope {
            namespace: self.watch_namespace.clone().filter(|n| !n.is_empty()),
            owner: format!("{}/{}", self.lease_namespace, self.lease_name),
        }
    }
}

/// Where the uninstall guard looks: the release's operator instance and its scope.
#[derive(Debug, clap::Args)]
pub struct UninstallCheckArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// The Helm release record this uninstall marked `uninstalling`
    /// (`sh.helm.release.v1.<release>.v<revision>`): on refusal it is set back to
    /// `deployed`, so that the release stays upgradable (see README, "Uninstall").
    #[arg(long, env = "HELM_RELEASE_SECRET")]
    pub helm_release_secret: Option<String>,
}

/// `statuslist uninstall-check`: the chart's `pre-delete` hook (see README, "Uninstall").
pub async fn uninstall_check(args: UninstallCheckArgs) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let scope = args.scope.scope();
    let remaining = crate::uninstall::remaining(client.clone(), &scope)
        .await
        .map_err(|e| format!("listing StatusLists: {e}"))?;
    if let Err(refusal) = crate::uninstall::verdict(&remaining) {
        if let Some(secret) = &args.helm_release_secret {
            match crate::uninstall::keep_deployed(client, &args.scope.lease_namespace, secret).await
            {
                Ok(()) => eprintln!(
                    "the release stays deployed: it can be upgraded, and uninstalled once the StatusLists are gone"
                ),
                Err(e) => eprintln!(
                    "could not mark the release deployed again ({e}): recover it with `helm rollback` before an upgrade"
                ),
            }
        }
        return Err(refusal);
    }
    println!("no StatusList of this release exists: the release may be removed");
    Ok(())
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

    /// A directory of its own for a test's manifests.
    fn manifests_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("statuslist-manifests-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[tokio::test]
    async fn manifests_are_reconciled_re_read_and_removed() {
        let (db, dir) = (TestDb::new().await, manifests_dir());
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
        let mut known = Known::new(Duration::ZERO);
        reconcile_manifests(&db.store, &dir, &mut known).await;
        assert_eq!(known.pools.keys().collect::<Vec<_>>(), vec!["ns/tok"]);
        let cap = db.store.capacity("ns/tok").await.expect("capacity");
        assert_eq!((cap.lists.len(), cap.free), (1, 1000));
        assert!(db.store.pool("ns/bad").await.expect("read").is_none());

        // Changed: the new settings are written.
        std::fs::write(
            dir.join("a.yaml"),
            TOKEN.replace("https://a.example/jwks", "https://a.example/jwks2"),
        )
        .expect("write");
        reconcile_manifests(&db.store, &dir, &mut known).await;
        assert_eq!(
            db.store
                .issuer("a")
                .await
                .expect("read")
                .expect("issuer")
                .jwks_uri,
            "https://a.example/jwks2"
        );

        // Emptied (a rewrite in place, read between its truncation and its write): with
        // a removal wait, the pool is kept and nothing is deleted; written again, the
        // removal is forgotten.
        let content = std::fs::read_to_string(dir.join("a.yaml")).expect("read");
        let wait = std::mem::replace(&mut known.removal_wait, Duration::from_secs(3600));
        std::fs::write(dir.join("a.yaml"), "").expect("empty");
        let soon = reconcile_manifests(&db.store, &dir, &mut known).await;
        assert_eq!(known.pools.keys().collect::<Vec<_>>(), vec!["ns/tok"]);
        assert!(db.store.pool("ns/tok").await.expect("read").is_some());
        let lists = db.store.capacity("ns/tok").await.expect("capacity").lists;
        assert_eq!(lists.len(), 1, "the pool's list is kept");
        assert!(soon, "a pass comes back soon while a removal waits");
        std::fs::write(dir.join("a.yaml"), content).expect("write");
        reconcile_manifests(&db.store, &dir, &mut known).await;
        assert!(known.gone_since.is_empty());
        known.removal_wait = wait;

        // Removed: its deletion policy (Delete) is carried out.
        std::fs::remove_file(dir.join("a.yaml")).expect("remove");
        reconcile_manifests(&db.store, &dir, &mut known).await;
        assert!(known.pools.is_empty());
        assert!(db.store.pool("ns/tok").await.expect("read").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With no resync due, a worker's capacity request (a real NOTIFY) brings a pass when
    /// its pool needs a list: the pool is short once two entries are issued
    /// (`minFreeEntries` is its whole list but one), and the pass that provisions the
    /// second list must be the request's.
    #[tokio::test]
    async fn a_capacity_request_brings_a_pass_when_its_pool_needs_a_list() {
        let (db, dir) = (TestDb::new().await, manifests_dir());
        std::fs::write(
            dir.join("a.yaml"),
            TOKEN.replace("leaseSize: 100", "leaseSize: 100\n  minFreeEntries: 999"),
        )
        .expect("write");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(watch_manifests(
            db.store.clone(),
            dir.clone(),
            Duration::from_secs(3600),
            Duration::ZERO,
            async move {
                let _ = stopped.await;
            },
        ));
        let lists = || async {
            db.store
                .capacity("ns/tok")
                .await
                .map(|c| c.lists.len())
                .ok()
        };
        statuslist_testkit::eventually(Duration::from_secs(30), "the first list", || async {
            (lists().await? == 1).then_some(())
        })
        .await;

        let lease = db
            .store
            .claim_lease("ns/tok", "w", Duration::from_secs(30))
            .await
            .expect("claim")
            .expect("lease");
        for n in 0..2 {
            assert!(!core::asks_need_a_pass(&db.store, ["ns/tok"]).await, "{n}");
            let req = statuslist_store::IssueRequest {
                client_id: "a".into(),
                jti: uuid::Uuid::new_v4(),
                status_expiry: unix_now() + 3600,
            };
            db.store.issue(&lease, &req).await.expect("issued");
        }
        assert!(core::asks_need_a_pass(&db.store, ["ns/tok"]).await);
        // Asked again until heard (a request sent before the operator listens is lost,
        // as a worker's would be; the worker asks again with its next lease).
        statuslist_testkit::eventually(Duration::from_secs(30), "a second list", || async {
            db.store
                .notify(statuslist_store::notify::CHANNEL_CAPACITY, "ns/tok")
                .await
                .ok()?;
            (lists().await? == 2).then_some(())
        })
        .await;
        assert!(!core::asks_need_a_pass(&db.store, ["ns/tok"]).await);
        // Active lists of an earlier incarnation of the database (after a failover) are
        // for a pass to seal, however much room they have.
        db.client()
            .await
            .execute(
                "UPDATE lists SET incarnation = '0/1' WHERE pool = 'ns/tok'",
                &[],
            )
            .await
            .expect("an earlier incarnation");
        assert!(core::asks_need_a_pass(&db.store, ["ns/tok"]).await);
        let _ = stop.send(());
        watcher.await.expect("the watcher stops");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
