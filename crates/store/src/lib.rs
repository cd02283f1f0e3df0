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

mod batch;
pub mod entries;
mod error;
pub mod failover;
mod health;
pub mod leases;
pub mod lists;
mod migrations;
use migrations::LATEST as MIGRATIONS_LATEST;
pub mod notify;
pub mod pools;
pub mod publish;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio::time::Instant;

pub use entries::{
    BatchRevokeOutcome, IssueOutcome, IssueRequest, RevokeOutcome, StatusChange,
    StatusChangeOutcome,
};
pub use error::StoreError;
pub use health::Health;
pub use leases::Lease;
pub use lists::{Capacity, ListCapacity, ListFormat, ListInfo, ListState};
pub use pools::{ApplyOutcome, DeletionPolicy, IssuerSpec, PoolSettings, PoolSpec};
pub use publish::{Artifact, ArtifactKind, PoolLists, PublishJob, StoredArtifact};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Set on every pooled connection when it is opened. JIT compilation off: every
/// statement here is short (well under a millisecond of execution), and a planner's cost
/// estimate past `jit_above_cost` (a correlated count over many partitions is estimated
/// at thousands of rows it never reads) made the reconcile's capacity query spend 200 ms
/// compiling for 0.2 ms of work. Behind a transaction-mode connection pooler a session
/// setting may not follow every statement; nothing depends on it but speed.
const SESSION_SETTINGS: &str = "SET jit = off";

