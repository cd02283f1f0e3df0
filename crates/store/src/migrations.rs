//! Embedded, versioned, forward-only migrations, applied by whichever component starts
//! first: a session advisory lock serialises concurrent starts.

use deadpool_postgres::Object;

use crate::Result;

/// `(version, sql)`, in order. Never edit a shipped migration: add the next one.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_resource_identity.sql")),
    (3, include_str!("../migrations/0003_publish_claims.sql")),
    (4, include_str!("../migrations/0004_key_lifetimes.sql")),
    (5, include_str!("../migrations/0005_entry_changes.sql")),
    (6, include_str!("../migrations/0006_revoked_index.sql")),
    (
        7,
        include_str!("../migrations/0007_drop_redundant_revoked_index.sql"),
    ),
    (8, include_str!("../migrations/0008_revocations.sql")),
    (9, include_str!("../migrations/0009_work_not_data.sql")),
    (10, include_str!("../migrations/0010_entries_by_list.sql")),
    (
        11,
        include_str!("../migrations/0011_drop_entry_issued_at.sql"),
    ),
    (
        12,
        include_str!("../migrations/0012_one_partition_per_lookup.sql"),
    ),
    (
        13,
        include_str!("../migrations/0013_revoke_without_partition_planning.sql"),
    ),
    (
        14,
        include_str!("../migrations/0014_revoke_plan_kept_notify_after_commit.sql"),
    ),
    (
        15,
        include_str!("../migrations/0015_failover_incarnations.sql"),
    ),
];

/// The version the migrations bring the schema to.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The SQL of migration `version`.
#[cfg(feature = "testing")]
pub(crate) fn sql(version: i32) -> Option<&'static str> {
    MIGRATIONS.iter().find(|m| m.0 == version).map(|m| m.1)
}

/// Advisory lock key: "statusls" in ASCII.
const LOCK_KEY: i64 = 0x7374_6174_7573_6c73;

pub(crate) async fn run(client: &mut Object) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
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
    let mut newly = Vec::new();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
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
