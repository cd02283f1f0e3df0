-- statuslist schema, version 6: revoked entries indexed by list, so a pool's capacity
-- figures count revocations in O(revoked) rather than scanning every entry of every live
-- list (the other figures are derived from the leases: see CAPACITY_QUERY).
CREATE INDEX entries_revoked ON entries (list_id) WHERE status <> 0;
