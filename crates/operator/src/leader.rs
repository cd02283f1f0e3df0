//! Running the controller in a cluster: wait for the StatusList CRD, hold a Kubernetes
//! `Lease` (leader election, kube-lease-manager) so that one replica reconciles at a time,
//! and stop promptly on shutdown in every state.
//!
//! Leader election is the first line; the database is the second: a replica that still
//! acts on a stale view (its lease lost but not yet noticed, or an old pod in a rolling
//! update) is refused by the pool's UID/generation fence (`Store::apply_pool`), so it can
//! neither resurrect a deleted pool nor roll one back. Both are tested against a real API
//! server in `tests/tests/operator.rs`.

use std::sync::Arc;
use std::time::Duration;

use kube::api::ListParams;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::controller::{Context, run};

/// The Lease replicas compete for.
#[derive(Debug, Clone)]
pub struct Election {
    /// Namespace of the Lease (the operator's own: `POD_NAMESPACE`).
    pub namespace: String,
    pub lease_name: String,
    /// This replica (`POD_NAME`); unique among replicas.
    pub identity: String,
    /// Seconds a leader's claim lasts without renewal: how long a crashed leader blocks
    /// the others.
    pub duration: Duration,
    /// Seconds before expiry at which the leader renews.
    pub grace: Duration,
}

impl Election {
    pub fn new(namespace: String, identity: String) -> Self {
        Self {
            namespace,
            lease_name: "statuslist-operator".into(),
            identity,
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        }
    }
}

/// How long shutdown may wait for in-flight reconciles before giving up on them (every
/// database step is a transaction, so abandoning one loses nothing).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A shutdown signal that many places can wait on.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves `shutdown` in a task of its own and lets every clone observe it.
    pub fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone, which only happens after it sent.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Waits until the StatusList CRD is served, saying so in the log while it is not.
/// Returns false when stopped first.
pub async fn wait_for_crd(ctx: &Context, stop: &Stop) -> bool {
    let api = ctx.watched();
    let mut delay = Duration::from_millis(500);
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(e)) if e.code == 404 => tracing::warn!(
                crd = "statuslists.statuslist.dev",
                retry_in_seconds = delay.as_secs_f64(),
                "the StatusList CRD is not installed: install it with `kubectl apply --server-side -f crds/`; retrying"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_seconds = delay.as_secs_f64(),
                "cannot list StatusLists; retrying"
            ),
        }
        tokio::select! {
            _ = stop.wait() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Runs the controller until `stop`: once the CRD is served and, with an election, only
/// while this replica holds the Lease (stopping the controller when the Lease is lost and
/// competing again).
pub async fn serve(
    ctx: Arc<Context>,
    election: Option<Election>,
    stop: Stop,
) -> Result<(), String> {
    if !wait_for_crd(&ctx, &stop).await {
        return Ok(());
    }
    let Some(election) = election else {
        run_until(ctx, stop.clone(), stop.clone()).await;
        return Ok(());
    };
    let (mut leader, manager) = loop {
        let manager = LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration.as_secs())
            .with_grace(election.grace.as_secs())
            .build()
            .await;
        match manager {
            Ok(manager) => break manager.watch().await,
            Err(e) => {
                tracing::warn!(error = %e, lease = %election.lease_name, "cannot set up leader election; retrying")
            }
        }
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    let outcome = loop {
        tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting to lead");
        tokio::select! {
            _ = stop.wait() => break Ok(()),
            changed = leader.wait_for(|l| *l) => if changed.is_err() {
                break Err("leader election stopped".to_owned());
            },
        }
        tracing::info!(lease = %election.lease_name, identity = %election.identity, "leading: reconciling StatusLists");
        // The controller runs until shutdown or until the Lease is lost.
        let (lost_tx, lost_rx) = watch::channel(false);
        let mut lost_leader = leader.clone();
        let watch_lost = tokio::spawn(async move {
            let _ = lost_leader.wait_for(|l| !*l).await;
            let _ = lost_tx.send(true);
        });
        let lost = Stop(lost_rx);
        run_until(ctx.clone(), stop.clone(), lost.clone()).await;
        watch_lost.abort();
        if stop.is_stopped() {
            break Ok(());
        }
        tracing::warn!(lease = %election.lease_name, identity = %election.identity, "lost the Lease: stopped reconciling");
    };
    // Dropping the receiver makes the manager release the Lease, so a successor need not
    // wait for it to expire.
    drop(leader);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, manager).await;
    outcome
}

/// Runs the controller until either signal, then gives in-flight reconciles a moment.
async fn run_until(ctx: Arc<Context>, stop: Stop, also: Stop) {
    let metrics = ctx.metrics.clone();
    metrics.leading(true);
    run_controller(ctx, stop, also).await;
    metrics.leading(false);
}

async fn run_controller(ctx: Arc<Context>, stop: Stop, also: Stop) {
    let (graceful, end) = (stop.clone(), also.clone());
    let mut controller = tokio::spawn(run(ctx, async move {
        tokio::select! {
            _ = graceful.wait() => {},
            _ = end.wait() => {},
        }
    }));
    tokio::select! {
        _ = &mut controller => return,
        _ = stop.wait() => {},
        _ = also.wait() => {},
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut controller)
        .await
        .is_err()
    {
        tracing::warn!("reconciles still running at shutdown: abandoned");
        controller.abort();
    }
}
