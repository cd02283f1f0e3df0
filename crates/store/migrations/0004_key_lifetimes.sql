-- statuslist schema, version 4: a signing key's life as verifiers see it. `first_used`
-- (version 1) is when a worker first announced the key (it is in every JWKS from then
-- on); `last_exp` is the latest `exp` of anything it signed, so the JWKS keeps the key
-- until the last token it signed has expired, even after the lists are re-signed.
ALTER TABLE signing_keys ADD COLUMN last_exp bigint;
UPDATE signing_keys k SET last_exp = (SELECT max(a.exp) FROM artifacts a WHERE a.kid = k.kid);
