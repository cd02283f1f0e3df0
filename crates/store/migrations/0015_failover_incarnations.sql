-- Never twice through a failover (docs/failover.md).
--
-- A database's incarnation is its system identifier and its WAL timeline: a promoted
-- standby, a point-in-time restore and a restore into a new cluster each start a new one,
-- and each may lack writes the old one acknowledged. A list is claimable only in the
-- incarnation it was provisioned in, and a lease issues only in the incarnation it was
-- claimed in: no position that may have been handed out before a failover is handed out
-- after it, whatever the replication mode. The lists left Active by an earlier
-- incarnation are sealed (Full, leases gone) and fresh ones provisioned.

CREATE FUNCTION statuslist_incarnation() RETURNS text
LANGUAGE sql STABLE
AS $fn$
    SELECT (SELECT system_identifier FROM pg_control_system())::text || '/'
        || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text
$fn$;

ALTER TABLE lists ADD COLUMN incarnation text;
UPDATE lists SET incarnation = statuslist_incarnation();
ALTER TABLE lists ALTER COLUMN incarnation SET DEFAULT statuslist_incarnation(),
                  ALTER COLUMN incarnation SET NOT NULL;

-- Set by each claim; a lease never claimed has none.
ALTER TABLE leases ADD COLUMN incarnation text;
UPDATE leases SET incarnation = statuslist_incarnation() WHERE holder IS NOT NULL;

-- Every incarnation the service has written to, first seen when.
CREATE TABLE incarnations (
    incarnation text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
INSERT INTO incarnations (incarnation) VALUES (statuslist_incarnation());

-- One row per list sealed because it was issuing in an earlier incarnation: which
-- workers held leases of it then (as this database knows), and how many positions were
-- left unused.
CREATE TABLE failover_seals (
    list_id text PRIMARY KEY REFERENCES lists (id),
    pool text,
    incarnation text NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now(),
    holders text[] NOT NULL,
    unused bigint NOT NULL
);

-- What each worker wrote back after a failover: one row per worker and incarnation.
CREATE TABLE failover_restores (
    incarnation text NOT NULL,
    worker text NOT NULL,
    restored_at timestamptz NOT NULL DEFAULT now(),
    issuances_restored bigint NOT NULL,
    issuances_present bigint NOT NULL,
    issuances_unrestorable bigint NOT NULL,
    revocations_restored bigint NOT NULL,
    revocations_present bigint NOT NULL,
    revocations_unrestorable bigint NOT NULL,
    -- Lists an acknowledgement could not be written back to.
    unrestorable_lists text[] NOT NULL,
    PRIMARY KEY (incarnation, worker)
);

-- Seals the lists still Active from earlier incarnations, in id order (as revocation
-- batches and `mark_full` lock list rows); returns them with their pools. Concurrent
-- callers seal each list once.
CREATE FUNCTION statuslist_seal_past_incarnations() RETURNS TABLE (out_pool text, out_list text)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_now text := statuslist_incarnation();
    v_lists text[];
BEGIN
    INSERT INTO incarnations (incarnation) VALUES (v_now) ON CONFLICT DO NOTHING;
    SELECT array_agg(c.id) INTO v_lists FROM (
        SELECT l.id FROM lists l
        WHERE l.state = 'Active' AND l.incarnation <> v_now
        ORDER BY l.id
        FOR NO KEY UPDATE OF l) AS c;
    IF v_lists IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO failover_seals (list_id, pool, incarnation, holders, unused)
    SELECT l.id, l.pool, v_now,
           coalesce((SELECT array_agg(DISTINCT le.holder ORDER BY le.holder) FROM leases le
                     WHERE le.list_id = l.id AND le.holder IS NOT NULL), '{}'),
           coalesce((SELECT sum(le.end_pos - le.start_pos) FROM leases le WHERE le.list_id = l.id), 0)
    FROM lists l WHERE l.id = ANY (v_lists)
    ON CONFLICT (list_id) DO NOTHING;
    DELETE FROM leases WHERE list_id = ANY (v_lists);
    RETURN QUERY
    UPDATE lists l SET state = 'Full', max_status_expiry = coalesce(statuslist_latest_expiry(l.id), 0)
    WHERE l.id = ANY (v_lists)
    RETURNING l.pool, l.id;
END
$fn$;

-- Writes back revocations a worker acknowledged before a failover, with their original
-- time: for each, 'restored', 'orphan' (restored, but its entry is not there: its
-- issuance was lost with a worker that died too; the list still shows the slot revoked,
-- and a sealed list never hands it out again), 'present' (revoked already) or 'absent'
-- (its list is not live here). Lists are locked in id order, and each touched list's
-- version and count move once, as in `statuslist_revoke`.
CREATE FUNCTION statuslist_restore_revocations(p_list text[], p_idx bigint[], p_at bigint[])
RETURNS TABLE (out_list text, out_idx bigint, out_outcome text)
LANGUAGE plpgsql
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM lists l
    WHERE l.id IN (SELECT DISTINCT u.id FROM unnest(p_list) AS u(id)) AND l.state IN ('Active', 'Full')
    ORDER BY l.id
    FOR NO KEY UPDATE OF l;
    RETURN QUERY
    WITH r AS (SELECT DISTINCT ON (r.list_id, r.idx) r.list_id, r.idx, r.at
               FROM unnest(p_list, p_idx, p_at) AS r(list_id, idx, at)
               ORDER BY r.list_id, r.idx, r.at),
    t AS (SELECT r.list_id, r.idx, r.at, l.version,
                 EXISTS (SELECT 1 FROM entries e WHERE e.list_id = r.list_id AND e.idx = r.idx) AS has_entry,
                 EXISTS (SELECT 1 FROM revocations v WHERE v.list_id = r.list_id AND v.idx = r.idx) AS revoked
          FROM r LEFT JOIN lists l ON l.id = r.list_id AND l.state IN ('Active', 'Full')),
    ins AS (INSERT INTO revocations (list_id, idx, version, revoked_at)
            SELECT t.list_id, t.idx, t.version + 1, to_timestamp(t.at) FROM t
            WHERE t.version IS NOT NULL AND NOT t.revoked
            ON CONFLICT (list_id, idx) DO NOTHING
            RETURNING list_id, idx),
    v AS (UPDATE lists l SET version = l.version + 1,
                 revoked = l.revoked + (SELECT count(*) FROM ins WHERE ins.list_id = l.id)
          WHERE l.id IN (SELECT ins.list_id FROM ins) RETURNING l.id)
    SELECT t.list_id, t.idx,
           CASE WHEN ins.idx IS NOT NULL AND t.has_entry THEN 'restored'
                WHEN ins.idx IS NOT NULL THEN 'orphan'
                WHEN t.revoked AND t.version IS NOT NULL THEN 'present'
                ELSE 'absent' END
    FROM t LEFT JOIN ins ON ins.list_id = t.list_id AND ins.idx = t.idx
    CROSS JOIN (SELECT count(*) FROM v) AS moved;
END
$fn$;
