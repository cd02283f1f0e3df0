//! Operator metrics: reconciles, failures by reason, provisioning latency.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusListLabel {
    /// `namespace/name`.
    pub statuslist: String,
}

#[derive(Clone)]
pub struct Metrics {
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
        let reconciles = Counter::default();
        let failures = Family::<Reason, Counter>::default();
        let provisioning = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let failover_unrestored_lists = Family::<StatusListLabel, Gauge>::default();
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
        registry.register(
            "provisioning_seconds",
            "Time to provision a list",
            provisioning.clone(),
        );
        Self {
            failover_unrestored_lists,
            reconciles,
            failures,
            provisioning,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
