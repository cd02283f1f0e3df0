-- statuslist schema, version 10: `entries` partitioned by list.
--
-- One heap with three unique indexes on random keys (the idx permutation, the position,
-- the jti UUID) grows with everything ever issued: once its indexes outgrow memory every
-- insert is random I/O, and retiring a list deleted its rows one by one (bloat, vacuum).
-- Now each list's entries are a partition of their own (`entries_<id>`, created with the
-- list): its two indexes are the list's alone, small and hot while the list is Active,
-- and retiring the list is a partition drop.
--
-- A unique index of a partitioned table must include the partition key, so idempotency,
-- which spans every list of every pool, moves to `issuance_keys` (client_id, jti) ->
-- (list_id, idx), written in the same statement as the entry. A list's keys are removed
-- before its partition is dropped, found through the partition's (client_id, jti) (no
-- index by list on `issuance_keys`: one more index tuple per entry, for what happens once
-- per list).
-- Each partition's indexes are on `idx` and `position` alone: a partition holds one list
-- (its CHECK says which), so they are the former (list_id, idx) and (list_id, position)
-- guards, without repeating the list id in every index tuple.
--
-- Existing rows are copied (a database of N entries writes about N rows twice: plan the
-- upgrade for a quiet hour on large ones; the migration runs in one transaction).

CREATE TABLE issuance_keys (
    client_id text NOT NULL,
    jti       uuid NOT NULL,
    list_id   text NOT NULL,
    idx       bigint NOT NULL,
    PRIMARY KEY (client_id, jti)
);

ALTER TABLE entries RENAME TO entries_unpartitioned;

-- Fixed-width columns first: no alignment padding between them.
CREATE TABLE entries (
    idx           bigint NOT NULL CHECK (idx >= 0),
    position      bigint NOT NULL CHECK (position >= 0),
    status_expiry bigint NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    jti           uuid NOT NULL,
    list_id       text NOT NULL,
    client_id     text NOT NULL
) PARTITION BY LIST (list_id);

-- The partition of list `p_list`, created empty with its indexes and attached (which
-- takes a SHARE UPDATE EXCLUSIVE lock on `entries`: issuance into other lists goes on).
-- Idempotent.
CREATE FUNCTION statuslist_add_entries_partition(p_list text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := 'entries_' || lower(p_list);
BEGIN
    IF p_list !~ '^[0-9A-F]{12}$' THEN
        RAISE EXCEPTION 'not a list id: %', p_list;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                        CHECK (list_id = %L), PRIMARY KEY (idx), UNIQUE (position))', part, p_list);
    EXECUTE format('ALTER TABLE entries ATTACH PARTITION %I FOR VALUES IN (%L)', part, p_list);
END
$fn$;

-- Drops the partition of list `p_list` (its entries with it), if there is one. The drop
-- takes an ACCESS EXCLUSIVE lock on `entries`, which queues every issuance behind it: it
-- waits at most `p_lock_timeout` for it (SQLSTATE 55P03 past that: the caller tries again
-- later), and the caller commits at once. The list's idempotency keys are removed first,
-- by the caller, in bounded chunks (see `Store::drop_dead_partitions`).
CREATE FUNCTION statuslist_drop_entries_partition(p_list text, p_lock_timeout text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_list !~ '^[0-9A-F]{12}$' THEN
        RAISE EXCEPTION 'not a list id: %', p_list;
    END IF;
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    EXECUTE format('DROP TABLE IF EXISTS %I', 'entries_' || lower(p_list));
END
$fn$;

SELECT statuslist_add_entries_partition(id) FROM lists
WHERE state IN ('Active', 'Full') OR id IN (SELECT DISTINCT list_id FROM entries_unpartitioned)
ORDER BY id;

INSERT INTO issuance_keys (client_id, jti, list_id, idx)
SELECT client_id, jti, list_id, idx FROM entries_unpartitioned;
INSERT INTO entries (idx, position, status_expiry, issued_at, jti, list_id, client_id)
SELECT idx, position, status_expiry, issued_at, jti, list_id, client_id FROM entries_unpartitioned;
DROP TABLE entries_unpartitioned;

-- The batch revocation of migration 8, reading `entries` only in the partitions of the
-- lists it locked: their ids are known when its main statement is planned (a custom plan,
-- every call), so the plan holds those partitions and no other — a generic plan would hold,
-- and lock on every call, every partition there is.
CREATE OR REPLACE FUNCTION statuslist_revoke(p_uri text[], p_idx bigint[], p_client text[], p_channel text)
RETURNS TABLE (out_n bigint, out_at bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
    v_lists text[];
BEGIN
    SELECT array_agg(locked.id) INTO v_lists FROM (
        SELECT l.id FROM lists l
        WHERE l.uri = ANY (p_uri) AND l.state IN ('Active', 'Full')
        ORDER BY l.id
        FOR NO KEY UPDATE) AS locked;
    IF v_lists IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH r AS (SELECT * FROM unnest(p_uri, p_idx, p_client) WITH ORDINALITY AS r(uri, idx, client_id, n)),
    t AS (SELECT DISTINCT ON (l.id, r.idx) r.n, r.idx, l.id AS list_id, l.version
          FROM r JOIN lists l ON l.uri = r.uri AND l.state IN ('Active', 'Full')
          JOIN issuers i ON i.client_id = r.client_id AND i.pool = l.pool
          JOIN entries x ON x.list_id = l.id AND x.idx = r.idx AND x.client_id = r.client_id
          WHERE x.list_id = ANY (v_lists)
            AND NOT EXISTS (SELECT 1 FROM revocations rv WHERE rv.list_id = l.id AND rv.idx = r.idx)
          ORDER BY l.id, r.idx, r.n),
    e AS (INSERT INTO revocations (list_id, idx, version)
          SELECT t.list_id, t.idx, t.version + 1 FROM t
          ON CONFLICT (list_id, idx) DO NOTHING
          RETURNING list_id, idx, revoked_at),
    v AS (UPDATE lists l SET version = l.version + 1,
                 revoked = l.revoked + (SELECT count(*) FROM e WHERE e.list_id = l.id)
          WHERE l.id IN (SELECT e.list_id FROM e) RETURNING l.id),
    nt AS (SELECT pg_notify(p_channel, v.id) FROM v)
    SELECT t.n, extract(epoch FROM e.revoked_at)::bigint
    FROM e JOIN t ON t.list_id = e.list_id AND t.idx = e.idx
    CROSS JOIN (SELECT count(*) FROM nt) AS notified;
END
$fn$;
