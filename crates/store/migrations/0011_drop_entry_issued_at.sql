-- statuslist schema, version 11: entries lose `issued_at`.
--
-- Written with every entry (8 bytes of each row) and read by nothing: no answer, status,
-- list or log carries an entry's issuance time (the issuer has it: it signed the
-- credential; the request log has the request). At 10,000,000 entries the partitions and
-- idempotency keys took 299 bytes per entry; this is 8 of them.
--
-- On a partitioned table the drop is a catalog change only (no rewrite, no long lock):
-- rows already written keep their 8 bytes until their list's partition is dropped, rows
-- written from now on do not carry them, and partitions created from now on have no such
-- column. Workers of schema 10 never name the column: they go on issuing unchanged.

ALTER TABLE entries DROP COLUMN issued_at;
