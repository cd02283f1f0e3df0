-- The statuslist schema, version 15: the baseline every database starts from. Later
-- versions are migrations 0016 and up. Why each table, index and function is the way it
-- is: docs/design.md ("The store").
--
-- Every promise of the service is a constraint or a function here:
-- * a slot is issued once: `entries` partition primary key (idx) and UNIQUE (position);
-- * an issuance is idempotent: `issuance_keys` (client_id, jti);
-- * a lease issues only while its holder owns it: `leases.token`, bumped by every claim;
-- * nothing is handed out twice through a failover: `lists.incarnation`,
--   `leases.incarnation` and `statuslist_seal_past_incarnations()`.

---------------------------------------------------------------------------------------
-- Pools, issuers, resources
---------------------------------------------------------------------------------------

-- One row per StatusList resource (a pool of lists of one format).
CREATE TABLE pools (
    name                        text PRIMARY KEY,
    format                      text NOT NULL CHECK (format IN ('Token', 'Bitstring')),
    bits                        smallint NOT NULL CHECK (bits IN (1, 2, 4, 8)),
    base_uri                    text NOT NULL,
    entries_per_list            bigint NOT NULL CHECK (entries_per_list > 0),
    min_free_entries            bigint NOT NULL CHECK (min_free_entries >= 0),
    lease_size                  bigint NOT NULL CHECK (lease_size > 0),
    ttl_seconds                 bigint NOT NULL CHECK (ttl_seconds > 0),
    validity_seconds            bigint NOT NULL CHECK (validity_seconds > 0),
    max_status_lifetime_seconds bigint NOT NULL CHECK (max_status_lifetime_seconds > 0),
    -- false once the resource is deleted with deletionPolicy Retain: revocation and
    -- publishing go on, issuance stops.
    issuing                     boolean NOT NULL DEFAULT true,
    -- The resource generation and UID that last wrote the pool (UID NULL for pools
    -- written from manifest files): a writer with a stale view (a second operator
    -- replica, the old pod of a rolling update) can neither roll a pool back to an older
    -- spec nor resurrect one whose resource was deleted.
    generation                  bigint NOT NULL,
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    uid                         text
);

