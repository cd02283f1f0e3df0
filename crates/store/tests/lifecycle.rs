//! Pools, issuers, provisioning, Full, Retired, deletion policies, migrations.

mod common;

use common::*;
use statuslist_store::notify::{CHANNEL_CONFIG, Event};
use statuslist_store::testing::TestDb;
use statuslist_store::{DeletionPolicy, ListState, Store, StoreError};

#[tokio::test]
async fn issuers_are_unique_across_pools_and_never_stolen() {
    let db = TestDb::new().await;
    db.store
        .apply_pool(&pool_spec("p", &["a", "b"], 1000, 100))
        .await
        .expect("apply p");
    let outcome = db
        .store
        .apply_pool(&pool_spec("q", &["b", "c"], 1000, 100))
        .await
        .expect("apply q");
    assert_eq!(outcome.conflicts.len(), 1);
    assert_eq!(
        (
            outcome.conflicts[0].client_id.as_str(),
            outcome.conflicts[0].held_by.as_str()
        ),
        ("b", "p")
    );
    assert_eq!(
        db.store
            .issuer("b")
            .await
            .expect("read")
            .expect("b")
            .pool
            .name,
        "p"
    );
    assert_eq!(
        db.store
            .issuer("c")
            .await
            .expect("read")
            .expect("c")
            .pool
            .name,
        "q"
    );
    // Removing an issuer from a spec removes it; then another pool can take it.
    db.store
        .apply_pool(&pool_spec("p", &["a"], 1000, 100))
        .await
        .expect("apply p");
    assert!(db.store.issuer("b").await.expect("read").is_none());
    assert!(
        db.store
            .apply_pool(&pool_spec("q", &["b", "c"], 1000, 100))
            .await
            .expect("apply q")
            .conflicts
            .is_empty()
    );
    // format and bits are immutable.
    let mut changed = pool_spec("p", &["a"], 1000, 100);
    changed.settings.bits = statuslist_format::Bits::Four;
    assert!(matches!(
        db.store.apply_pool(&changed).await,
        Err(StoreError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_provisioners_add_exactly_one_list() {
    let db = TestDb::new().await;
    db.store
        .apply_pool(&pool_spec("p", &["a"], 1000, 100))
        .await
        .expect("apply");
    let results = futures_util::future::join_all((0..6).map(|_| {
        let store = db.store.clone();
        tokio::spawn(async move { store.ensure_capacity("p").await })
    }))
    .await;
    let provisioned = results
        .into_iter()
        .filter(|r| r.as_ref().expect("task").as_ref().expect("ok").is_some())
        .count();
    assert_eq!(provisioned, 1);
    let cap = db.store.capacity("p").await.expect("capacity");
    assert_eq!((cap.lists.len(), cap.size, cap.free), (1, 1000, 1000));
    let list = &cap.lists[0];
    assert!(list.uri.starts_with("https://status.example.test/t/"));
    assert_eq!(list.id.len(), 12);
    assert!(
        list.id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    );
}

#[tokio::test]
async fn a_pool_below_min_free_gets_the_next_list_and_full_lists_retire() {
    // Lists of 200 in leases of 100; min free 100.
    let db = with_pool(200, 100).await;
    assert!(
        db.store
            .ensure_capacity("p")
            .await
            .expect("ensure")
            .is_none(),
        "200 free >= 100"
    );
    let now = 1_700_000_000;
    let mut leases = Vec::new();
    let mut expiries = Vec::new();
    let mut replayed = None;
    for (w, expiry) in [("w1", now + 10), ("w2", now + 20)] {
        let lease = claim(&db.store, w).await;
        for _ in 0..100 {
            let req = request("a", expiry);
            db.store.issue(&lease, &req).await.expect("issue");
            replayed = Some(req);
        }
        db.store.release_lease(&lease).await.expect("release");
        leases.push(lease);
        expiries.push(expiry);
    }
    let first = db.store.capacity("p").await.expect("capacity");
    assert_eq!((first.allocated, first.free), (200, 0));
    assert_eq!(
        db.store.mark_full("p").await.expect("full"),
        vec![first.lists[0].id.clone()]
    );
    let next = db
        .store
        .ensure_capacity("p")
        .await
        .expect("ensure")
        .expect("a second list");
    assert_ne!(next.id, first.lists[0].id);
    assert!(
        db.store
            .ensure_capacity("p")
            .await
            .expect("ensure")
            .is_none()
    );

    // Not every entry has expired yet: not retired.
    assert!(
        db.store
            .retire_expired("p", now + 15)
            .await
            .expect("retire")
            .is_empty()
    );
    let retired = db
        .store
        .retire_expired("p", now + 21)
        .await
        .expect("retire");
    assert_eq!(retired, vec![first.lists[0].id.clone()]);
    let gone = db
        .store
        .list(&retired[0])
        .await
        .expect("read")
        .expect("row kept");
    assert_eq!(gone.state, ListState::Retired);
    let cap = db.store.capacity("p").await.expect("capacity");
    assert_eq!((cap.lists.len(), cap.allocated), (1, 0));
    // Past its list's life a jti is new again, even before the sweep removed the entries.
    let replayed = replayed.expect("a request");
    assert_eq!(db.count("SELECT count(*) FROM entries").await, 200);
    let lease = claim(&db.store, "w3").await;
    let again = db.store.issue(&lease, &replayed).await.expect("issue");
    assert!(again.created, "{again:?}");
    assert_eq!(again.list_id, next.id);
    // The sweep drops its partition, and the keys that still name it.
    let dropped = db
        .store
        .drop_dead_partitions(std::time::Duration::from_secs(60))
        .await
        .expect("sweep");
    assert_eq!(dropped, retired);
    assert_eq!(db.count("SELECT count(*) FROM entries").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM issuance_keys").await, 1);
    let partition = format!("entries_{}", retired[0].to_ascii_lowercase());
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pg_class WHERE relname = '{partition}'"
        ))
        .await,
        0
    );
    // Its id is never reused: the row stays, and the primary key guards it.
    let client = db.client().await;
    let dup = client
        .execute(
            "INSERT INTO lists (id, pool, uri, format, bits, size, secret) VALUES ($1, 'p', 'x', 'Token', 2, 10, '\\x00000000000000000000000000000000')",
            &[&retired[0]],
        )
        .await;
    assert!(dup.is_err());
}

#[tokio::test]
async fn deletion_policies() {
    let db = with_pool(1_000, 100).await;
    let lease = claim(&db.store, "w").await;
    let issued = issue_one(&db.store, &lease).await;

    // Retain: issuance stops (the held lease is fenced, no new claim), revocation works.
    db.store
        .delete_pool("p", None, DeletionPolicy::Retain)
        .await
        .expect("retain");
    assert!(matches!(
        db.store.issue(&lease, &request("a", FAR_FUTURE)).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(
        db.store
            .claim_lease("p", "w", LEASE_TTL)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        db.store
            .ensure_capacity("p")
            .await
            .expect("ensure")
            .is_none()
    );
    assert!(matches!(
        db.store
            .revoke(&issued.uri, issued.idx, "a")
            .await
            .expect("revoke"),
        statuslist_store::RevokeOutcome::Revoked { .. }
    ));
    assert_eq!(db.store.capacity("p").await.expect("capacity").allocated, 1);

    // Applying the resource again resumes issuance.
    db.store
        .apply_pool(&pool_spec("p", &["a", "b"], 1_000, 100))
        .await
        .expect("apply");
    assert!(
        db.store
            .claim_lease("p", "w", LEASE_TTL)
            .await
            .expect("claim")
            .is_some()
    );

    // Delete: rows gone, the list answers as unknown, the issuer is gone.
    db.store
        .delete_pool("p", None, DeletionPolicy::Delete)
        .await
        .expect("delete");
    assert!(db.store.pool("p").await.expect("read").is_none());
    assert!(db.store.issuer("a").await.expect("read").is_none());
    assert_eq!(
        db.store
            .list(&issued.list_id)
            .await
            .expect("read")
            .expect("row")
            .state,
        ListState::Deleted
    );
    assert_eq!(
        db.store
            .revoke(&issued.uri, issued.idx, "a")
            .await
            .expect("revoke"),
        statuslist_store::RevokeOutcome::NotFound
    );
    db.store
        .drop_dead_partitions(std::time::Duration::from_secs(60))
        .await
        .expect("sweep");
    assert_eq!(db.count("SELECT count(*) FROM entries").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM issuance_keys").await, 0);
}

/// Four components starting at once on an empty database: one migrates, the others wait
/// for it (migration 20 builds an index concurrently, which waits for every open
/// snapshot: a start waiting in `pg_advisory_lock` would hold one), and every migration
/// is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .expect("an empty database");
    let config = statuslist_store::testing::config(&db.url);
    let results = futures_util::future::join_all((0..4).map(|_| Store::connect(&config))).await;
    for result in &results {
        assert!(result.is_ok(), "{:?}", result.as_ref().err());
    }
    let n = db.count("SELECT count(*) FROM schema_migrations").await;
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations")
        .count() as i64;
    assert_eq!(n, shipped, "each migration applied once");
    assert_eq!(entry_index(&db).await.as_deref(), Some(ENTRY_INDEX));
}

/// The definition of migration 20's index when it is there and valid.
const ENTRY_INDEX: &str = "CREATE INDEX issuance_keys_entry ON public.issuance_keys USING btree (list_id, idx) INCLUDE (client_id)";

async fn entry_index(db: &TestDb) -> Option<String> {
    db.client()
        .await
        .query_opt(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index
             WHERE indexrelid = to_regclass('issuance_keys_entry') AND indisvalid",
            &[],
        )
        .await
        .expect("read the index")
        .map(|row| row.get(0))
}

/// A build of migration 20's index that failed half-way (the process stopped, or as here
/// the build itself failed) leaves an invalid index of that name, and no version 20: the
/// next start drops it, builds the index and applies the migration.
#[tokio::test]
async fn a_half_built_index_is_built_again() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "DROP INDEX issuance_keys_entry;
             DELETE FROM schema_migrations WHERE version = 20;
             INSERT INTO issuance_keys (client_id, jti, list_id, idx) VALUES
                 ('a', gen_random_uuid(), '00000000000A', 1),
                 ('a', gen_random_uuid(), '00000000000A', 2);",
        )
        .await
        .expect("version 19 with keys");
    // Two keys of one client: a unique build over client_id fails, its index left invalid.
    client
        .batch_execute(
            "CREATE UNIQUE INDEX CONCURRENTLY issuance_keys_entry ON issuance_keys (client_id)",
        )
        .await
        .expect_err("duplicate client ids");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('issuance_keys_entry') AND NOT indisvalid")
            .await,
        1
    );
    let store = Store::connect(&statuslist_store::testing::config(&db.url))
        .await
        .expect("migrated");
    assert_eq!(entry_index(&db).await.as_deref(), Some(ENTRY_INDEX));
    assert_eq!(
        db.count("SELECT max(version)::bigint FROM schema_migrations")
            .await,
        20
    );
    drop(store);
}

#[tokio::test]
async fn config_changes_are_notified() {
    let db = TestDb::new().await;
    let (mut events, _task) = db.store.listen(&[CHANNEL_CONFIG]);
    assert_eq!(events.recv().await.expect("event"), Event::Connected);
    db.store
        .apply_pool(&pool_spec("p", &["a"], 1000, 100))
        .await
        .expect("apply");
    assert_eq!(
        events.recv().await.expect("event"),
        Event::Notification {
            channel: CHANNEL_CONFIG.into(),
            payload: "p".into()
        }
    );
}

/// The resource-identity fence: what a second operator replica with a stale view would
/// write is refused and changes nothing; a new resource of the same name is welcome.
#[tokio::test]
async fn stale_generations_and_deleted_resources_are_refused() {
    let db = TestDb::new().await;
    let spec = |uid: &str, generation: i64, clients: &[&str]| {
        let mut s = pool_spec("p", clients, 1000, 100);
        s.uid = Some(uid.into());
        s.generation = generation;
        s
    };
    let applied = db
        .store
        .apply_pool(&spec("uid-1", 2, &["a"]))
        .await
        .expect("apply");
    assert!(applied.changed);
    let again = db
        .store
        .apply_pool(&spec("uid-1", 2, &["a"]))
        .await
        .expect("apply");
    assert!(
        !again.changed,
        "an identical apply writes nothing and notifies nobody"
    );

    // An older generation of the same resource is refused; its issuers are not restored.
    let err = db
        .store
        .apply_pool(&spec("uid-1", 1, &["a", "old"]))
        .await
        .expect_err("generation 1 after 2");
    assert!(matches!(err, StoreError::Superseded(_)), "{err}");
    assert!(db.store.issuer("old").await.expect("read").is_none());

    // Deleted with Retain: a stale apply of the deleted resource does not resume issuance.
    db.store
        .delete_pool("p", Some("uid-1"), DeletionPolicy::Retain)
        .await
        .expect("delete");
    let err = db
        .store
        .apply_pool(&spec("uid-1", 3, &["a"]))
        .await
        .expect_err("deleted resource");
    assert!(matches!(err, StoreError::Superseded(_)), "{err}");
    assert!(
        !db.store
            .pool("p")
            .await
            .expect("read")
            .expect("kept")
            .issuing
    );

    // A new resource of the same name (new UID, generation 1) takes the pool over.
    db.store
        .apply_pool(&spec("uid-2", 1, &["a"]))
        .await
        .expect("new resource");
    let pool = db.store.pool("p").await.expect("read").expect("pool");
    assert!(pool.issuing);
    assert_eq!(pool.uid.as_deref(), Some("uid-2"));

    // A late cleanup for the old resource leaves the new one's pool alone.
    db.store
        .delete_pool("p", Some("uid-1"), DeletionPolicy::Delete)
        .await
        .expect("late cleanup");
    assert!(db.store.pool("p").await.expect("read").is_some());
}

/// A database made by the previous release (version 15, the baseline) is migrated with
/// what it holds: its revocations stay revocations and its pools do not allow suspension.
#[tokio::test]
async fn a_version_15_database_is_migrated_keeping_what_it_holds() {
    let db = TestDb::new().await;
    let baseline = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/0015_schema.sql"
    ))
    .expect("baseline");
    db.client()
        .await
        .batch_execute(&format!(
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public;
             CREATE TABLE schema_migrations (version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             {baseline}
             INSERT INTO schema_migrations (version) VALUES (15);
             INSERT INTO pools (name, format, bits, base_uri, entries_per_list, min_free_entries,
                 lease_size, ttl_seconds, validity_seconds, max_status_lifetime_seconds, generation)
             VALUES ('ns/old', 'Token', 2, 'https://s.example', 1000, 100, 100, 300, 3600, 86400, 1);
             INSERT INTO revocations (list_id, idx, version) VALUES ('00000000000A', 7, 3);"
        ))
        .await
        .expect("a version 15 database");
    let config = statuslist_store::testing::config(&db.url);
    let store = Store::connect(&config).await.expect("migrated");
    assert_eq!(
        db.count("SELECT max(version)::bigint FROM schema_migrations")
            .await,
        20
    );
    let pool = store.pool("ns/old").await.expect("read").expect("kept");
    assert!(!pool.settings.suspension);
    assert_eq!(
        db.count("SELECT count(*) FROM revocations WHERE list_id = '00000000000A' AND idx = 7 AND status = 1 AND version = 3")
            .await,
        1
    );
}

/// The schema starts at its baseline (version 15): a database left by a build from before
/// it (versions 1 to 14 applied) is refused with a clear error and left as it was, and so
/// is one from a newer build.
#[tokio::test]
async fn databases_from_before_the_baseline_or_a_newer_build_are_refused() {
    let db = TestDb::new().await;
    let config = statuslist_store::testing::config(&db.url);
    for (versions, expected) in [
        ("(1), (2), (14)", "predates the baseline schema"),
        ("(15), (99)", "newer than this binary knows"),
    ] {
        let client = db.client().await;
        client
            .batch_execute(&format!(
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public;
                 CREATE TABLE schema_migrations (version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now());
                 INSERT INTO schema_migrations (version) VALUES {versions};"
            ))
            .await
            .expect("an old schema");
        let Err(err) = Store::connect(&config).await else {
            panic!("{versions}: accepted");
        };
        let err = err.to_string();
        assert!(err.contains(expected), "{versions}: {err}");
        assert_eq!(
            db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                .await,
            1,
            "{versions}: nothing created beside schema_migrations"
        );
    }
}
