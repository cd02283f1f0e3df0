-- statuslist schema, version 3: a publisher claims a list for a bounded time instead of
-- holding a row lock across the render, so rendering and signing happen with no
-- transaction open (a slow render can no longer roll a whole pass back).
ALTER TABLE list_publish
    ADD COLUMN claimed_by    uuid,
    ADD COLUMN claimed_until timestamptz;