-- Resources deleted, remembered by UID (see pools.uid).
CREATE TABLE deleted_resources (
    uid        text PRIMARY KEY,
    pool       text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- A client belongs to exactly one pool; clientId is unique across all of them.
CREATE TABLE issuers (
    client_id text PRIMARY KEY,
    pool      text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
    jwks_uri  text NOT NULL
);
CREATE INDEX issuers_pool ON issuers (pool);

---------------------------------------------------------------------------------------
-- Lists and leases
---------------------------------------------------------------------------------------

-- The incarnation of the database: its system identifier and WAL timeline. A promoted
-- standby, a point-in-time restore and a restore into a new cluster each start a new one,
-- and each may lack writes the old one acknowledged (docs/failover.md).
CREATE FUNCTION statuslist_incarnation() RETURNS text
LANGUAGE sql STABLE
AS $fn$
    SELECT (SELECT system_identifier FROM pg_control_system())::text || '/'
        || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text
$fn$;

-- Physical lists. Rows are never deleted, so an id is never reused: a retired or
-- deleted list keeps its row (state Retired/Deleted) and loses its entries. A list's URI
-- ends in its id.
CREATE TABLE lists (
    id                text PRIMARY KEY CHECK (id ~ '^[0-9A-F]{12}$'),
    pool              text REFERENCES pools (name) ON DELETE SET NULL,
    uri               text NOT NULL UNIQUE,
    format            text NOT NULL CHECK (format IN ('Token', 'Bitstring')),
    bits              smallint NOT NULL CHECK (bits IN (1, 2, 4, 8)),
    size              bigint NOT NULL CHECK (size > 0),
    -- Key of the index permutation: never leaves the database and the worker.
    secret            bytea NOT NULL CHECK (length(secret) >= 16),
    state             text NOT NULL DEFAULT 'Active' CHECK (state IN ('Active', 'Full', 'Retired', 'Deleted')),
    -- Bumped by every revocation batch; the publisher renders until published = version.
    version           bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    retired_at        timestamptz,
    -- Revocations of the list, moved with its version.
    revoked           bigint NOT NULL DEFAULT 0 CHECK (revoked >= 0),
    -- The latest statusExpiry of its entries, fixed when the list becomes Full (nothing is
    -- issued into it after that): the retirement check compares one number.
    max_status_expiry bigint,
    -- Claimable only in the incarnation it was provisioned in.
    incarnation       text NOT NULL DEFAULT statuslist_incarnation()
);
CREATE INDEX lists_pool_state ON lists (pool, state);

-- Position ranges [start_pos, end_pos) of a list. start_pos only moves forward: when a
-- lease is released or reclaimed it becomes one past the highest position issued in it.
CREATE TABLE leases (
    id          bigserial PRIMARY KEY,
    list_id     text NOT NULL REFERENCES lists (id),
    start_pos   bigint NOT NULL,
    end_pos     bigint NOT NULL,
    holder      text,
    -- Fencing token: bumped by every claim, checked by every issuance.
    token       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    -- A claim takes the first free lease at or after a random rank: one index descent.
    rank        double precision NOT NULL DEFAULT random(),
    -- The incarnation of its last claim; it issues only in that one. NULL: never claimed.
    incarnation text,
    CHECK (0 <= start_pos AND start_pos < end_pos),
    CHECK ((holder IS NULL) = (expires_at IS NULL))
);
CREATE INDEX leases_list ON leases (list_id);
CREATE INDEX leases_free_rank ON leases (list_id, rank) WHERE holder IS NULL;

---------------------------------------------------------------------------------------
-- Entries and revocations
---------------------------------------------------------------------------------------

-- Issued entries, one partition per list (`entries_<id>`, created with the list, dropped
-- when it is retired). Each partition's primary key (idx) is the last guard against a slot
-- issued twice, UNIQUE (position) against a position reused. Written once, at issuance;
-- no foreign key to lists (list rows are never deleted, and the check would lock the list
-- row on every issuance). Fixed-width columns first: no alignment padding.
CREATE TABLE entries (
    idx           bigint NOT NULL CHECK (idx >= 0),
    position      bigint NOT NULL CHECK (position >= 0),
    status_expiry bigint NOT NULL,
    jti           uuid NOT NULL,
    list_id       text NOT NULL,
    client_id     text NOT NULL
) PARTITION BY LIST (list_id);

-- Idempotency across every list of every pool: (client_id, jti) -> (list_id, idx), written
-- in the same statement as the entry. A list's keys are removed, in bounded chunks, before
-- its partition is dropped (see `Store::drop_dead_partitions`).
CREATE TABLE issuance_keys (
    client_id text NOT NULL,
    jti       uuid NOT NULL,
    list_id   text NOT NULL,
    idx       bigint NOT NULL,
    PRIMARY KEY (client_id, jti)
);

-- One row per revoked entry. The primary key answers "already revoked" and carries what
-- the publisher reads (O(revoked of the list)); `revocations_changes` lets a publisher
-- holding version V read only what changed after it.
CREATE TABLE revocations (
    list_id    text NOT NULL,
    idx        bigint NOT NULL,
    status     smallint NOT NULL DEFAULT 1 CHECK (status BETWEEN 1 AND 255),
    revoked_at timestamptz NOT NULL DEFAULT now(),
    -- The list version this revocation produced (lists.version after its batch).
    version    bigint NOT NULL,
    PRIMARY KEY (list_id, idx)
);
CREATE INDEX revocations_changes ON revocations (list_id, version);

-- The partition of list `p_list`, created empty with its indexes and attached (a SHARE
-- UPDATE EXCLUSIVE lock on `entries`: issuance into other lists goes on). Idempotent.
CREATE FUNCTION statuslist_add_entries_partition(p_list text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := 'entries_' || lower(p_list);
BEGIN
    IF p_list !~ '^[0-9A-F]{12}$' THEN
        RAISE EXCEPTION 'not a list id: %', p_list;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                        CHECK (list_id = %L), PRIMARY KEY (idx), UNIQUE (position))', part, p_list);
    EXECUTE format('ALTER TABLE entries ATTACH PARTITION %I FOR VALUES IN (%L)', part, p_list);
END
$fn$;

-- Drops the partition of list `p_list` (its entries with it), if there is one. The drop
-- takes an ACCESS EXCLUSIVE lock on `entries`, which queues every issuance behind it: it
-- waits at most `p_lock_timeout` (SQLSTATE 55P03 past that: the caller tries again later),
-- and the caller commits at once.
CREATE FUNCTION statuslist_drop_entries_partition(p_list text, p_lock_timeout text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_list !~ '^[0-9A-F]{12}$' THEN
        RAISE EXCEPTION 'not a list id: %', p_list;
    END IF;
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    EXECUTE format('DROP TABLE IF EXISTS %I', 'entries_' || lower(p_list));
END
$fn$;

-- Lookups in one list's entries, each a statement planned for that list's partition alone
-- (a statement correlated on lists it finds as it runs would plan every partition there
-- is). STABLE: they see the calling statement's snapshot. A list without a partition has
-- no entries.

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

-- A batch of revocations (at most 64 rows), in one call: no lock held while the worker is
-- away. 1. The lists named are locked in id order (batches over the same lists queue
-- instead of deadlocking), found by joining the batch's distinct URIs to their unique
-- index. 2. The entries are looked up in each locked list's partition by name (one index
-- probe per row). 3. One statement, a fresh snapshot after the locks: each entry that
-- exists, is the client's, is in a list of the pool the client is registered in now and
-- is not revoked yet gets its row (the first request for it in the batch; ON CONFLICT
-- skips one revoked already), and each list that got one moves its version and count
-- once. The plan is kept per connection and priced for index probes whatever the
-- statistics say. With `p_channel` NULL nothing is notified (the worker notifies after
-- the commit, see `Store::revoke`). Answers: the batch row number and the revocation time
-- of each row that was revoked by this call.
CREATE FUNCTION statuslist_revoke(p_uri text[], p_idx bigint[], p_client text[], p_channel text)
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

---------------------------------------------------------------------------------------
-- Publishing
---------------------------------------------------------------------------------------

-- Publishing state, one row per list. A publisher claims a list for a bounded time
-- (claimed_by, claimed_until) and renders and signs with no transaction open.
CREATE TABLE list_publish (
    list_id           text PRIMARY KEY REFERENCES lists (id),
    published_version bigint NOT NULL DEFAULT -1,
    -- Earliest exp among the stored artifacts (unix seconds).
    exp               bigint,
    claimed_by        uuid,
    claimed_until     timestamptz
);

-- Signed artifacts, one per list and kind ('jwt', 'cwt', 'vc').
CREATE TABLE artifacts (
    list_id text NOT NULL REFERENCES lists (id),
    kind    text NOT NULL CHECK (kind IN ('jwt', 'cwt', 'vc')),
    version bigint NOT NULL,
    body    bytea NOT NULL,
    etag    text NOT NULL,
    iat     bigint NOT NULL,
    exp     bigint NOT NULL,
    -- Seconds a consumer may cache it (the pool's ttlSeconds when rendered).
    ttl     bigint NOT NULL,
    kid     text NOT NULL,
    PRIMARY KEY (list_id, kind)
);

-- Public keys (JWK JSON) of the service keys that signed artifacts, so that every worker
-- publishes every key a live list was signed with, whatever keys it holds itself.
-- `first_used`: when a worker first announced the key (in every JWKS from then on);
-- `last_exp`: the latest `exp` of anything it signed (the JWKS keeps the key until then).
CREATE TABLE signing_keys (
    kid        text PRIMARY KEY,
    jwk        text NOT NULL,
    first_used timestamptz NOT NULL DEFAULT now(),
    last_exp   bigint
);

---------------------------------------------------------------------------------------
-- Failover (docs/failover.md)
---------------------------------------------------------------------------------------

-- Every incarnation the service has written to, first seen when.
CREATE TABLE incarnations (
    incarnation text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
INSERT INTO incarnations (incarnation) VALUES (statuslist_incarnation());

-- One row per list sealed because it was issuing in an earlier incarnation: which
-- workers held leases of it then (as this database knows), and how many positions were
-- left unused.
CREATE TABLE failover_seals (
    list_id text PRIMARY KEY REFERENCES lists (id),
    pool text,
    incarnation text NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now(),
    holders text[] NOT NULL,
    unused bigint NOT NULL
);

-- What each worker wrote back after a failover: one row per worker and incarnation.
CREATE TABLE failover_restores (
    incarnation text NOT NULL,
    worker text NOT NULL,
    restored_at timestamptz NOT NULL DEFAULT now(),
    issuances_restored bigint NOT NULL,
    issuances_present bigint NOT NULL,
    issuances_unrestorable bigint NOT NULL,
    revocations_restored bigint NOT NULL,
    revocations_present bigint NOT NULL,
    revocations_unrestorable bigint NOT NULL,
    -- Lists an acknowledgement could not be written back to.
    unrestorable_lists text[] NOT NULL,
    PRIMARY KEY (incarnation, worker)
);

-- Seals the lists still Active from earlier incarnations, in id order (as revocation
-- batches and `mark_full` lock list rows); returns them with their pools. Concurrent
-- callers seal each list once.
CREATE FUNCTION statuslist_seal_past_incarnations() RETURNS TABLE (out_pool text, out_list text)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_now text := statuslist_incarnation();
    v_lists text[];
BEGIN
    INSERT INTO incarnations (incarnation) VALUES (v_now) ON CONFLICT DO NOTHING;
    SELECT array_agg(c.id) INTO v_lists FROM (
        SELECT l.id FROM lists l
        WHERE l.state = 'Active' AND l.incarnation <> v_now
        ORDER BY l.id
        FOR NO KEY UPDATE OF l) AS c;
    IF v_lists IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO failover_seals (list_id, pool, incarnation, holders, unused)
    SELECT l.id, l.pool, v_now,
           coalesce((SELECT array_agg(DISTINCT le.holder ORDER BY le.holder) FROM leases le
                     WHERE le.list_id = l.id AND le.holder IS NOT NULL), '{}'),
           coalesce((SELECT sum(le.end_pos - le.start_pos) FROM leases le WHERE le.list_id = l.id), 0)
    FROM lists l WHERE l.id = ANY (v_lists)
    ON CONFLICT (list_id) DO NOTHING;
    DELETE FROM leases WHERE list_id = ANY (v_lists);
    RETURN QUERY
    UPDATE lists l SET state = 'Full', max_status_expiry = coalesce(statuslist_latest_expiry(l.id), 0)
    WHERE l.id = ANY (v_lists)
    RETURNING l.pool, l.id;
END
$fn$;

-- Writes back revocations a worker acknowledged before a failover, with their original
-- time: for each, 'restored', 'orphan' (restored, but its entry is not there: its
-- issuance was lost with a worker that died too; the list still shows the slot revoked,
-- and a sealed list never hands it out again), 'present' (revoked already) or 'absent'
-- (its list is not live here). Lists are locked in id order, and each touched list's
-- version and count move once, as in `statuslist_revoke`.
CREATE FUNCTION statuslist_restore_revocations(p_list text[], p_idx bigint[], p_at bigint[])
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
    WITH r AS (SELECT DISTINCT ON (r.list_id, r.idx) r.list_id, r.idx, r.at
               FROM unnest(p_list, p_idx, p_at) AS r(list_id, idx, at)
               ORDER BY r.list_id, r.idx, r.at),
    t AS (SELECT r.list_id, r.idx, r.at, l.version,
                 EXISTS (SELECT 1 FROM entries e WHERE e.list_id = r.list_id AND e.idx = r.idx) AS has_entry,
                 EXISTS (SELECT 1 FROM revocations v WHERE v.list_id = r.list_id AND v.idx = r.idx) AS revoked
          FROM r LEFT JOIN lists l ON l.id = r.list_id AND l.state IN ('Active', 'Full')),
    ins AS (INSERT INTO revocations (list_id, idx, version, revoked_at)
            SELECT t.list_id, t.idx, t.version + 1, to_timestamp(t.at) FROM t
            WHERE t.version IS NOT NULL AND NOT t.revoked
            ON CONFLICT (list_id, idx) DO NOTHING
            RETURNING list_id, idx),
    v AS (UPDATE lists l SET version = l.version + 1,
                 revoked = l.revoked + (SELECT count(*) FROM ins WHERE ins.list_id = l.id)
          WHERE l.id IN (SELECT ins.list_id FROM ins) RETURNING l.id)
    SELECT t.list_id, t.idx,
           CASE WHEN ins.idx IS NOT NULL AND t.has_entry THEN 'restored'
                WHEN ins.idx IS NOT NULL THEN 'orphan'
                WHEN t.revoked AND t.version IS NOT NULL THEN 'present'
                ELSE 'absent' END
    FROM t LEFT JOIN ins ON ins.list_id = t.list_id AND ins.idx = t.idx
    CROSS JOIN (SELECT count(*) FROM v) AS moved;
END
$fn$;
