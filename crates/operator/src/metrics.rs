//! Operator metrics: reconciles, failures by reason, provisioning latency, each
//! StatusList's capacity and lists, leadership. Names and labels are what the chart's
//! alerts and dashboard query (`charts/statuslist/files/`), checked against a real
//! Prometheus by `tests/tests/monitoring.rs`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every `reason` of `reconcile_failures` (`controller::Error::reason`).
pub const FAILURE_REASONS: [&str; 4] = [
    "database_unavailable",
    "database",
    "kubernetes",
    "finalizer",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusListLabel {
    /// `namespace/name`.
    pub statuslist: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListStateLabels {
    /// `namespace/name`.
    pub statuslist: String,
    /// `Active` or `Full` (the lists served).
    pub state: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    /// Per StatusList: positions not yet handed out, the bound below which a list is
    /// provisioned, and its lists by state (set by each reconcile, removed with it).
    pub free_entries: Family<StatusListLabel, Gauge>,
    pub min_free_entries: Family<StatusListLabel, Gauge>,
    pub lists: Family<ListStateLabels, Gauge>,
    /// Per StatusList: unix time of its last successful reconcile.
    pub reconciled: Family<StatusListLabel, Gauge>,
    /// 1 while this replica runs the controller (holds the Lease), else 0.
    pub leader: Gauge,
    /// Per StatusList, the lists of its latest failover whose acknowledgements may be
    /// missing (a worker that held leases did not write back, or some could not be).
    pub failover_unrestored_lists: Family<StatusListLabel, Gauge>,
    pub reconciles: Counter,
    pub failures: Family<Reason, Counter>,
    /// Seconds from the start of a reconcile to a new list stored.
    pub provisioning: Histogram,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("statuslist_operator");
        statuslist_process::telemetry::register_metrics(&mut registry);
        let reconciles = Counter::default();
        let failures = Family::<Reason, Counter>::default();
        let provisioning = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let failover_unrestored_lists = Family::<StatusListLabel, Gauge>::default();
        let free_entries = Family::<StatusListLabel, Gauge>::default();
        let min_free_entries = Family::<StatusListLabel, Gauge>::default();
        let lists = Family::<ListStateLabels, Gauge>::default();
        let reconciled = Family::<StatusListLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "pool_free_entries",
            "Positions of a StatusList's Active lists not yet handed out (its free capacity)",
            free_entries.clone(),
        );
        registry.register(
            "pool_min_free_entries",
            "A StatusList's minFreeEntries: below it a list is provisioned",
            min_free_entries.clone(),
        );
        registry.register(
            "pool_lists",
            "A StatusList's served lists by state (Active, Full)",
            lists.clone(),
        );
        registry.register(
            "pool_reconciled_timestamp_seconds",
            "Unix time of a StatusList's last successful reconcile",
            reconciled.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controller (holds the leader Lease), else 0",
            leader.clone(),
        );
        registry.register(
            "failover_unrestored_lists",
            "Lists of a StatusList's latest failover whose acknowledged issuances or revocations may be missing (docs/failover.md)",
            failover_unrestored_lists.clone(),
        );
        registry.register("reconciles", "StatusList reconciles", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by reason",
            failures.clone(),
        );
        // Every reason exported from the start (at 0), so that a rate over it exists
        // before the first failure.
        for reason in FAILURE_REASONS {
            let _ = failures.get_or_create(&Reason {
                reason: reason.to_owned(),
            });
        }
        registry.register(
            "provisioning_seconds",
            "Time to provision a list",
            provisioning.clone(),
        );
        Self {
            free_entries,
            min_free_entries,
            lists,
            reconciled,
            leader,
            failover_unrestored_lists,
            reconciles,
            failures,
            provisioning,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Sets a StatusList's capacity gauges from a reconcile's report.
    pub fn pool(&self, statuslist: &str, report: &crate::core::PoolReport, now: i64) {
        let label = StatusListLabel {
            statuslist: statuslist.to_owned(),
        };
        self.free_entries
            .get_or_create(&label)
            .set(i64::try_from(report.capacity.free).unwrap_or(i64::MAX));
        self.min_free_entries
            .get_or_create(&label)
            .set(i64::try_from(report.min_free_entries).unwrap_or(i64::MAX));
        for state in [
            statuslist_store::ListState::Active,
            statuslist_store::ListState::Full,
        ] {
            let n = report
                .capacity
                .lists
                .iter()
                .filter(|l| l.state == state)
                .count();
            self.lists
                .get_or_create(&ListStateLabels {
                    statuslist: statuslist.to_owned(),
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        self.reconciled.get_or_create(&label).set(now);
    }

    /// Whether this replica runs the controller; one that stops drops its StatusLists'
    /// series, which the new leader reports.
    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        if !leading {
            self.free_entries.clear();
            self.min_free_entries.clear();
            self.lists.clear();
            self.reconciled.clear();
            self.failover_unrestored_lists.clear();
        }
    }

    /// Drops a deleted StatusList's series.
    pub fn forget(&self, statuslist: &str) {
        let label = StatusListLabel {
            statuslist: statuslist.to_owned(),
        };
        self.free_entries.remove(&label);
        self.min_free_entries.remove(&label);
        self.reconciled.remove(&label);
        self.failover_unrestored_lists.remove(&label);
        for state in ["Active", "Full"] {
            self.lists.remove(&ListStateLabels {
                statuslist: statuslist.to_owned(),
                state,
            });
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
