-- Version 16: suspension and reinstatement (docs/api.md, "Suspension").
--
-- A pool opts in (`pools.suspension`, the StatusList's `spec.suspension`). An entry's row
-- in `revocations` now holds its current non-initial status: 1 INVALID (final, as
-- before), 2 SUSPENDED, or 0 VALID again after a reinstatement. A reinstatement updates
-- the row instead of deleting it, so that a publisher holding version V still reads the
-- change (`version > V`). `revoked_at` is the time of the row's latest change;
-- `lists.revoked` counts status 1 alone.

ALTER TABLE pools ADD COLUMN suspension boolean NOT NULL DEFAULT false;

-- 0 is now a stored status (a reinstated entry). Every row already satisfies it.
ALTER TABLE revocations DROP CONSTRAINT revocations_status_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_status_check CHECK (status BETWEEN 0 AND 255);

-- As in version 15, except that an entry suspended or reinstated is revoked too (its row
-- becomes status 1, with this call's version and time): revocation stays final and wins
-- over everything else. Answers as before.
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
    -- A list's URI ends in its id; a URI that does not matches no list below.
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

-- Suspends (`p_status` 2) or reinstates (`p_status` 0) entry `p_idx` of the list at
-- `p_uri` for client `p_client`, under the rules of `statuslist_revoke`: the entry must be
-- the client's, in a live list of the pool the client is registered in now, and that pool
-- must allow suspension. The list row is locked first (as every revocation does), then the
-- entry's status row. Answers one row:
-- * 'changed' and the time (unix seconds, and microseconds for the failover journal): the
--   status moved (version and list version moved once);
-- * 'unchanged' and the time of the entry's latest change (NULL for an entry never
--   suspended that is asked to be reinstated): it had that status already;
-- * 'revoked' and the revocation time: revocation is final, nothing changed;
-- * 'disabled': the list's pool does not allow suspension;
-- * 'absent': no such entry for this client.
CREATE FUNCTION statuslist_set_status(p_uri text, p_idx bigint, p_client text, p_status smallint)
RETURNS TABLE (out_outcome text, out_at bigint, out_at_us bigint)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_list text;
    v_version bigint;
    v_allowed boolean;
    v_part regclass;
    v_owner text;
    v_status smallint;
    v_at timestamptz;
BEGIN
    IF p_status NOT IN (0, 2) THEN
        RAISE EXCEPTION 'not a suspension status: %', p_status;
    END IF;
    SELECT l.id, l.version, p.suspension INTO v_list, v_version, v_allowed
    FROM lists l
    JOIN pools p ON p.name = l.pool
    JOIN issuers i ON i.client_id = p_client AND i.pool = l.pool
    WHERE l.uri = p_uri AND l.state IN ('Active', 'Full')
    FOR NO KEY UPDATE OF l;
    IF v_list IS NULL THEN
        RETURN QUERY SELECT 'absent'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    v_part := statuslist_entries_partition(v_list);
    IF v_part IS NOT NULL THEN
        EXECUTE format('SELECT e.client_id FROM %s e WHERE e.idx = $1', v_part) INTO v_owner USING p_idx;
    END IF;
    IF v_owner IS DISTINCT FROM p_client THEN
        RETURN QUERY SELECT 'absent'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF NOT v_allowed THEN
        RETURN QUERY SELECT 'disabled'::text, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    SELECT rv.status, rv.revoked_at INTO v_status, v_at
    FROM revocations rv WHERE rv.list_id = v_list AND rv.idx = p_idx
    FOR UPDATE;
    IF v_status = 1 THEN
        RETURN QUERY SELECT 'revoked'::text, extract(epoch FROM v_at)::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF coalesce(v_status, 0) = p_status THEN
        RETURN QUERY SELECT 'unchanged'::text, extract(epoch FROM v_at)::bigint, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO revocations AS rv (list_id, idx, status, version)
    VALUES (v_list, p_idx, p_status, v_version + 1)
    ON CONFLICT (list_id, idx) DO UPDATE
        SET status = EXCLUDED.status, version = EXCLUDED.version, revoked_at = EXCLUDED.revoked_at
    RETURNING rv.revoked_at INTO v_at;
    UPDATE lists SET version = version + 1 WHERE id = v_list;
    RETURN QUERY SELECT 'changed'::text, extract(epoch FROM v_at)::bigint,
                        (extract(epoch FROM v_at) * 1000000)::bigint;
END
$fn$;

-- Writes back status changes a worker acknowledged before a failover (revocations,
-- suspensions, reinstatements), with their original time (`p_at_us`: unix microseconds;
-- a revocation's is whole seconds, as its answer gives it). Per entry, the journal's
-- records reduce to one: a revocation if there is one (the earliest), else the latest
-- change. Then, against what the new primary holds:
-- * a revocation: as version 15 (restored, orphan, present, absent), and it also turns a
--   suspended or reinstated entry's row into a revocation;
-- * a suspension or reinstatement: 'restored' (or 'orphan', its entry is not there) when
--   the entry's row is missing or holds another status changed before it; 'present' when
--   the entry is revoked, has that status already, or changed at the same time or since
--   (a change made on the new primary); 'absent' when its list is not live.
-- Lists are locked in id order; each touched list's version moves once and its revoked
-- count by the revocations written.
CREATE FUNCTION statuslist_restore_statuses(p_list text[], p_idx bigint[], p_at_us bigint[], p_status smallint[])
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
    WITH r AS (SELECT DISTINCT ON (r.list_id, r.idx) r.list_id, r.idx, r.status,
                      timestamptz 'epoch' + r.at_us * interval '1 microsecond' AS at
               FROM unnest(p_list, p_idx, p_at_us, p_status) WITH ORDINALITY AS r(list_id, idx, at_us, status, n)
               ORDER BY r.list_id, r.idx, r.status = 1 DESC,
                        CASE WHEN r.status = 1 THEN r.at_us END ASC,
                        r.at_us DESC, r.n DESC),
    t AS (SELECT r.list_id, r.idx, r.at, r.status, l.version,
                 EXISTS (SELECT 1 FROM entries e WHERE e.list_id = r.list_id AND e.idx = r.idx) AS has_entry,
                 cur.status AS cur_status, cur.revoked_at AS cur_at
          FROM r LEFT JOIN lists l ON l.id = r.list_id AND l.state IN ('Active', 'Full')
          LEFT JOIN revocations cur ON cur.list_id = r.list_id AND cur.idx = r.idx),
    w AS (SELECT t.* FROM t
          WHERE t.version IS NOT NULL
            AND CASE WHEN t.status = 1 THEN t.cur_status IS DISTINCT FROM 1
                     WHEN t.cur_status IS NULL THEN t.status <> 0
                     ELSE t.cur_status NOT IN (1, t.status)
                          AND t.cur_at < t.at END),
    ins AS (INSERT INTO revocations AS rv (list_id, idx, status, version, revoked_at)
            SELECT w.list_id, w.idx, w.status, w.version + 1, w.at FROM w
            ON CONFLICT (list_id, idx) DO UPDATE
                SET status = EXCLUDED.status, version = EXCLUDED.version, revoked_at = EXCLUDED.revoked_at
                WHERE rv.status <> 1
            RETURNING list_id, idx, status),
    v AS (UPDATE lists l SET version = l.version + 1,
                 revoked = l.revoked + (SELECT count(*) FROM ins WHERE ins.list_id = l.id AND ins.status = 1)
          WHERE l.id IN (SELECT ins.list_id FROM ins) RETURNING l.id)
    SELECT t.list_id, t.idx,
           CASE WHEN ins.idx IS NOT NULL AND t.has_entry THEN 'restored'
                WHEN ins.idx IS NOT NULL THEN 'orphan'
                WHEN t.version IS NOT NULL THEN 'present'
                ELSE 'absent' END
    FROM t LEFT JOIN ins ON ins.list_id = t.list_id AND ins.idx = t.idx
    CROSS JOIN (SELECT count(*) FROM v) AS moved;
END
$fn$;

-- Version 15's signature, kept for workers of the previous release during a rolling
-- update: their journal holds revocations alone.
CREATE OR REPLACE FUNCTION statuslist_restore_revocations(p_list text[], p_idx bigint[], p_at bigint[])
RETURNS TABLE (out_list text, out_idx bigint, out_outcome text)
LANGUAGE sql
AS $fn$
    SELECT * FROM statuslist_restore_statuses(p_list, p_idx, ARRAY(SELECT a * 1000000 FROM unnest(p_at) AS a),
                                              array_fill(1::smallint, ARRAY[cardinality(p_list)]))
$fn$;
