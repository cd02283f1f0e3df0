//! The PostgreSQL store: the only shared state between the operator and the workers, and
//! the only crate with SQL. Every promise the service makes (no slot issued twice, no
//! acknowledged revocation lost, a retried request never allocating twice) is kept here by
//! constraints and transactions, so it survives any process dying at any instant.
//!
//! - [`Store::connect`]: a bounded pool (a down database is an error in well under a
//!   second, never a hang) with migrations applied under an advisory lock;
//! - pools and issuers ([`pools`]), lists and their lifecycle ([`lists`]), leases
//!   ([`leases`]), issuance and revocation ([`entries`]), publish state ([`publish`]);
//! - [`notify`]: LISTEN/NOTIFY with a listener that reconnects;
//! - [`throwaway`]: a private PostgreSQL server for `statuslist dev` and the tests.

mod batch;
pub mod entries;
mod error;
pub mod leases;
pub mod lists;
mod migrations;
pub mod notify;
pub mod pools;
pub mod publish;
#[cfg(feature = "testing")]
pub mod testing;
pub mod throwaway;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use entries::{IssueOutcome, IssueRequest, RevokeOutcome};
pub use error::StoreError;
pub use leases::Lease;
pub use lists::{Capacity, ListCapacity, ListFormat, ListInfo, ListState};
pub use pools::{ApplyOutcome, DeletionPolicy, IssuerSpec, PoolSettings, PoolSpec};
pub use publish::{Artifact, ArtifactKind, PublishJob, StoredArtifact};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Connection settings. Every wait is bounded so that a database outage turns into
/// [`StoreError::Unavailable`] quickly instead of a hang.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://` URL or key=value connection string.
    pub url: String,
    pub max_connections: usize,
    /// Longest wait for a free pooled connection.
    pub wait_timeout: Duration,
    /// Longest wait to open a new connection.
    pub connect_timeout: Duration,
    /// Upper bound on any single store operation, queries included.
    pub operation_timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            wait_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    pg_config: tokio_postgres::Config,
    operation_timeout: Duration,
    /// Group commit for issuance, started on first use (it needs the runtime).
    batcher: Arc<OnceLock<batch::Batcher>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show the shape only.
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool and applies pending migrations (safe when several components start
    /// at once). Fails with [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        let store = Self::connect_lazy(config)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Builds the pool without touching the database.
    pub fn connect_lazy(config: &StoreConfig) -> Result<Self> {
        let mut pg_config: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid database URL: {e}")))?;
        pg_config
            .connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("statuslist");
        }
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            pg_config,
            operation_timeout: config.operation_timeout,
            batcher: Arc::default(),
        })
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<()> {
        self.bounded(async {
            let mut client = self.client().await?;
            migrations::run(&mut client).await
        })
        .await
    }

    /// Whether the database answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<()> {
        self.bounded(async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// The connection settings, for a dedicated LISTEN connection.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg_config
    }

    fn batcher(&self) -> &batch::Batcher {
        self.batcher
            .get_or_init(|| batch::Batcher::start(self.pool.clone()))
    }

    async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    /// Runs `f` within the operation timeout.
    async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.operation_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable("operation timed out".into())),
        }
    }
}
