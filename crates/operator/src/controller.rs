//! The kube-rs controller: StatusList resources in, pools in PostgreSQL and status out.
//!
//! It watches StatusLists as dynamic objects and parses each one itself, so a malformed
//! object becomes an `InvalidSpec` condition instead of breaking the watch for every other
//! object. Reconcile is `finalizer(apply | cleanup)`; apply runs the reconcile core and
//! writes status with server-side apply; Events mark transitions only.

use statuslist_format::unix_now;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use statuslist_crd::conditions::{CAPACITY_LOW, DATABASE_READY, FAILOVER_RESTORED, INVALID_SPEC};
use statuslist_crd::{
    DeletionPolicy, FINALIZER, MANAGER, OWNER_ANNOTATION, StatusList, StatusListStatus,
};
use statuslist_store::Store;
use tokio::sync::mpsc;

use crate::core;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Store(#[from] statuslist_store::StoreError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Metric label of the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Store(e) if e.is_unavailable() => "database_unavailable",
            Error::Store(_) => "database",
            Error::Kube(_) => "kubernetes",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// What reconciles share.
pub struct Context {
    pub client: Client,
    pub store: Store,
    pub recorder: Recorder,
    pub reporter: Reporter,
    pub metrics: Metrics,
    pub resource: ApiResource,
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// How often every pool is reconciled even when nothing changed: it bounds how stale
    /// the allocated and free counts of its status may be.
    pub resync: Duration,
    /// This operator instance (`namespace/lease name`), written in the
    /// [`OWNER_ANNOTATION`] of the StatusLists it reconciles.
    pub owner: String,
    /// StatusLists owned by another instance that an Event was published for already.
    foreign: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, store: Store, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            resource: ApiResource::erase::<StatusList>(&()),
            client,
            store,
            metrics,
            namespace: None,
            resync: Duration::from_secs(5),
            owner: format!("default/{MANAGER}"),
            foreign: Default::default(),
        }
    }
}

impl Context {
    /// The StatusLists this controller watches.
    pub fn watched(&self) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            None => Api::all_with(self.client.clone(), &self.resource),
        }
    }
}

/// The typed resource, or why it is not one.
fn parse(obj: &DynamicObject) -> Result<StatusList, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_json::from_value(value)
        .map_err(|e| format!("the resource does not match the StatusList schema: {e}"))
}

/// The deletion policy of a possibly malformed object (Retain unless it clearly says Delete).
fn deletion_policy(obj: &DynamicObject) -> DeletionPolicy {
    match obj.data["spec"]["deletionPolicy"].as_str() {
        Some("Delete") => DeletionPolicy::Delete,
        _ => DeletionPolicy::Retain,
    }
}

fn old_status(obj: &DynamicObject) -> Option<StatusListStatus> {
    serde_json::from_value(obj.data.get("status")?.clone()).ok()
}

async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: &StatusListStatus,
) -> Result<(), Error> {
    let patch =
        json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList", "status": status});
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// An Event about one thing (a list) that must not be folded into an earlier Event of the
/// same reason: the shared recorder counts repeats of a reason as one series and keeps the
/// first note, so these go through a recorder of their own.
async fn distinct_event(ctx: &Context, obj: &DynamicObject, reason: &str, note: String) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish(&recorder, ctx, obj, EventType::Normal, reason, note).await;
}

async fn event(ctx: &Context, obj: &DynamicObject, kind: EventType, reason: &str, note: String) {
    publish(&ctx.recorder, ctx, obj, kind, reason, note).await;
}

async fn publish(
    recorder: &Recorder,
    ctx: &Context,
    obj: &DynamicObject,
    kind: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&ctx.resource)).await {
        tracing::warn!(error = %e, reason, "publishing an event failed");
    }
}

/// Whether the old status had condition `type_` True.
fn was_true(old: Option<&StatusListStatus>, type_: &str) -> bool {
    old.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

fn was_reason(old: Option<&StatusListStatus>, type_: &str, reason: &str) -> bool {
    old.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason)
    })
}

