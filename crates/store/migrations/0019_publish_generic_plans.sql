-- Version 19: a publish plans its two statements once per session, not at every call.
--
-- A publish reads the list's revocations changed since the version its renderer holds,
-- then stores what it rendered in one statement (the artifacts, the signing key's latest
-- `exp`, the publish state and claim, the delay of the oldest change it publishes, the
-- notification). Both were prepared statements, yet PostgreSQL's plan cache planned them
-- again at every call: priced with the call's version bounds, a custom plan always looked
-- cheaper than the generic one. Under revocations interleaved over 54 lists (about 220
-- publishes a second on one worker and its observer) that was one planning per call of
-- each: 105 µs (the read) and 355 µs (the store) of planning a publish, 20 µs of wall time
-- per revocation (pg_stat_statements, scripts/bench with PERF_DIR, 2026-12-07).
--
-- As PL/pgSQL functions with `plan_cache_mode = force_generic_plan` they are planned once
-- per session. The plans read the same index ranges: the bounds are values when the plan
-- runs (checked by the store's tests: the store reads one revocation of a list of 2,001).
-- Same statements, same answers; workers of version 18 go on sending theirs.

-- The entries of `p_list` changed after version `p_since` (their current status), by index.
CREATE FUNCTION statuslist_changes(p_list text, p_since bigint)
RETURNS TABLE (idx bigint, status smallint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT r.idx, r.status FROM revocations r
    WHERE r.list_id = p_list AND r.version > p_since
    ORDER BY r.idx;
END
$fn$;

-- Stores a render of version `p_version` of `p_list` (the statement version 18's workers
-- send, `STORE_ARTIFACTS` in crates/store/src/publish.rs, with its parameters named):
-- each artifact unless a newer version is stored; the signing keys' `last_exp`, rounded
-- up to the minute; the publish state (version forward only, `exp`, the claim `p_claim`
-- released); `pg_notify(p_channel, p_payload)`. Answers the seconds since the oldest
-- status change this version publishes first (NULL when it publishes none).
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
