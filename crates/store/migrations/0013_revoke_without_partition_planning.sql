-- statuslist schema, version 13: the batch revocation plans no partition.
--
-- Its main statement joined `entries`, so it was planned anew on every call (a custom
-- plan holding the partitions of the lists it locked; a generic plan would hold and lock
-- every partition there is): measured with pg_stat_statements under 64 concurrent
-- revocations over several lists, 1.2 ms of planning per batch of ~18 rows, more than the
-- statement's execution (1.1 ms), on 2 cores shared with everything else. Now the entries
-- are looked up first, one statement per locked list against that list's partition by
-- name (`idx = ANY(..)`: one index probe per revocation), and the main statement joins
-- what they found: it names no partitioned table, so planning it is cheap. It is still
-- planned on every call (a custom plan): a plan kept per connection would be made from
-- the statistics of the moment (an empty `revocations` at first) and kept until the next
-- ANALYZE. The lookups run after the locks, in the same transaction, as the join did.
-- The join itself also went through the list row (`x.list_id = l.id`), which the
-- partition scans could not take as a parameter: every row probed every locked list's
-- partition (20 rows over 13 lists: 260 index probes). Each row now names its list from
-- its URI (a list's URI ends in its id, see `ensure_capacity`; a URI that does not
-- matches no list). Same signature and answers as version 10.
CREATE OR REPLACE FUNCTION statuslist_revoke(p_uri text[], p_idx bigint[], p_client text[], p_channel text)
RETURNS TABLE (out_n bigint, out_at bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
    v_lists text[];
    v_list text;
    v_part regclass;
    v_idx bigint[];
    v_client text[];
    v_found_list text[] := '{}';
    v_found_idx bigint[] := '{}';
    v_found_client text[] := '{}';
BEGIN
    SELECT array_agg(locked.id) INTO v_lists FROM (
        SELECT l.id FROM lists l
        WHERE l.uri = ANY (p_uri) AND l.state IN ('Active', 'Full')
        ORDER BY l.id
        FOR NO KEY UPDATE) AS locked;
    IF v_lists IS NULL THEN
        RETURN;
    END IF;
    -- A list's URI ends in its id (see `ensure_capacity`); a URI that does not matches
    -- no list below.
    FOREACH v_list IN ARRAY v_lists LOOP
        v_part := statuslist_entries_partition(v_list);
        CONTINUE WHEN v_part IS NULL;
        EXECUTE format('SELECT array_agg(e.idx), array_agg(e.client_id) FROM %s e WHERE e.idx = ANY ($1)', v_part)
            INTO v_idx, v_client
            USING ARRAY(SELECT r.idx FROM unnest(p_uri, p_idx) AS r(uri, idx)
                        WHERE substring(r.uri FROM '[^/]*$') = v_list);
        IF v_idx IS NOT NULL THEN
            v_found_list := v_found_list || array_fill(v_list, ARRAY[cardinality(v_idx)]);
            v_found_idx := v_found_idx || v_idx;
            v_found_client := v_found_client || v_client;
        END IF;
    END LOOP;
    RETURN QUERY
    WITH r AS (SELECT r.*, substring(r.uri FROM '[^/]*$') AS list_id
               FROM unnest(p_uri, p_idx, p_client) WITH ORDINALITY AS r(uri, idx, client_id, n)),
    x AS (SELECT * FROM unnest(v_found_list, v_found_idx, v_found_client) AS x(list_id, idx, client_id)),
    t AS (SELECT DISTINCT ON (l.id, r.idx) r.n, r.idx, l.id AS list_id, l.version
          FROM r JOIN x ON x.list_id = r.list_id AND x.idx = r.idx AND x.client_id = r.client_id
          JOIN lists l ON l.id = r.list_id AND l.uri = r.uri AND l.state IN ('Active', 'Full')
          JOIN issuers i ON i.client_id = r.client_id AND i.pool = l.pool
          WHERE NOT EXISTS (SELECT 1 FROM revocations rv WHERE rv.list_id = l.id AND rv.idx = r.idx)
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
