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
