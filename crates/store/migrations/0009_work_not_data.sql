-- statuslist schema, version 9: what runs on every reconcile or every lease claim costs
-- the work, not the data.
--
-- A list that is Full has no lease left, so nothing is ever issued into it again: the
-- latest statusExpiry of its entries is final, computed once when it becomes Full, and the
-- retirement check compares one number instead of looking through the list's entries.
ALTER TABLE lists ADD COLUMN max_status_expiry bigint;
UPDATE lists l SET max_status_expiry = coalesce(
    (SELECT max(e.status_expiry) FROM entries e WHERE e.list_id = l.id), 0)
WHERE l.state = 'Full';

-- A lease claim chose among every free lease of the pool by sorting them on random():
-- O(free leases) per claim (10,000 for one 1,000,000-entry list in leases of 100). Each
-- lease now carries a random rank, and a claim takes the first free lease at or after a
-- random point in one list's ranks: one index descent.
ALTER TABLE leases ADD COLUMN rank double precision NOT NULL DEFAULT random();
CREATE INDEX leases_free_rank ON leases (list_id, rank) WHERE holder IS NULL;
DROP INDEX IF EXISTS leases_free;
