//! Embedded, versioned, forward-only migrations, applied by whichever component starts
//! first: a session advisory lock serialises concurrent starts.

use deadpool_postgres::Object;

use crate::Result;

/// The schema every database starts from: version 15 (the current schema, in one file).
/// A database holding only earlier versions was made by a build from before the baseline
/// and is refused (nothing released used them).
const BASELINE: i32 = 15;

/// `(version, sql)`, in order: the baseline, then the migrations since. Never edit a
/// shipped migration: add the next one.
const MIGRATIONS: &[(i32, &str)] = &[
    (BASELINE, include_str!("../migrations/0015_schema.sql")),
    (16, include_str!("../migrations/0016_suspension.sql")),
    (17, include_str!("../migrations/0017_revoke_lookup.sql")),
    (
        18,
        include_str!("../migrations/0018_incarnation_plpgsql.sql"),
    ),
    (
        19,
        include_str!("../migrations/0019_store_artifacts_generic_plan.sql"),
    ),
    (
        20,
        include_str!("../migrations/0020_revoke_by_issuance_key.sql"),
    ),
];

/// Indexes a migration needs, built before its transaction with `CREATE INDEX
/// CONCURRENTLY` (which cannot run in one): writers of the table go on during the build,
/// which on a national wallet's key table takes minutes. `(version, name, definition)`;
/// the migration itself checks that the index is there and valid. A build that failed
/// half-way leaves an invalid index: it is dropped and built again.
const CONCURRENT_INDEXES: &[(i32, &str, &str)] = &[(
    20,
    "issuance_keys_entry",
    "ON issuance_keys (list_id, idx) INCLUDE (client_id)",
)];

/// The version the migrations bring the schema to.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Advisory lock key: "statusls" in ASCII.
const LOCK_KEY: i64 = 0x7374_6174_7573_6c73;

/// How often a start waiting for another's migrations tries the lock again.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) async fn run(client: &mut Object) -> Result<()> {
    // Tried, not waited for: a session waiting in `pg_advisory_lock` holds a snapshot for
    // as long as it waits, and `CREATE INDEX CONCURRENTLY` (a migration's index, below)
    // waits for every such snapshot to go, a deadlock between the two.
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await?
            .try_get(0)?;
        if locked {
            break;
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
    let result = apply(client).await;
    // Unlock even when a migration failed; a lost connection releases it anyway.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result?;
    unlock?;
    Ok(())
}

async fn apply(client: &mut Object) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(newest) = applied.last()
        && *newest > MIGRATIONS.last().map_or(0, |m| m.0)
    {
        return Err(crate::StoreError::Config(format!(
            "database schema version {newest} is newer than this binary knows; upgrade the binary"
        )));
    }
    if let Some(oldest) = applied.first()
        && *oldest < BASELINE
        && !applied.contains(&BASELINE)
    {
        return Err(crate::StoreError::Config(format!(
            "database schema version {} predates the baseline schema (version {BASELINE}) and \
             cannot be migrated: it was made by an unreleased build; recreate the database",
            applied.last().copied().unwrap_or(*oldest)
        )));
    }
    let mut newly = Vec::new();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for (_, name, definition) in CONCURRENT_INDEXES.iter().filter(|i| i.0 == *version) {
            build_index(client, name, definition).await?;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tx.commit().await?;
        tracing::debug!(version, "applied migration");
        newly.push(*version);
    }
    if let (Some(first), Some(last)) = (newly.first(), newly.last()) {
        tracing::info!(from = first, to = last, "database schema migrated");
    }
    Ok(())
}

/// Builds index `name` concurrently unless a valid one is there (names are this file's
/// constants, not input).
async fn build_index(client: &Object, name: &str, definition: &str) -> Result<()> {
    let valid: Option<bool> = client
        .query_opt(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
            &[&name],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    match valid {
        Some(true) => return Ok(()),
        Some(false) => {
            tracing::warn!(index = name, "dropping an index whose build did not finish");
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await?;
        }
        None => {}
    }
    tracing::info!(index = name, "building an index concurrently");
    client
        .batch_execute(&format!("CREATE INDEX CONCURRENTLY {name} {definition}"))
        .await?;
    Ok(())
}
