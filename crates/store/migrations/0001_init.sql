-- statuslist schema, version 1. Every promise of the service is a constraint here.

-- One row per StatusList resource (a pool of lists of one format).
CREATE TABLE pools (
    name                        text PRIMARY KEY,
    format                      text NOT NULL CHECK (format IN ('Token', 'Bitstring')),
    bits                        smallint NOT NULL CHECK (bits IN (1, 2, 4, 8)),
    base_uri                    text NOT NULL,
    entries_per_list            bigint NOT NULL CHECK (entries_per_list > 0),
    min_free_entries            bigint NOT NULL CHECK (min_free_entries >= 0),
    lease_size                  bigint NOT NULL CHECK (lease_size > 0),
    ttl_seconds                 bigint NOT NULL CHECK (ttl_seconds > 0),
    validity_seconds            bigint NOT NULL CHECK (validity_seconds > 0),
    max_status_lifetime_seconds bigint NOT NULL CHECK (max_status_lifetime_seconds > 0),
    -- false once the resource is deleted with deletionPolicy Retain: revocation and
    -- publishing go on, issuance stops.
    issuing                     boolean NOT NULL DEFAULT true,
    generation                  bigint NOT NULL,
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

-- A client belongs to exactly one pool; clientId is unique across all of them.
CREATE TABLE issuers (
    client_id text PRIMARY KEY,
    pool      text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
    jwks_uri  text NOT NULL
);
CREATE INDEX issuers_pool ON issuers (pool);

-- Physical lists. Rows are never deleted, so an id is never reused: a retired or
-- deleted list keeps its row (state Retired/Deleted) and loses its entries.
CREATE TABLE lists (
    id         text PRIMARY KEY CHECK (id ~ '^[0-9A-F]{12}$'),
    pool       text REFERENCES pools (name) ON DELETE SET NULL,
    uri        text NOT NULL UNIQUE,
    format     text NOT NULL CHECK (format IN ('Token', 'Bitstring')),
    bits       smallint NOT NULL CHECK (bits IN (1, 2, 4, 8)),
    size       bigint NOT NULL CHECK (size > 0),
    -- Key of the index permutation: never leaves the database and the worker.
    secret     bytea NOT NULL CHECK (length(secret) >= 16),
    state      text NOT NULL DEFAULT 'Active' CHECK (state IN ('Active', 'Full', 'Retired', 'Deleted')),
    -- Bumped by every revocation; the publisher renders until published = version.
    version    bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE INDEX lists_pool_state ON lists (pool, state);

-- Position ranges [start_pos, end_pos) of a list. start_pos only moves forward: when a
-- lease is released or reclaimed it becomes one past the highest position issued in it.
CREATE TABLE leases (
    id         bigserial PRIMARY KEY,
    list_id    text NOT NULL REFERENCES lists (id),
    start_pos  bigint NOT NULL,
    end_pos    bigint NOT NULL,
    holder     text,
    -- Fencing token: bumped by every claim, checked by every issuance.
    token      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz,
    CHECK (0 <= start_pos AND start_pos < end_pos),
    CHECK ((holder IS NULL) = (expires_at IS NULL))
);
CREATE INDEX leases_list ON leases (list_id);
CREATE INDEX leases_free ON leases (list_id) WHERE holder IS NULL;

-- Issued entries. (list_id, idx) is the last guard against a slot issued twice,
-- (list_id, position) against a position reused, (client_id, jti) is idempotency.
-- No foreign key to lists: list rows are never deleted, and the check would lock the
-- list row on every issuance.
CREATE TABLE entries (
    list_id       text NOT NULL,
    idx           bigint NOT NULL CHECK (idx >= 0),
    position      bigint NOT NULL CHECK (position >= 0),
    client_id     text NOT NULL,
    jti           uuid NOT NULL,
    status_expiry bigint NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    status        smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 255),
    revoked_at    timestamptz,
    PRIMARY KEY (list_id, idx),
    UNIQUE (list_id, position),
    UNIQUE (client_id, jti)
);
-- The publisher reads only the sparse non-zero entries.
CREATE INDEX entries_nonzero ON entries (list_id, idx) WHERE status <> 0;

-- Publishing state, one row per list (locked by the renderer, never by revocations).
CREATE TABLE list_publish (
    list_id           text PRIMARY KEY REFERENCES lists (id),
    published_version bigint NOT NULL DEFAULT -1,
    -- Earliest exp among the stored artifacts (unix seconds).
    exp               bigint
);

-- Signed artifacts, one per list and kind ('jwt', 'cwt', 'vc').
CREATE TABLE artifacts (
    list_id text NOT NULL REFERENCES lists (id),
    kind    text NOT NULL CHECK (kind IN ('jwt', 'cwt', 'vc')),
    version bigint NOT NULL,
    body    bytea NOT NULL,
    etag    text NOT NULL,
    iat     bigint NOT NULL,
    exp     bigint NOT NULL,
    -- Seconds a consumer may cache it (the pool's ttlSeconds when rendered).
    ttl     bigint NOT NULL,
    kid     text NOT NULL,
    PRIMARY KEY (list_id, kind)
);

-- Public keys (JWK JSON) of the service keys that signed artifacts, so that every worker
-- publishes every key a live list was signed with, whatever keys it holds itself.
CREATE TABLE signing_keys (
    kid        text PRIMARY KEY,
    jwk        text NOT NULL,
    first_used timestamptz NOT NULL DEFAULT now()
);