async fn apply(obj: Arc<DynamicObject>, ctx: &Context) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.resource);
    let generation = obj.meta().generation;
    let old = old_status(&obj);
    let pool = core::pool_name(&namespace, &name);
    let spec = parse(&obj).and_then(|sl| {
        core::pool_spec(pool, generation.unwrap_or(0), &sl.spec).map_err(|p| p.join("; "))
    });
    let mut pool = match spec {
        Ok(pool) => pool,
        Err(problem) => {
            tracing::warn!(%namespace, %name, %problem, "invalid StatusList");
            // Not reconciled until it changes: no capacity series to go stale.
            ctx.metrics.forget(&core::pool_name(&namespace, &name));
            let status = core::invalid_status(&problem, generation, old.as_ref());
            if old.as_ref() != Some(&status) {
                patch_status(&api, &name, &status).await?;
            }
            if !was_true(old.as_ref(), INVALID_SPEC) {
                event(ctx, &obj, EventType::Warning, "InvalidSpec", problem).await;
            }
            // Nothing to do until the resource changes.
            return Ok(Action::await_change());
        }
    };
    pool.uid = obj.uid();
    let started = std::time::Instant::now();
    let mut report = match core::prepare(&ctx.store, &pool, unix_now()).await {
        Ok(report) => report,
        Err(statuslist_store::StoreError::Superseded(why)) => {
            // This object is an older view than what the database holds (a newer
            // generation was applied, or the resource was deleted): leave it to the watch.
            tracing::info!(%namespace, %name, %why, "stale view of the StatusList; not applied");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(database_failed(ctx, &api, &obj, generation, old.as_ref(), e).await),
    };
    let mut shown = old.clone();
    if report.capacity_low() && !report.capacity.lists.is_empty() {
        // Announce low capacity before provisioning, so that `kubectl get` and Events show
        // it even when provisioning succeeds a moment later. (A new pool's first list is
        // not a capacity problem.)
        let status = core::status(&report, generation, shown.as_ref());
        if !was_true(shown.as_ref(), CAPACITY_LOW) {
            let action = if report.needs_list() {
                "provisioning a list"
            } else {
                "not provisioning while a clientId is held by another StatusList"
            };
            event(
                ctx,
                &obj,
                EventType::Warning,
                "CapacityLow",
                format!(
                    "{} free entries, below minFreeEntries {}: {action}",
                    report.capacity.free, report.min_free_entries
                ),
            )
            .await;
        }
        if shown.as_ref() != Some(&status) {
            patch_status(&api, &name, &status).await?;
        }
        shown = Some(status);
    }
    if let Err(e) = core::provision(&ctx.store, &pool, &mut report).await {
        return Err(database_failed(ctx, &api, &obj, generation, shown.as_ref(), e).await);
    }
    let status = core::status(&report, generation, shown.as_ref());
    if old.as_ref() != Some(&status) {
        patch_status(&api, &name, &status).await?;
    }
    for list in &report.provisioned {
        ctx.metrics
            .provisioning
            .observe(started.elapsed().as_secs_f64());
        distinct_event(
            ctx,
            &obj,
            "ListProvisioned",
            format!("list {} at {}", list.id, list.uri),
        )
        .await;
    }
    if !report.sealed.is_empty() {
        event(
            ctx,
            &obj,
            EventType::Warning,
            "ListsSealed",
            format!(
                "list(s) {} sealed: they were issuing before a failover (or restore) of the database, which may lack positions they handed out; fresh lists replace them",
                report.sealed.join(", ")
            ),
        )
        .await;
    }
    let mut restoring = false;
    let label = crate::metrics::StatusListLabel {
        statuslist: format!("{namespace}/{name}"),
    };
    ctx.metrics.pool(&label.statuslist, &report, unix_now());
    let unrestored: Vec<&str> = report
        .failover
        .as_ref()
        .map(|f| core::unrestored_lists(f, unix_now()))
        .unwrap_or_default();
    ctx.metrics
        .failover_unrestored_lists
        .get_or_create(&label)
        .set(unrestored.len() as i64);
    // What the status just written says of the latest failover.
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == FAILOVER_RESTORED)
    {
        restoring = c.reason == "Restoring";
        if c.reason == "Unrestorable" && !was_reason(old.as_ref(), FAILOVER_RESTORED, &c.reason) {
            tracing::error!(%namespace, %name, lists = %unrestored.join(","), "{}", c.message);
            event(
                ctx,
                &obj,
                EventType::Warning,
                "AcknowledgementsUnrestorable",
                c.message.clone(),
            )
            .await;
        }
    }
    for id in &report.retired {
        distinct_event(
            ctx,
            &obj,
            "ListRetired",
            format!("list {id}: every entry expired"),
        )
        .await;
    }
    // Provision again soon while capacity is still low; otherwise the periodic resync,
    // which also keeps the allocated and free counts of `kubectl get sl` fresh.
    Ok(Action::requeue(if report.needs_list() {
        Duration::from_secs(1)
    } else if restoring {
        // Until the workers that held leases have written back, or their time is up.
        Duration::from_secs(10)
    } else {
        ctx.resync
    }))
}

/// A reconcile the database refused: says so in the status (`Ready` and `DatabaseReady`
/// False, with the cause) and, on the transition, in a Warning Event; returns the error
/// for the retry.
async fn database_failed(
    ctx: &Context,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    generation: Option<i64>,
    old: Option<&StatusListStatus>,
    error: statuslist_store::StoreError,
) -> Error {
    let reason = match &error {
        statuslist_store::StoreError::SchemaMissing(_) => "DatabaseSchemaMissing",
        e if e.is_unavailable() => "DatabaseUnavailable",
        _ => "DatabaseError",
    };
    let message = error.to_string();
    let status = core::database_status(reason, &message, generation, old);
    let was_failing = old.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == DATABASE_READY && c.status == "False" && c.reason == reason)
    });
    if old != Some(&status)
        && let Err(e) = patch_status(api, &obj.name_any(), &status).await
    {
        tracing::debug!(error = %e, "writing the database condition failed");
    }
    if !was_failing {
        event(ctx, obj, EventType::Warning, reason, message).await;
    }
    error.into()
}

