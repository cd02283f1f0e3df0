-- Version 17: a revocation batch looks its entries up for less.
--
-- `statuslist_revoke` looked each locked list's entries up with a statement planned on
-- every call (a partition is named by its list, so the statement is dynamic), and before
-- each it called `statuslist_entries_partition` (a PL/pgSQL call, a pattern match and a
-- catalog lookup), printed the partition's name from its OID, and picked the list's
-- indexes out of the whole batch by matching every row's URI with a pattern. A batch of
-- revocations interleaved over many lists names nearly as many lists as it has rows, so
-- that was paid about once per revocation: 16 rows over ~12 of 60 lists took 2.4 ms of
-- the function, 1.5 ms now (median of 100 calls, one session, PostgreSQL 15,
-- 2026-12-07); docs/performance.md has the service's figures.
--
-- Now the lists are locked as before and their URIs kept; the batch's indexes are
-- grouped by list in one statement (exact URI equality, the lists' unique column); each
-- list's partition is looked up by name (list ids are checked upper-case hex, so the name
-- needs no quoting) and probed once. The rest, the answers and the locking order are as
-- in version 16. Same signature: workers of version 16 go on calling it.
CREATE OR REPLACE FUNCTION statuslist_revoke(p_uri text[], p_idx bigint[], p_client text[], p_channel text)
RETURNS TABLE (out_n bigint, out_at bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
    v_lists text[];
    v_uris text[];
    v_list text;
    v_want bigint[];
    v_idx bigint[];
    v_client text[];
    v_found_list text[] := '{}';
    v_found_idx bigint[] := '{}';
    v_found_client text[] := '{}';
BEGIN
    SELECT array_agg(locked.id), array_agg(locked.uri) INTO v_lists, v_uris FROM (
        SELECT l.id, l.uri FROM (SELECT DISTINCT u.uri FROM unnest(p_uri) AS u(uri)) AS u
        JOIN lists l ON l.uri = u.uri
        WHERE l.state IN ('Active', 'Full')
        ORDER BY l.id
        FOR NO KEY UPDATE OF l) AS locked;
    IF v_lists IS NULL THEN
        RETURN;
    END IF;
    FOR v_list, v_want IN
        SELECT l.id, array_agg(r.idx)
        FROM unnest(v_lists, v_uris) AS l(id, uri)
        JOIN unnest(p_uri, p_idx) AS r(uri, idx) ON r.uri = l.uri
        GROUP BY l.id
    LOOP
        -- `lists.id` is CHECKed '^[0-9A-F]{12}$': the name is that of
        -- `statuslist_add_entries_partition`, safe to splice.
        CONTINUE WHEN to_regclass('entries_' || lower(v_list)) IS NULL;
        EXECUTE 'SELECT array_agg(e.idx), array_agg(e.client_id) FROM entries_' || lower(v_list)
                || ' e WHERE e.idx = ANY ($1)'
            INTO v_idx, v_client USING v_want;
        IF v_idx IS NOT NULL THEN
            v_found_list := v_found_list || array_fill(v_list, ARRAY[cardinality(v_idx)]);
            v_found_idx := v_found_idx || v_idx;
            v_found_client := v_found_client || v_client;
        END IF;
    END LOOP;
    RETURN QUERY
    WITH r AS (SELECT r.* FROM unnest(p_uri, p_idx, p_client) WITH ORDINALITY AS r(uri, idx, client_id, n)),
    x AS (SELECT * FROM unnest(v_found_list, v_found_idx, v_found_client) AS x(list_id, idx, client_id)),
    t AS (SELECT DISTINCT ON (l.id, r.idx) r.n, r.idx, l.id AS list_id, l.version
          FROM r JOIN lists l ON l.uri = r.uri AND l.state IN ('Active', 'Full')
          JOIN x ON x.list_id = l.id AND x.idx = r.idx AND x.client_id = r.client_id
          JOIN issuers i ON i.client_id = r.client_id AND i.pool = l.pool
          ORDER BY l.id, r.idx, r.n),
    e AS (INSERT INTO revocations AS rv (list_id, idx, version)
          SELECT t.list_id, t.idx, t.version + 1 FROM t
          ON CONFLICT (list_id, idx) DO UPDATE
              SET status = 1, version = EXCLUDED.version, revoked_at = EXCLUDED.revoked_at
              WHERE rv.status <> 1
          RETURNING list_id, idx, revoked_at),
    v AS (UPDATE lists l SET version = l.version + 1,
                 revoked = l.revoked + (SELECT count(*) FROM e WHERE e.list_id = l.id)
          WHERE l.id IN (SELECT e.list_id FROM e) RETURNING l.id),
    nt AS (SELECT pg_notify(p_channel, v.id) FROM v WHERE p_channel IS NOT NULL)
    SELECT t.n, extract(epoch FROM e.revoked_at)::bigint
    FROM e JOIN t ON t.list_id = e.list_id AND t.idx = e.idx
    CROSS JOIN (SELECT count(*) FROM nt) AS notified;
END
$fn$;
