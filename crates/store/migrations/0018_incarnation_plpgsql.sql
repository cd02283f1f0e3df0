-- Version 18: `statuslist_incarnation()` costs a few microseconds instead of fifty.
--
-- Every issuance batch checks its leases against the database's incarnation (as do lease
-- claims and the single-row insert). As a SQL function whose body holds a sub-select,
-- it could not be inlined, so each call parsed, analysed and planned its body again:
-- 70 us a call against 22 us now (`SELECT (SELECT statuslist_incarnation())`, pgbench
-- with prepared statements, one client, minus `SELECT 1`; PostgreSQL 15, 2026-12-07),
-- about a twentieth of the database's time per issuance under load (scripts/bench with
-- PERF_DIR; docs/performance.md). As PL/pgSQL its expression is prepared once per
-- session and evaluated without a plan. Same text, same volatility, same signature.
CREATE OR REPLACE FUNCTION statuslist_incarnation() RETURNS text
LANGUAGE plpgsql STABLE
AS $fn$
BEGIN
    RETURN (pg_control_system()).system_identifier::text || '/'
        || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text;
END
$fn$;