/// Whether this instance may reconcile `obj`: it names this instance as its operator, or
/// none (then this instance claims it, guarded by the resourceVersion so that of two
/// instances claiming at once one wins). An object another instance owns gets one Warning
/// Event naming that instance, and nothing else from this one.
async fn owned(
    ctx: &Context,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
) -> Result<bool, Error> {
    let owner = obj.annotations().get(OWNER_ANNOTATION);
    match owner {
        Some(o) if *o == ctx.owner => Ok(true),
        Some(other) => {
            let key = obj.uid().unwrap_or_default();
            let first = ctx
                .foreign
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key);
            if first {
                tracing::warn!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), owner = %other, "StatusList reconciled by another operator instance; left alone");
                event(
                    ctx,
                    obj,
                    EventType::Warning,
                    "OwnedByAnotherOperator",
                    format!(
                        "reconciled by operator {other}; operator {} leaves it alone (annotation {OWNER_ANNOTATION})",
                        ctx.owner
                    ),
                )
                .await;
            }
            Ok(false)
        }
        // Deleted before any instance claimed it: an object still carrying the finalizer
        // (it predates the annotation) is cleaned up by whichever instance sees it.
        None if obj.meta().deletion_timestamp.is_some() => {
            Ok(obj.finalizers().iter().any(|f| f == FINALIZER))
        }
        None => {
            let patch = json!({"metadata": {
                "resourceVersion": obj.resource_version(),
                "annotations": {OWNER_ANNOTATION: ctx.owner},
            }});
            api.patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            // The patch's watch event brings the object back, annotated, to reconcile.
            Ok(false)
        }
    }
}

async fn cleanup(obj: Arc<DynamicObject>, ctx: &Context) -> Result<Action, Error> {
    let pool = core::pool_name(&obj.namespace().unwrap_or_default(), &obj.name_any());
    let policy = deletion_policy(&obj);
    core::cleanup(&ctx.store, &pool, obj.uid().as_deref(), policy).await?;
    ctx.metrics.forget(&pool);
    tracing::info!(%pool, ?policy, "StatusList deleted");
    Ok(Action::await_change())
}

#[tracing::instrument(name = "reconcile", skip_all, fields(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any()))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.resource);
    if !owned(&ctx, &api, &obj).await? {
        return Ok(Action::await_change());
    }
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

pub fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %obj.name_any(), %error, "reconcile failed");
    ctx.metrics
        .failures
        .get_or_create(&crate::metrics::Reason {
            reason: error.reason().into(),
        })
        .inc();
    // Soon: a database back from an outage (or re-created empty) gets its pools again
    // within a couple of seconds, not after a whole resync.
    Action::requeue(Duration::from_secs(2))
}

/// Runs the controller until `shutdown` resolves. A worker's capacity request
/// (`statuslist_capacity`) for a pool that needs a list (or that cannot be checked)
/// triggers an immediate pass over every pool.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api = ctx.watched();
    let (events, _listener) = ctx
        .store
        .listen(&[statuslist_store::notify::CHANNEL_CAPACITY]);
    let (tx, rx) = mpsc::channel::<()>(1);
    let store = ctx.store.clone();
    tokio::spawn(async move {
        let mut events = events;
        loop {
            // The asks queued by now, checked once each; a lagging receiver only means
            // several asked (a pass, unchecked). A reconnection alone brings none: the
            // controller requeues every pool within seconds anyway.
            let first = events.recv().await;
            let asks = core::Asks::gather(first, &mut events);
            if asks.closed {
                return;
            }
            if asks.lagged
                || (!asks.pools.is_empty()
                    && core::asks_need_a_pass(&store, asks.pools.iter().map(String::as_str)).await)
            {
                let _ = tx.try_send(());
            }
        }
    });
    let sweeper = tokio::spawn({
        let store = ctx.store.clone();
        async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                match core::sweep_retained(&store, unix_now()).await {
                    Ok(drained) => core::log_drained(&drained),
                    Err(e) => tracing::warn!(error = %e, "sweep of retained pools failed"),
                }
            }
        }
    });
    let trigger =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
        );
    Controller::new_with(api, watcher::Config::default(), ctx.resource.clone())
        .reconcile_all_on(trigger)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile result");
            }
        })
        .await;
    sweeper.abort();
}

/// How often pools deleted with `Retain` are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
