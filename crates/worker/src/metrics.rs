//! Prometheus metrics: requests by route and outcome, latency, leases held, publish lag.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    pub leases_held: Gauge,
    /// Seconds from a revocation's notification to the publish that covered it.
    pub publish_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub published: Counter,
    /// 1 while the database is usable (schema current, listener answering), else 0.
    pub database_up: Gauge,
    /// Issuer JWKS fetches that failed ([`crate::jwks::JwksCache::failures`] shares it).
    pub jwks_fetch_failures: Counter,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("statuslist");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let leases_held = Gauge::default();
        let publish_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let published = Counter::default();
        let database_up = Gauge::default();
        let jwks_fetch_failures = Counter::default();
        registry.register(
            "jwks_fetch_failures",
            "Issuer JWKS fetches that failed (the issuer's cached keys, if any, stay in use)",
            jwks_fetch_failures.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "leases_held",
            "Leases this worker holds",
            leases_held.clone(),
        );
        registry.register(
            "publish_lag_seconds",
            "Seconds from a revocation notice to the publish that covered it (last pass)",
            publish_lag.clone(),
        );
        registry.register(
            "lists_published",
            "Lists rendered and stored by this worker",
            published.clone(),
        );
        registry.register(
            "database_up",
            "1 while the database is usable (schema current, notification connection answering)",
            database_up.clone(),
        );
        Self {
            requests,
            latency,
            leases_held,
            publish_lag,
            published,
            database_up,
            jwks_fetch_failures,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
