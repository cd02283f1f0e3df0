-- Version 20: a revocation batch finds its entries through their issuance keys, in one
-- statement planned once per session, whatever the lists it names.
--
-- Version 17 looked each list's entries up in that list's partition with dynamic SQL,
-- parsed and planned at every call: a batch of revocations interleaved over many lists
-- names nearly as many lists as it has rows, so each revocation paid a statement's
-- parsing, planning and start-up (and the loop around it). A statement over the
-- partitioned `entries` itself cannot be kept instead: a generic plan over it locks and
-- starts every partition there is.
--
-- Every entry has its issuance key, written in the same statement (issuance, the
-- single-row fallback, a failover's write-back), both kept while the list is live and
-- removed only once it is not (`Store::drop_dead_partitions`, a repeat meeting a dead
-- list's key). So for a live list, "entry idx of list L is client C's" is "a key names
-- (L, idx) for C". The index below answers that in one probe; migration 20 builds it
-- CONCURRENTLY before this file runs (see `migrations.rs`): issuance goes on during the
-- build. It costs an issuance one more index entry.
--
-- The lists are locked as before (id order, FOR NO KEY UPDATE); the answers, the
-- versions and the notifications are those of version 17. Same signature: workers of
-- version 19 go on calling it.
DO $check$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_index
                   WHERE indexrelid = to_regclass('issuance_keys_entry') AND indisvalid) THEN
        RAISE EXCEPTION 'index issuance_keys_entry is missing or invalid: it is built before this migration';
    END IF;
END
$check$;

CREATE OR REPLACE FUNCTION statuslist_revoke(p_uri text[], p_idx bigint[], p_client text[], p_channel text)
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
    t AS (SELECT DISTINCT ON (l.id, r.idx) r.n, r.idx, l.id AS list_id, l.version
          FROM r JOIN lists l ON l.uri = r.uri AND l.state IN ('Active', 'Full')
          JOIN issuance_keys k ON k.list_id = l.id AND k.idx = r.idx AND k.client_id = r.client_id
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
