-- statuslist schema, version 7: entries_revoked (list_id) WHERE status <> 0 repeats
-- entries_nonzero (list_id, idx) WHERE status <> 0 — same predicate, same leading
-- column, so the capacity count uses either — and every revocation paid for both.
DROP INDEX IF EXISTS entries_revoked;
