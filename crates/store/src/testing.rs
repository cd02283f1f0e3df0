//! A fresh database per test: on the server named by `DATABASE_URL` (the test command
//! starts one), or else on a private throwaway server of the test's own.

use crate::{Store, StoreConfig, connect_one};
use statuslist_devdb::PgServer;

/// A database created for one test and dropped with it.
#[derive(Debug)]
pub struct TestDb {
    pub store: Store,
    pub url: String,
    name: String,
    admin_url: String,
    server: Option<PgServer>,
}

/// Store settings for tests: the production bounds (0.5 s to open or wait for a
/// connection) are for failing fast in an outage; on a loaded test machine a healthy
/// server can take longer to accept, so tests wait up to 5 s (tests of the bounds
/// themselves build their own settings).
pub fn config(url: &str) -> StoreConfig {
    let mut config = StoreConfig::new(url);
    config.connect_timeout = std::time::Duration::from_secs(5);
    config.wait_timeout = std::time::Duration::from_secs(5);
    config
}

/// `url` with its database replaced by `db` (URL or key=value form).
pub fn with_database(url: &str, db: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (base, query) = rest
                .split_once('?')
                .map_or((rest, None), |(b, q)| (b, Some(q)));
            let authority = base.split_once('/').map_or(base, |(a, _)| a);
            return match query {
                Some(q) => format!("{scheme}{authority}/{db}?{q}"),
                None => format!("{scheme}{authority}/{db}"),
            };
        }
    }
    format!("{url} dbname={db}")
}

impl TestDb {
    /// A migrated store on a database of its own.
    pub async fn new() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Self::create(url, None).await,
            _ => Self::with_own_server().await,
        }
    }

    /// A database on a server of this test's own, which the test may stop and restart.
    pub async fn with_own_server() -> Self {
        let server = tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("server start task")
            .expect("start a throwaway PostgreSQL server");
        let admin = server.url("postgres");
        Self::create(admin, Some(server)).await
    }

    async fn create(admin_url: String, server: Option<PgServer>) -> Self {
        let name = format!("statuslist_test_{}", uuid::Uuid::new_v4().simple());
        let client = connect_one(&admin_url)
            .await
            .expect("connect to the admin database");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        drop(client);
        let url = with_database(&admin_url, &name);
        let store = Store::connect(&config(&url))
            .await
            .expect("connect and migrate");
        Self {
            store,
            url,
            name,
            admin_url,
            server,
        }
    }

    /// A plain connection to this database, for checks behind the store's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect_one(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// The single `bigint` a query such as `SELECT count(*) FROM entries` returns.
    pub async fn count(&self, query: &str) -> i64 {
        self.client()
            .await
            .query_one(query, &[])
            .await
            .expect("count query")
            .get(0)
    }

    pub fn server_mut(&mut self) -> Option<&mut PgServer> {
        self.server.as_mut()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.server.is_some() {
            // The whole server goes with it.
            return;
        }
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = connect_one(&admin).await.ok()?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A bare connection pool of `size` connections (benchmarks compare against it).
pub fn raw_pool(url: &str, size: usize) -> deadpool_postgres::Pool {
    let (config, tls) = crate::tls::configure(url).expect("database URL");
    let manager = deadpool_postgres::Manager::new(config, tls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()
        .expect("pool")
}

/// A run-time setting (`SHOW name`) as the store's pooled connections see it.
pub async fn session_setting(store: &crate::Store, name: &str) -> String {
    let client = store.client().await.expect("a pooled connection");
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .expect("SHOW")
        .get(0)
}

/// The sequential and the index scans of the tables whose names match `pattern` (LIKE)
/// counted by the client's session and not yet reported: in an open transaction, its own
/// and those of the session's earlier transactions (none is reported while one is open).
pub async fn scans(client: &impl tokio_postgres::GenericClient, pattern: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT coalesce(sum(seq_scan), 0)::bigint, coalesce(sum(idx_scan), 0)::bigint
             FROM pg_stat_xact_user_tables WHERE relname LIKE $1",
            &[&pattern],
        )
        .await
        .expect("the transaction's counts");
    (row.get(0), row.get(1))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x"),
            "postgresql://h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("host=h user=u", "x"),
            "host=h user=u dbname=x"
        );
    }
}
