-- Version 18: a revocation batch whose entries the worker looked up first.
--
-- `statuslist_revoke` looks the batch's entries up inside the function: a dynamic
-- statement per list the batch names (a list's entries are its own partition), parsed and
-- planned at every call. In a batch interleaved over lists, which names nearly as many
-- lists as it has rows, that was still about four fifths of the function after version 17
-- (16 rows over ~14 of 60 lists, PostgreSQL 15, 2026-12-07: 2.1 ms a batch with the
-- lookup, 0.4 ms without). Entries never change once written, so the lookup need not be
-- inside the batch's locks: the worker looks each list's entries up with a statement it
-- prepared once on its connection (parsed once), then calls this with what it found.
-- Ownership is still decided here: a found entry counts only for a batch row that names
-- its list (by URI, a live list, locked), its index and its owner, who must be registered
-- in the list's pool now.
--
-- `p_found_list`, `p_found_idx`, `p_found_client`: the entries found (list id, index,
-- owner) among the batch's. An entry the caller did not find is not revoked; a list
-- retired since the lookup is not live below, so its entries are not revoked either.
-- Locking, answers and notification as `statuslist_revoke` (version 17), which workers of
-- the previous version go on calling, and which `/revoke-batch` still uses.
CREATE FUNCTION statuslist_revoke_found(p_uri text[], p_idx bigint[], p_client text[],
                                        p_found_list text[], p_found_idx bigint[], p_found_client text[],
                                        p_channel text)
RETURNS TABLE (out_n bigint, out_at bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM (
        SELECT l.id FROM (SELECT DISTINCT u.uri FROM unnest(p_uri) AS u(uri)) AS u
        JOIN lists l ON l.uri = u.uri
        WHERE l.state IN ('Active', 'Full')
        ORDER BY l.id
        FOR NO KEY UPDATE OF l) AS locked;
    RETURN QUERY
    WITH r AS (SELECT r.* FROM unnest(p_uri, p_idx, p_client) WITH ORDINALITY AS r(uri, idx, client_id, n)),
    x AS (SELECT * FROM unnest(p_found_list, p_found_idx, p_found_client) AS x(list_id, idx, client_id)),
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
