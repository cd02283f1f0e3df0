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
pub struct JwksLabel {
    pub jwks_uri: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// The outcomes of `statuslist_lease_claims_total`: a lease got, none free in the pool
/// (the operator is asked for a list), the database failed.
pub const CLAIM_OUTCOMES: [&str; 3] = ["claimed", "none_free", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    pub leases_held: Gauge,
    /// Lease claims by outcome ([`CLAIM_OUTCOMES`]).
    pub lease_claims: Family<OutcomeLabel, Counter>,
    /// Seconds from a revocation's notification to the publish that covered it.
    pub publish_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Seconds from a status change's commit to the publish that covered it.
    pub publish_delay: Histogram,
    pub published: Counter,
    /// 1 while the database is usable (schema current, listener answering), else 0.
    pub database_up: Gauge,
    /// The database's publishing backlog (read at each scrape): lists whose version is
    /// ahead of their artifacts, and how long the oldest unpublished change has waited.
    pub lists_awaiting_publish: Gauge,
    pub publish_backlog_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The latest heartbeat round trip to the database (seconds; NaN while down).
    pub database_round_trip: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Issuer JWKS fetches that failed ([`crate::jwks::JwksCache::failures`] shares it).
    pub jwks_fetch_failures: Family<JwksLabel, Counter>,
    /// Failovers and the journal ([`Metrics::failover`] sets them at each scrape).
    failover: FailoverGauges,
    /// Signing through a PKCS#11 module ([`Metrics::signer`] sets them at each scrape).
    signer: SignerGauges,
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
        statuslist_process::telemetry::register_metrics(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let leases_held = Gauge::default();
        let lease_claims = Family::<OutcomeLabel, Counter>::default();
        for outcome in CLAIM_OUTCOMES {
            let _ = lease_claims.get_or_create(&OutcomeLabel { outcome });
        }
        let publish_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let published = Counter::default();
        // 10 ms to about 82 s: within a second normally, minutes after an outage.
        let publish_delay = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let database_up = Gauge::default();
        let lists_awaiting_publish = Gauge::default();
        let publish_backlog_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "lists_awaiting_publish",
            "Live lists whose latest status changes are not published yet (the whole database, read at each scrape)",
            lists_awaiting_publish.clone(),
        );
        registry.register(
            "publish_backlog_oldest_seconds",
            "Seconds the oldest unpublished status change has waited since its commit (0: none waits; read at each scrape)",
            publish_backlog_oldest.clone(),
        );
        let database_round_trip = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let jwks_fetch_failures = Family::<JwksLabel, Counter>::default();
        registry.register(
            "jwks_fetch_failures",
            "Issuer JWKS fetches that failed, by JWKS URI (the issuer's cached keys, if any, stay in use)",
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
            "lease_claims",
            "Lease claims by outcome: claimed, none_free (the pool has no free range; the operator is asked for a list), failed (database)",
            lease_claims.clone(),
        );
        registry.register(
            "publish_lag_seconds",
            "Seconds from a revocation notice to the publish that covered it (last pass)",
            publish_lag.clone(),
        );
        registry.register(
            "publish_delay_seconds",
            "Seconds from a status change's commit (revocation, suspension, reinstatement) to the store of the first list version that shows it, per list published",
            publish_delay.clone(),
        );
        registry.register(
            "lists_published",
            "Lists rendered and stored by this worker",
            published.clone(),
        );
        registry.register(
            "database_round_trip_seconds",
            "Round trip of the latest heartbeat (SELECT 1, every second) on the worker's notification connection; NaN while the database is down",
            database_round_trip.clone(),
        );
        registry.register(
            "database_up",
            "1 while the database is usable (schema current, notification connection answering)",
            database_up.clone(),
        );
        let failover = FailoverGauges::register(&mut registry);
        let signer = SignerGauges::register(&mut registry);
        Self {
            requests,
            latency,
            leases_held,
            lease_claims,
            publish_lag,
            publish_delay,
            published,
            database_up,
            lists_awaiting_publish,
            publish_backlog_oldest,
            database_round_trip,
            jwks_fetch_failures,
            failover,
            signer,
            registry: Arc::new(registry),
        }
    }
}

