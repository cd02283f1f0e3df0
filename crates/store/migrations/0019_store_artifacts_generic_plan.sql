-- Version 19: storing a publish's render is planned once per session, not at every call.
--
-- A publish stores what it rendered in one statement (the artifacts, the signing key's
-- latest `exp`, the publish state and claim, the delay of the oldest change it publishes,
-- the notification). It was a prepared statement, yet PostgreSQL's plan cache planned it
-- again at every call: priced with the call's version bounds, a custom plan always looked
-- cheaper than the generic one. Under revocations interleaved over 54 lists (about 220
-- publishes a second on one worker and its observer) that was 355 µs of planning a
-- publish, 15.6 µs of wall time per revocation (pg_stat_statements, scripts/bench with
-- PERF_DIR, 2026-12-07); one client on a quiet server: 638-726 µs a call against 382-419
-- µs as this function.
--
-- As a PL/pgSQL function with `plan_cache_mode = force_generic_plan` it is planned once
-- per session. The generic plan reads the same index range (two bounds, values when the
-- plan runs): the store's tests count the revocations it reads (one of a list of 2,001),
-- and so did a list holding every revocation of its table (10 of 5,000). Not so the
-- publish's other statement, the changes since a version (one bound): its generic plan
-- scanned the whole table where one list holds most revocations, so it stays a prepared
-- statement, planned per call (105 µs, 4.5 µs of wall time per revocation).
-- Same statement, same answers; workers of version 18 go on sending theirs.

-- Stores a render of version `p_version` of `p_list` (the statement workers of version 18
-- send, with its parameters named):
-- each artifact unless a newer version is stored; the signing keys' `last_exp`, rounded
-- up to the minute; the publish state (version forward only, `exp`, the claim `p_claim`
-- released); `pg_notify(p_channel, p_payload)`. Answers the seconds since the oldest
-- status change this version publishes first (NULL when it publishes none). The
-- data-modifying parts run to completion although the final SELECT reads none of them.
CREATE FUNCTION statuslist_store_artifacts(
    p_list text, p_version bigint, p_kind text[], p_body bytea[], p_etag text[],
    p_iat bigint[], p_exp bigint[], p_kid text[], p_ttl bigint[], p_list_exp bigint,
    p_claim uuid, p_channel text, p_payload text)
RETURNS float8
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_delay float8;
    v_notified text;
BEGIN
    WITH a AS (
        INSERT INTO artifacts (list_id, kind, version, body, etag, iat, exp, kid, ttl)
        SELECT p_list, u.kind, p_version, u.body, u.etag, u.iat, u.exp, u.kid, u.ttl
        FROM unnest(p_kind, p_body, p_etag, p_iat, p_exp, p_kid, p_ttl)
             AS u(kind, body, etag, iat, exp, kid, ttl)
        ON CONFLICT (list_id, kind) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body,
            etag = EXCLUDED.etag, iat = EXCLUDED.iat, exp = EXCLUDED.exp, kid = EXCLUDED.kid,
            ttl = EXCLUDED.ttl
        WHERE artifacts.version <= EXCLUDED.version),
    k AS (
        UPDATE signing_keys s SET last_exp = u.exp
        FROM (SELECT u.kid, (max(u.exp) + 59) / 60 * 60 AS exp
              FROM unnest(p_kid, p_exp) AS u(kid, exp) GROUP BY u.kid) u
        WHERE s.kid = u.kid AND coalesce(s.last_exp, 0) < u.exp),
    p AS (
        UPDATE list_publish lp SET
            published_version = GREATEST(lp.published_version, p_version),
            exp = CASE WHEN lp.published_version <= p_version THEN p_list_exp ELSE lp.exp END,
            claimed_by = CASE WHEN lp.claimed_by = p_claim THEN NULL ELSE lp.claimed_by END,
            claimed_until = CASE WHEN lp.claimed_by = p_claim THEN NULL ELSE lp.claimed_until END
        WHERE lp.list_id = p_list),
    -- The snapshot is from before the update above: published_version is the previous one.
    d AS (
        SELECT extract(epoch FROM clock_timestamp() - min(r.revoked_at))::float8 AS delay
        FROM revocations r
        WHERE r.list_id = p_list AND r.version <= p_version
          AND r.version > (SELECT c.published_version FROM list_publish c WHERE c.list_id = p_list))
    SELECT (SELECT d.delay FROM d), pg_notify(p_channel, p_payload)::text INTO v_delay, v_notified;
    RETURN v_delay;
END
$fn$;
