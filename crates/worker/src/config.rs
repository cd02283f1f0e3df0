//! Configuration: flags with environment fallbacks, and `run`, which wires them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use statuslist_format::SigningKey;
use statuslist_process::LogFormat;
use statuslist_store::failover::JournalConfig;
use statuslist_store::{Store, StoreConfig};

use crate::jwks::{JwksCache, JwksSettings};
use crate::leases::Leases;
use crate::metrics::Metrics;
use crate::served::ArtifactCache;
use crate::signing::SigningKeys;
use crate::{AppState, Worker, router};

/// `statuslist worker`: answers issuers and verifiers, publishes lists.
#[derive(Debug, Clone, Parser)]
#[command(name = "statuslist worker", version)]
pub struct WorkerArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Address of `/metrics` (a port of its own: the public one never serves it).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Longest time one request may take, in milliseconds (then 503, the contract's body).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Seconds between the stop signal and the shutdown during which the worker goes on
    /// answering but closes each connection after its answer (`Connection: close`) and
    /// reports not ready: clients move to other workers on fresh connections instead of
    /// meeting a closed keep-alive one. In Kubernetes, a few seconds (the chart: 5), below
    /// the pod's termination grace period; 0 stops at once.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 0)]
    pub drain_seconds: u64,
    /// Directory of PKCS#8 PEM signing keys (a mounted Secret); the newest signs.
    #[arg(
        long,
        env = "SIGNING_KEY_DIR",
        required_unless_present_any = ["generate_signing_key", "pkcs11_module"],
        conflicts_with = "pkcs11_module"
    )]
    pub signing_key_dir: Option<PathBuf>,
    /// Sign with keys held in a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 library,
    /// SoftHSM2) instead of key files: the module (shared library) to load. The keys are
    /// the token's key pairs labelled `--pkcs11-key-prefix...`; the label sorting last is
    /// the newest (docs/operations.md, "Signing keys in an HSM").
    #[arg(long, env = "PKCS11_MODULE", requires_all = ["pkcs11_token_label", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, env = "PKCS11_TOKEN_LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// A file holding the token's user PIN (a mounted Secret; never a flag value).
    #[arg(long, env = "PKCS11_PIN_FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// The label prefix of the service's keys in the token.
    #[arg(long, env = "PKCS11_KEY_PREFIX", default_value = statuslist_pkcs11::DEFAULT_PREFIX)]
    pub pkcs11_key_prefix: String,
    /// PKCS#11 sessions at most (signatures at once).
    #[arg(long, env = "PKCS11_SESSIONS", default_value_t = 4)]
    pub pkcs11_sessions: usize,
    /// How long one signature through the module may take, in milliseconds.
    #[arg(long, env = "PKCS11_SIGN_TIMEOUT_MS", default_value_t = 5000)]
    pub pkcs11_sign_timeout_ms: u64,
    /// Sign with a key generated at start (development only: verifiers lose it on restart).
    #[arg(long, env = "GENERATE_SIGNING_KEY")]
    pub generate_signing_key: bool,
    /// This worker's id in leases. Defaults to POD_NAME, then HOSTNAME.
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Database connections in the pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: usize,
    /// Longest wait for a database connection, in milliseconds.
    #[arg(long, env = "DB_WAIT_TIMEOUT_MS", default_value_t = 500)]
    pub db_wait_timeout_ms: u64,
    /// Upper bound of one database operation, in milliseconds.
    #[arg(long, env = "DB_OPERATION_TIMEOUT_MS", default_value_t = 5000)]
    pub db_operation_timeout_ms: u64,
    /// Lease lifetime without renewal, in seconds (renewed every third of it).
    #[arg(long, env = "LEASE_TTL_SECONDS", default_value_t = 30)]
    pub lease_ttl_seconds: u64,
    /// How long an acknowledged issuance or revocation is remembered, to be written back
    /// after a failover, when the database does not show how far its standbys have
    /// flushed (a role without `pg_monitor`): the longest replication delay to cover.
    /// Where it does show it, a record goes as soon as every streaming standby has it.
    #[arg(long, env = "JOURNAL_SECONDS", default_value_t = 60)]
    pub journal_seconds: u64,
    /// Acknowledgements remembered at most (about 100 bytes each); past it the oldest go.
    #[arg(long, env = "JOURNAL_MAX_RECORDS", default_value_t = 1_000_000)]
    pub journal_max_records: usize,
    /// Timeout of an issuer JWKS fetch, in milliseconds.
    #[arg(long, env = "JWKS_TIMEOUT_MS", default_value_t = 2000)]
    pub jwks_timeout_ms: u64,
    /// Largest issuer JWKS accepted, in bytes.
    #[arg(long, env = "JWKS_MAX_BYTES", default_value_t = 65536)]
    pub jwks_max_bytes: usize,
    /// Issuer keys are refreshed after this many seconds.
    #[arg(long, env = "JWKS_CACHE_SECONDS", default_value_t = 300)]
    pub jwks_cache_seconds: u64,
    /// At most one JWKS fetch per issuer in this many seconds (unknown kid included).
    #[arg(long, env = "JWKS_REFETCH_INTERVAL_SECONDS", default_value_t = 30)]
    pub jwks_refetch_interval_seconds: u64,
    /// Accept http:// JWKS URIs (local use and tests only; production needs https).
    #[arg(long, env = "JWKS_ALLOW_HTTP")]
    pub jwks_allow_http: bool,
    /// A non-public address range issuer JWKS fetches may reach (repeatable; the env
    /// variable takes a comma-separated list). Loopback, private, link-local (cloud
    /// metadata), unique-local and other internal ranges are refused otherwise.
    #[arg(long = "jwks-allow-cidr", env = "JWKS_ALLOW_CIDRS", value_delimiter = ',', value_parser = crate::egress::parse_cidr)]
    pub jwks_allow_cidrs: Vec<ipnet::IpNet>,
    /// `max-age` of the service's JWKS, in seconds; a new signing key is published this
    /// long before it signs.
    #[arg(long, env = "JWKS_MAX_AGE_SECONDS", default_value_t = 300)]
    pub jwks_max_age_seconds: u64,
    /// How often the signing key directory is checked for changes, in seconds.
    #[arg(long, env = "KEY_RELOAD_SECONDS", default_value_t = 10)]
    pub key_reload_seconds: u64,
    /// zlib/gzip level of published lists (9: smallest; see README, Performance).
    #[arg(long, env = "ZLIB_LEVEL", default_value_t = statuslist_format::token::DEFAULT_ZLIB_LEVEL, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub zlib_level: u32,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] statuslist_store::StoreError),
    #[error(transparent)]
    Keys(#[from] crate::signing::KeyError),
    #[error("signing key: {0}")]
    Generate(#[from] statuslist_format::FormatError),
    #[error("JWKS client: {0}")]
    Jwks(#[from] crate::jwks::FetchError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

impl WorkerArgs {
    pub fn worker_id(&self) -> String {
        self.worker_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn store_config(&self) -> StoreConfig {
        let mut c = StoreConfig::new(&self.database_url);
        c.max_connections = self.db_max_connections;
        c.wait_timeout = Duration::from_millis(self.db_wait_timeout_ms);
        c.connect_timeout = Duration::from_millis(self.db_wait_timeout_ms);
        c.operation_timeout = Duration::from_millis(self.db_operation_timeout_ms);
        c
    }

    pub fn jwks_settings(&self) -> JwksSettings {
        JwksSettings {
            timeout: Duration::from_millis(self.jwks_timeout_ms),
            max_bytes: self.jwks_max_bytes,
            max_age: Duration::from_secs(self.jwks_cache_seconds),
            min_refetch_interval: Duration::from_secs(self.jwks_refetch_interval_seconds),
            allow_http: self.jwks_allow_http,
            allow_cidrs: self.jwks_allow_cidrs.clone(),
        }
    }

    /// Builds the state: store (migrating in the background until the database answers),
    /// keys, caches. Fails only on configuration errors: a database that is not there yet
    /// makes the worker not ready, not absent.
    pub async fn state(&self) -> Result<Arc<AppState>, StartError> {
        let mut keys = match (&self.signing_key_dir, &self.pkcs11_module) {
            (Some(dir), _) => SigningKeys::from_dir(dir)?,
            (None, Some(module)) => {
                let token = statuslist_pkcs11::Token::open(&statuslist_pkcs11::TokenConfig {
                    module: module.clone(),
                    token_label: self.pkcs11_token_label.clone().unwrap_or_default(),
                    pin_file: self.pkcs11_pin_file.clone().unwrap_or_default(),
                    key_prefix: self.pkcs11_key_prefix.clone(),
                    sessions: self.pkcs11_sessions,
                    sign_timeout: Duration::from_millis(self.pkcs11_sign_timeout_ms.max(1)),
                })
                .map_err(crate::signing::KeyError::Token)?;
                SigningKeys::from_token(token)?
            }
            (None, None) => {
                tracing::warn!(
                    "signing with a generated key: verifiers lose it on restart (development only)"
                );
                SigningKeys::new(vec![SigningKey::generate()?])
                    .ok_or(crate::signing::KeyError::Empty("generated".into()))?
            }
        };
        tracing::info!(kids = ?keys.kids(), "signing keys: {}", keys.origin());
        keys.jwks_max_age = Duration::from_secs(self.jwks_max_age_seconds);
        keys.reload_every = Duration::from_secs(self.key_reload_seconds.max(1));
        let store = Store::start(&self.store_config())?;
        store.enable_journal(JournalConfig {
            worker: self.worker_id(),
            retention: Duration::from_secs(self.journal_seconds),
            max_records: self.journal_max_records,
        });
        let metrics = Metrics::default();
        let leases = Arc::new(Leases::new(
            store.clone(),
            self.worker_id(),
            Duration::from_secs(self.lease_ttl_seconds),
            metrics.clone(),
        ));
        let mut jwks = JwksCache::new(self.jwks_settings())?;
        jwks.failures = metrics.jwks_fetch_failures.clone();
        Ok(Arc::new(AppState {
            store,
            jwks,
            keys: Arc::new(keys),
            leases,
            cache: Arc::new(ArtifactCache::default()),
            issuers: Arc::default(),
            metrics,
            summary: Arc::default(),
            draining: Arc::default(),
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
        }))
    }
}

/// Runs a worker until `shutdown` resolves: stops accepting, finishes in-flight
/// requests, stops the background tasks and releases the leases.
pub async fn run(
    args: WorkerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = args.state().await?;
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| StartError::Listen(args.listen_addr, e))?;
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| StartError::Listen(args.metrics_addr, e))?;
    tracing::info!(addr = %args.listen_addr, metrics = %args.metrics_addr, worker = %args.worker_id(), "worker listening");
    let worker = Worker::start(state.clone(), args.zlib_level);
    let metrics = tokio::spawn(
        axum::serve(metrics_listener, crate::metrics_router(state.clone())).into_future(),
    );
    let draining = state.draining.clone();
    let drain = Duration::from_secs(args.drain_seconds);
    let shutdown = async move {
        shutdown.await;
        if !drain.is_zero() {
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                seconds = drain.as_secs(),
                "stopping: draining (each answer closes its connection) before shutting down"
            );
            tokio::time::sleep(drain).await;
        }
    };
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve);
    metrics.abort();
    served?;
    worker.shutdown().await;
    tracing::info!("worker stopped");
    Ok(())
}