/// How long the migrations may take: one may build an index over a large table (schema
/// 20's over every issuance key, concurrently: minutes on a national wallet's), and a
/// start waits for another's. Cut off at the operation timeout instead, the build's
/// connection was closed, the server went on building while holding the migration lock,
/// and every later start timed out on that lock until it finished (or, where the server
/// checks for closed connections, cancelled it and began again: never done). A
/// connection the network drops still fails within the TCP timeout.
const MIGRATION_BOUND: Duration = Duration::from_secs(3600);

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
    /// TCP keepalive idle time, and the TCP user timeout (unacknowledged data): a
    /// connection the network silently dropped is closed after about this long.
    pub tcp_timeout: Duration,
    /// How long a publisher may render one list (its claim on the list is extended while
    /// it renders, and lapses within seconds if the publisher dies).
    pub render_bound: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            wait_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(5),
            tcp_timeout: Duration::from_secs(10),
            render_bound: publish::RENDER_BOUND,
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    pg_config: tokio_postgres::Config,
    tls: tls::Tls,
    operation_timeout: Duration,
    render_bound: Duration,
    /// Whether the schema is known to be current: until then operations are refused.
    migrated: Arc<tokio::sync::watch::Sender<bool>>,
    /// How many times this process brought the schema up to date (a change means the
    /// tables were created again: what was written into the old ones, e.g. registered
    /// signing keys, is gone).
    schema_epoch: Arc<std::sync::atomic::AtomicU64>,
    health: Health,
    /// Group commit for issuance, started on first use (it needs the runtime).
    batcher: Arc<OnceLock<batch::Batcher<batch::Insert>>>,
    /// Group commit for revocation, likewise.
    revoker: Arc<OnceLock<batch::Batcher<batch::Revoke>>>,
    /// Change notifications, sent after the revocations' commits; likewise.
    changes: Arc<OnceLock<notify::Changes>>,
    /// The database incarnations this process's connections met (see [`failover`]).
    incarnations: Arc<failover::Incarnations>,
    /// A worker's acknowledgements a standby may not have yet (see [`failover`]).
    journal: Arc<OnceLock<failover::Journal>>,
    /// Per dead list, the position up to which its idempotency keys are removed (see
    /// `drop_dead_partitions`).
    purged: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
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

    /// Builds the pool without touching the database; the caller migrates (or knows the
    /// schema is current).
    pub fn connect_lazy(config: &StoreConfig) -> Result<Self> {
        let store = Self::build(config)?;
        store.migrated.send_replace(true);
        Ok(store)
    }

    /// Builds the pool and returns at once, for a process that must run before its
    /// database does: migrations are applied in the background, retried with backoff
    /// (up to 5 s apart) until they succeed; until then every operation answers
    /// [`StoreError::Unavailable`]. Fails only on an invalid configuration.
    pub fn start(config: &StoreConfig) -> Result<Self> {
        let store = Self::build(config)?;
        let background = store.clone();
        tokio::spawn(async move { background.migrate_until_done().await });
        let watcher = store.clone();
        tokio::spawn(async move { watcher.check_schema_on_reconnect().await });
        Ok(store)
    }

    /// On every (re)connection of the notification listener, checks the schema version;
    /// a missing or older schema is migrated again (see [`Store::schema_lost`]). Runs for
    /// the life of the process (one task per [`Store::start`]).
    async fn check_schema_on_reconnect(&self) {
        let mut connections = self.health.connections();
        while connections.changed().await.is_ok() {
            if !self.is_migrated() {
                continue;
            }
            match self.recorded_schema().await {
                Recorded::Current(_) => {}
                Recorded::Lost(why) => self.schema_lost(&why),
                Recorded::Unknown(e) => {
                    tracing::debug!(error = %e, "schema check after reconnecting failed")
                }
            }
        }
    }

    /// What the database records of its schema, against what this binary applies.
    async fn recorded_schema(&self) -> Recorded {
        let version = self
            .bounded_unchecked(async {
                let client = self.checkout().await?;
                let row = client
                    .query_one("SELECT max(version) FROM schema_migrations", &[])
                    .await?;
                Ok(row.get::<_, Option<i32>>(0))
            })
            .await;
        match version {
            Ok(Some(v)) if v >= MIGRATIONS_LATEST => Recorded::Current(v),
            Ok(v) => Recorded::Lost(format!(
                "schema version {} where {MIGRATIONS_LATEST} was applied",
                v.map_or_else(|| "none".into(), |v| v.to_string())
            )),
            Err(StoreError::SchemaMissing(why)) => Recorded::Lost(why),
            Err(e) => Recorded::Unknown(e),
        }
    }

    /// A statement met a missing table or function: the schema is lost (no migrations
    /// recorded, or older ones) and migrated again, the statement unavailable meanwhile;
    /// or the schema is recorded as current but damaged (a table renamed or dropped by
    /// hand), which migrating cannot repair: a database error, for a person to look at.
    async fn missing_object(&self, why: String) -> StoreError {
        match self.recorded_schema().await {
            Recorded::Current(v) => StoreError::Internal(format!(
                "the database schema is at version {v} but damaged: {why}"
            )),
            Recorded::Lost(_) => {
                self.schema_lost(&why);
                StoreError::SchemaMissing(why)
            }
            // Cannot tell now: unavailable, asked again by the next statement.
            Recorded::Unknown(_) => StoreError::SchemaMissing(why),
        }
    }

    /// The schema is gone or older than this process left it (the database was replaced
    /// or restored): operations are refused ([`StoreError::Unavailable`]) until the
    /// migrations, applied again in the background under their lock, bring it back.
    fn schema_lost(&self, why: &str) {
        let was = self
            .migrated
            .send_if_modified(|migrated| std::mem::replace(migrated, false));
        if was {
            tracing::error!(reason = %why, "the database schema is missing or older than this service applied: the database was replaced or restored; migrating it again");
            let background = self.clone();
            tokio::spawn(async move { background.migrate_until_done().await });
        }
    }

    /// Increases each time this process brought the schema up to date.
    pub fn schema_epoch(&self) -> u64 {
        self.schema_epoch.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn build(config: &StoreConfig) -> Result<Self> {
        let (mut pg_config, tls) = tls::configure(&config.url)?;
        pg_config
            .connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(config.tcp_timeout / 2)
            .keepalives_interval((config.tcp_timeout / 6).max(Duration::from_secs(1)))
            .keepalives_retries(3)
            .tcp_user_timeout(config.tcp_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("statuslist");
        }
        let manager = Manager::from_config(
            pg_config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let incarnations = Arc::new(failover::Incarnations::default());
        let seen = incarnations.clone();
        let pool = Pool::builder(manager)
            .post_create(Hook::async_fn(move |client, _| {
                let seen = seen.clone();
                Box::pin(async move {
                    client
                        .batch_execute(SESSION_SETTINGS)
                        .await
                        .map_err(HookError::Backend)?;
                    // Never a standby (a multi-host URL without target_session_attrs, or a
                    // Service that still points at one); and a new incarnation is noticed
                    // by the first connection that meets it.
                    let row = client
                        .query_one(failover::INCARNATION_QUERY, &[])
                        .await
                        .map_err(HookError::Backend)?;
                    let (standby, incarnation): (bool, Option<String>) = (
                        row.try_get(0).map_err(HookError::Backend)?,
                        row.try_get(1).map_err(HookError::Backend)?,
                    );
                    match incarnation {
                        Some(incarnation) if !standby => {
                            seen.observe(&incarnation);
                            Ok(())
                        }
                        _ => Err(HookError::message(
                            "the server is a standby (in recovery): the service needs the primary",
                        )),
                    }
                })
            }))
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
            tls,
            operation_timeout: config.operation_timeout,
            render_bound: config.render_bound,
            migrated: Arc::new(tokio::sync::watch::channel(false).0),
            schema_epoch: Arc::default(),
            health: Health::default(),
            batcher: Arc::default(),
            revoker: Arc::default(),
            changes: Arc::default(),
            incarnations,
            journal: Arc::default(),
            purged: Arc::default(),
        })
    }

    /// Applies the embedded migrations, within [`MIGRATION_BOUND`] rather than the
    /// operation timeout.
    pub async fn migrate(&self) -> Result<()> {
        within(MIGRATION_BOUND, async {
            let mut client = self.checkout().await?;
            migrations::run(&mut client).await
        })
        .await?;
        self.schema_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.migrated.send_replace(true);
        Ok(())
    }

    async fn migrate_until_done(&self) {
        let mut backoff = Duration::from_millis(100);
        let mut reported = String::new();
        let mut last_report = Instant::now();
        loop {
            match self.migrate().await {
                Ok(()) => {
                    tracing::info!("database ready");
                    return;
                }
                Err(e) => {
                    // Once per distinct error, and every 30 s while it lasts.
                    let text = e.to_string();
                    if text != reported || last_report.elapsed() >= Duration::from_secs(30) {
                        tracing::warn!(error = %text, "database not ready; retrying");
                        reported = text;
                        last_report = Instant::now();
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Whether the schema is current (migrations applied by this process).
    pub fn is_migrated(&self) -> bool {
        *self.migrated.borrow()
    }

    /// Resolves once the schema is current.
    pub async fn wait_migrated(&self) {
        let mut rx = self.migrated.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// The database's health as the notification listener sees it.
    pub fn health(&self) -> &Health {
        &self.health
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

    /// The TLS connector of this store's connections.
    pub fn tls(&self) -> &tls::Tls {
        &self.tls
    }

    fn batcher(&self) -> &batch::Batcher<batch::Insert> {
        self.batcher
            .get_or_init(|| batch::Batcher::start(self.pool.clone(), self.operation_timeout))
    }

    fn revoker(&self) -> &batch::Batcher<batch::Revoke> {
        self.revoker
            .get_or_init(|| batch::Batcher::start(self.pool.clone(), self.operation_timeout))
    }

    fn changes(&self) -> &notify::Changes {
        self.changes
            .get_or_init(|| notify::Changes::start(self.pool.clone(), self.operation_timeout))
    }

    async fn client(&self) -> Result<Conn> {
        if !self.is_migrated() {
            return Err(StoreError::Unavailable(
                "database schema not ready yet".into(),
            ));
        }
        self.checkout().await
    }

    async fn checkout(&self) -> Result<Conn> {
        let deadline = DEADLINE
            .try_with(|d| *d)
            .unwrap_or_else(|_| Instant::now() + self.operation_timeout);
        Conn::get(&self.pool, deadline).await
    }

    /// Runs `f` within the operation timeout; refused at once while the listener finds
    /// the database unreachable.
    fn purged_to(&self, list: &str) -> i64 {
        let purged = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        purged.get(list).copied().unwrap_or(0)
    }

    fn set_purged_to(&self, list: &str, position: i64) {
        let mut purged = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        purged.insert(list.to_owned(), position);
    }

    fn forget_purged(&self, list: &str) {
        let mut purged = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        purged.remove(list);
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        if let Some(down) = self.health.down_reason() {
            return Err(StoreError::Unavailable(down));
        }
        match self.bounded_unchecked(f).await {
            Err(StoreError::SchemaMissing(why)) => Err(self.missing_object(why).await),
            result => result,
        }
    }

    async fn bounded_unchecked<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        within(self.operation_timeout, f).await
    }
}

/// Runs `f` for at most `bound`, its connections checked out for that deadline (see
/// [`Conn`]).
async fn within<T>(bound: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    let deadline = Instant::now() + bound;
    match tokio::time::timeout_at(deadline, DEADLINE.scope(deadline, f)).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable("operation timed out".into())),
    }
}

/// The schema as the database records it ([`Store::recorded_schema`]).
enum Recorded {
    /// At the version this binary applies, or newer.
    Current(i32),
    /// No migrations recorded, or older ones: why.
    Lost(String),
    /// The check itself failed.
    Unknown(StoreError),
}

/// One connection outside any pool (TLS as the URL says), its driver spawned: for
/// administration and for tests.
pub async fn connect_one(url: &str) -> Result<tokio_postgres::Client> {
    let (config, tls) = tls::configure(url)?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    Ok(client)
}

tokio::task_local! {
    /// When the current operation times out: a connection still held then is discarded.
    static DEADLINE: Instant;
}

/// A pooled connection. Dropped before its operation's deadline it goes back to the
/// pool; dropped at or after it (the operation timed out, so a reply may still be
/// pending on it, or the network may have silently dropped it) it is closed instead.
pub(crate) struct Conn {
    object: Option<Object>,
    deadline: Instant,
}

impl Conn {
    /// A connection from `pool` for an operation that must end by `deadline`.
    pub(crate) async fn get(pool: &Pool, deadline: Instant) -> Result<Self> {
        Ok(Self {
            object: Some(pool.get().await?),
            deadline,
        })
    }
}

impl Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        // Present from creation until drop.
        self.object.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.object.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(object) = self.object.take()
            && Instant::now() >= self.deadline
        {
            tracing::debug!("closing a connection whose operation timed out");
            drop(Object::take(object));
        }
    }
}
