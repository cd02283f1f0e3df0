-- statuslist schema, version 5: each revoked entry records the list version its
-- revocation produced, so a publisher holding a copy of the list at version V reads only
-- what changed after V (O(changes), not O(revoked entries of the list)).
ALTER TABLE entries ADD COLUMN changed_version bigint;
CREATE INDEX entries_changes ON entries (list_id, changed_version) WHERE changed_version IS NOT NULL;
