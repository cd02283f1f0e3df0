-- Version 21: a list whose status changed is published by the publisher that claimed it
-- last; another takes it over only once it has not been claimed for a while.
--
-- Every worker runs a publisher, and each paces itself (after a pass that published, the
-- next starts no sooner than 250 ms later), so with N workers a list under a stream of
-- revocations was rendered, signed and stored up to 4N times a second, each publish a
-- claim, a read of the changes and a store (under revocations interleaved over 54 lists
-- on two workers, 5.7 publishes a second per list; those three statements were a third of
-- PostgreSQL's time per revocation, docs/performance.md). The claim now records who made
-- it and when (`Store::claim_publish`): the last claimer may claim the list again at once,
-- another only after the takeover interval. Re-signing a list near its `exp` is not held
-- back. Workers of version 20 do not read or write these columns: they claim as before.
ALTER TABLE list_publish
    ADD COLUMN last_claimer uuid,
    ADD COLUMN last_claimed_at timestamptz;
