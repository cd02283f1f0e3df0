-- statuslist schema, version 12: every lookup in one list's entries plans that list's
-- partition alone.
--
-- A statement that reads `entries` correlated on a list it finds as it runs (a pool's
-- lists, their held leases) cannot be pruned when it is planned: the planner plans a
-- scan of every partition there is and prunes them when the statement runs. Planning
-- grows with the lists of the whole database, not with the work: measured with 72 lists,
-- the operator's retire check planned for 22.9 ms and ran for 1.5 ms, on every reconcile
-- pass of every pool. These functions read one list's partition, named by its id, with a
-- statement planned for that table alone. STABLE: they see the calling statement's
-- snapshot, as the subqueries they replace did. A list without a partition (none is
-- Active or Full, but the functions do not assume it) has no entries.

-- The partition of list `p_list`, or NULL when there is none.
CREATE FUNCTION statuslist_entries_partition(p_list text) RETURNS regclass
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    IF p_list !~ '^[0-9A-F]{12}$' THEN
        RAISE EXCEPTION 'not a list id: %', p_list;
    END IF;
    RETURN to_regclass('entries_' || lower(p_list));
END
$fn$;

-- Entries of list `p_list` at positions in [p_from, p_to): a range scan of its position index.
CREATE FUNCTION statuslist_entries_in(p_list text, p_from bigint, p_to bigint) RETURNS bigint
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    part regclass := statuslist_entries_partition(p_list);
    n bigint;
BEGIN
    IF part IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE position >= $1 AND position < $2', part)
        INTO n USING p_from, p_to;
    RETURN n;
END
$fn$;

-- One past the highest position issued in [p_from, p_to) of list `p_list`, NULL when none is.
CREATE FUNCTION statuslist_next_position(p_list text, p_from bigint, p_to bigint) RETURNS bigint
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    part regclass := statuslist_entries_partition(p_list);
    n bigint;
BEGIN
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT max(position) + 1 FROM %s WHERE position >= $1 AND position < $2', part)
        INTO n USING p_from, p_to;
    RETURN n;
END
$fn$;

-- The latest `statusExpiry` of list `p_list`'s entries, NULL when it has none (reads
-- every entry: called once per list, when it becomes Full).
CREATE FUNCTION statuslist_latest_expiry(p_list text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    part regclass := statuslist_entries_partition(p_list);
    n bigint;
BEGIN
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT max(status_expiry) FROM %s', part) INTO n;
    RETURN n;
END
$fn$;

-- Whether list `p_list` has an entry whose `statusExpiry` is `p_from` or later (any
-- entry when `p_from` is NULL): stops at the first it finds.
CREATE FUNCTION statuslist_has_entries(p_list text, p_from bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    part regclass := statuslist_entries_partition(p_list);
    found boolean;
BEGIN
    IF part IS NULL THEN
        RETURN false;
    END IF;
    IF p_from IS NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', part) INTO found;
    ELSE
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE status_expiry >= $1)', part)
            INTO found USING p_from;
    END IF;
    RETURN found;
END
$fn$;

-- The batch revocation of migration 10, probing each revocation's entry in its own list's
-- partition alone. Its rows joined the entries through the list row (`x.list_id = l.id`),
-- which the partition scans could not take as a parameter: every row probed every locked
-- list's partition (20 rows over 13 lists: 260 index probes, 3.0 ms; now 20, 1.3 ms).
-- A list's URI ends in its id (see `ensure_capacity`), so each row names its partition
-- itself; a URI that does not end in its list's id matches no list, as before.
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
    WITH r AS (SELECT r.*, substring(r.uri FROM '[^/]*$') AS list_id
               FROM unnest(p_uri, p_idx, p_client) WITH ORDINALITY AS r(uri, idx, client_id, n)),
    t AS (SELECT DISTINCT ON (l.id, r.idx) r.n, r.idx, l.id AS list_id, l.version
          FROM r JOIN lists l ON l.id = r.list_id AND l.uri = r.uri AND l.state IN ('Active', 'Full')
          JOIN issuers i ON i.client_id = r.client_id AND i.pool = l.pool
          JOIN entries x ON x.list_id = r.list_id AND x.idx = r.idx AND x.client_id = r.client_id
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
