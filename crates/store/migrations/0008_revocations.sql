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
