-- statuslist schema, version 14: the batch revocation keeps one plan per connection, and
-- can leave its notification to the caller, after the commit.
--
-- Planning: the batch's main statement (seven relations and set-returning functions,
-- DISTINCT ON, two data-modifying parts) took 0.9-1.4 ms to plan on every call (custom
-- plans, version 13), more than it took to run (about 0.9 ms for ~8 rows); measured with
-- pg_stat_statements under 64 concurrent revocations over 11 lists. A plan kept per
-- connection was refused in version 13 because the planner made it from the statistics of
-- the moment: made while `revocations` was empty, it scanned that table, and the first
-- revocation run on a list ran at 1,612/s. A batch holds at most 64 rows, so the right
-- plan does not depend on the statistics: nested loops over index probes. The function
-- now asks for exactly that (sequential scans, hash and merge joins priced out: still
-- taken where nothing else can do the job, never in place of an index) and keeps the
-- plan for the connection's life. Two parts of version 13 could still go wrong with a
-- plan made from an empty database, and are gone: the check that an entry is not revoked
-- yet (an anti-join on `revocations`: with no statistics the planner may probe the
-- `(list_id, version)` index on the list alone, reading every revocation of the list for
-- every row — measured, a fresh database fell from 2,061/s to 744/s as one list filled)
-- was redundant with `ON CONFLICT DO NOTHING`, which skips those rows from the same
-- primary key; and the lists are locked by joining the batch's distinct URIs to their
-- unique index (a scan of every list in id order, sorted for free, was the other plan).
-- Measured side by side (2 cores, everything on them), version 13 against a kept plan:
-- interleaved over 11 lists 4,915-4,983/s -> 6,708-7,549/s, PostgreSQL CPU per
-- revocation 218-220 us -> 127-147 us; one list 7,922/s -> 9,343-9,999/s. On a fresh
-- database with this version: one list's first run 8,441/s, interleaved 6,126-7,355/s.
--
-- Notification: NOTIFY takes a database-wide lock at commit and holds it until the
-- commit record is flushed, so notifying transactions commit one at a time: every
-- worker's revocation batches queued behind each other's WAL flush (and behind every
-- publisher storing a list), where they could have shared one. With `p_channel` NULL the
-- function notifies nothing; the worker sends the notification after the commit, in a
-- transaction of its own that waits for no WAL flush (it writes nothing but its commit
-- record; see `Store::revoke`). A worker that stops
-- between the two leaves the change to the publishers' own pass, which runs every second
-- anyway. A worker of version 13 still passes its channel and still notifies in the
-- transaction. Same signature and answers as version 10.
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
    v_list text;
    v_part regclass;
    v_idx bigint[];
    v_client text[];
    v_found_list text[] := '{}';
    v_found_idx bigint[] := '{}';
    v_found_client text[] := '{}';
BEGIN
    SELECT array_agg(locked.id) INTO v_lists FROM (
        SELECT l.id FROM (SELECT DISTINCT u.uri FROM unnest(p_uri) AS u(uri)) AS u
        JOIN lists l ON l.uri = u.uri
        WHERE l.state IN ('Active', 'Full')
        ORDER BY l.id
        FOR NO KEY UPDATE OF l) AS locked;
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
          ORDER BY l.id, r.idx, r.n),
    e AS (INSERT INTO revocations (list_id, idx, version)
          SELECT t.list_id, t.idx, t.version + 1 FROM t
          ON CONFLICT (list_id, idx) DO NOTHING
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