/// Gauges of signing through a PKCS#11 module.
#[derive(Clone, Default)]
struct SignerGauges {
    failing: Gauge,
    signatures: Gauge,
    failures: Gauge,
}

impl SignerGauges {
    fn register(registry: &mut Registry) -> Self {
        let g = Self::default();
        registry.register(
            "signer_failing",
            "1 while the last signature through the PKCS#11 module failed (publishing of lists that need a new signature waits), else 0",
            g.failing.clone(),
        );
        registry.register(
            "signer_signatures",
            "Signatures made through the PKCS#11 module since the worker started",
            g.signatures.clone(),
        );
        registry.register(
            "signer_failures",
            "Signatures through the PKCS#11 module that failed or timed out since the worker started",
            g.failures.clone(),
        );
        g
    }
}

/// Gauges of what the store knows of failovers and replication.
#[derive(Clone, Default)]
struct FailoverGauges {
    failovers: Gauge,
    journal: Gauge,
    synchronous: Gauge,
    standbys: Gauge,
    lag: Gauge,
    acknowledgements: Family<AckLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AckLabels {
    kind: &'static str,
    outcome: &'static str,
}

impl FailoverGauges {
    fn register(registry: &mut Registry) -> Self {
        let g = Self::default();
        registry.register(
            "failovers_seen",
            "Changes of database incarnation (promotion, restore) this worker's connections met",
            g.failovers.clone(),
        );
        registry.register(
            "failover_journal_records",
            "Acknowledged issuances and revocations remembered until a standby is known to have them",
            g.journal.clone(),
        );
        registry.register(
            "database_replication_synchronous",
            "1 when every commit waits for a standby (synchronous_standby_names and synchronous_commit), else 0",
            g.synchronous.clone(),
        );
        registry.register(
            "database_standbys",
            "Standbys streaming from the primary",
            g.standbys.clone(),
        );
        registry.register(
            "database_replication_lag_bytes",
            "Largest distance between the primary's WAL and a standby's flush position (-1: not visible to this role, or no standby)",
            g.lag.clone(),
        );
        registry.register(
            "failover_acknowledgements",
            "Acknowledgements this worker wrote back after failovers, by kind and outcome (restored, present, unrestorable)",
            g.acknowledgements.clone(),
        );
        g
    }
}

impl Metrics {
    /// Sets the failover and replication gauges from what the store knows.
    /// The PKCS#11 signer's state (all 0 with key files).
    pub fn signer(&self, token: Option<&statuslist_pkcs11::Token>) {
        let Some(token) = token else { return };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (signed, failed) = token.counts();
        self.signer.failing.set(i64::from(token.failing()));
        self.signer.signatures.set(n(signed));
        self.signer.failures.set(n(failed));
    }

    pub fn failover(&self, stats: &statuslist_store::failover::FailoverStats) {
        let g = &self.failover;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        g.failovers.set(n(stats.failovers));
        g.journal.set(n(stats.journal_records as u64));
        if let Some(r) = &stats.replication {
            g.synchronous.set(i64::from(r.synchronous));
            g.standbys.set(r.standbys);
            g.lag.set(r.lag_bytes.unwrap_or(-1));
        }
        let r = &stats.restored;
        for (kind, outcome, v) in [
            ("issuance", "restored", r.issuances_restored),
            ("issuance", "present", r.issuances_present),
            ("issuance", "unrestorable", r.issuances_unrestorable),
            ("revocation", "restored", r.revocations_restored),
            ("revocation", "present", r.revocations_present),
            ("revocation", "unrestorable", r.revocations_unrestorable),
        ] {
            g.acknowledgements
                .get_or_create(&AckLabels { kind, outcome })
                .set(n(v));
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
