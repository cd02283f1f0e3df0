-- statuslist schema, version 8: revocations move out of `entries` into a table of their
-- own. A revocation used to update its entry in place: a non-HOT update (status and
-- changed_version are indexed) writing a new tuple into every index of `entries`, three
-- of them on random keys (the idx permutation, the position, the jti UUID), each write a
-- random page and, after every checkpoint, a full-page image in the WAL. Now `entries` is
-- written once, at issuance, and a revocation appends one small row here: its primary key
-- (list_id, idx) answers "already revoked" and carries the INVALID entries the publisher
-- reads (O(revoked of the list)); `revocations_changes` is appended in version order within
-- a list, so a publisher holding version V reads only what changed after it (O(changes)).
--
-- Each list counts its revocations (`lists.revoked`, moved in the same statement that bumps
-- its version), so capacity figures read one number per list instead of counting rows.
--
-- Dropping the old columns in the same migration is deliberate: a worker older than this
-- schema still running beside it (a rolling update) fails its revocations and publishing
-- with an error instead of writing or publishing from a place nothing reads any more;
-- issuance, which never wrote those columns, goes on.
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

INSERT INTO revocations (list_id, idx, status, revoked_at, version)
SELECT list_id, idx, status, coalesce(revoked_at, issued_at), coalesce(changed_version, 0)
FROM entries WHERE status <> 0;

ALTER TABLE lists ADD COLUMN revoked bigint NOT NULL DEFAULT 0 CHECK (revoked >= 0);
UPDATE lists l SET revoked = r.n
FROM (SELECT list_id, count(*) AS n FROM revocations GROUP BY list_id) r
WHERE r.list_id = l.id;

DROP INDEX IF EXISTS entries_nonzero;
DROP INDEX IF EXISTS entries_changes;
ALTER TABLE entries DROP COLUMN status, DROP COLUMN revoked_at, DROP COLUMN changed_version;

-- A batch of revocations, in one call (one round trip, no lock held while the worker is
-- away: a worker stopped mid-batch cannot hold anyone behind its locks). First the lists
-- named are locked in id order, so batches over the same lists from different workers
-- queue instead of deadlocking; then, in a statement of its own (a fresh snapshot, taken
-- after the locks: it sees the lists as they are, where one statement locking and then
-- updating a row another batch had just changed could deadlock on the row's lock
-- queue), each entry that exists, is the client's, is in a list of the pool the client
-- is registered in now and is not revoked yet gets its row (the first request for it in
-- the batch; ON CONFLICT catches a revocation committed meanwhile), each list that got
-- one moves its version and its count once, and is notified.
CREATE FUNCTION statuslist_revoke(p_uri text[], p_idx bigint[], p_client text[], p_channel text)
RETURNS TABLE (out_n bigint, out_at bigint)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM lists l
    WHERE l.uri = ANY (p_uri) AND l.state IN ('Active', 'Full')
    ORDER BY l.id
    FOR NO KEY UPDATE;
    RETURN QUERY
    WITH r AS (SELECT * FROM unnest(p_uri, p_idx, p_client) WITH ORDINALITY AS r(uri, idx, client_id, n)),
    t AS (SELECT DISTINCT ON (l.id, r.idx) r.n, r.idx, l.id AS list_id, l.version
          FROM r JOIN lists l ON l.uri = r.uri AND l.state IN ('Active', 'Full')
          JOIN issuers i ON i.client_id = r.client_id AND i.pool = l.pool
          JOIN entries x ON x.list_id = l.id AND x.idx = r.idx AND x.client_id = r.client_id
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
