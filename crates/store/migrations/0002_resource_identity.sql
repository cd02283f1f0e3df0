-- statuslist schema, version 2: a pool remembers which resource (UID) and which generation
-- of it last wrote it, and deleted resources are remembered, so that a writer acting on a
-- stale view (a second operator replica, the old pod of a rolling update) can neither
-- roll a pool back to an older spec nor resurrect one whose resource was deleted.

-- NULL for pools written without a resource identity (manifest files).
ALTER TABLE pools ADD COLUMN uid text;

CREATE TABLE deleted_resources (
    uid        text PRIMARY KEY,
    pool       text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
