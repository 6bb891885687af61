-- Version 4: what every replica needs that a broker used to keep in its
-- data directory. One text for both engines.

-- The broker's signing keys (sessions, grant tokens, the SSH user CA),
-- their private halves sealed with the store key (never in the clear),
-- each with the window in which it signs and the longer one in which what
-- it signed still verifies: rotation with overlap.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    purpose        TEXT NOT NULL,
    public_key     TEXT NOT NULL,     -- base64 of the raw Ed25519 public key
    sealed_private TEXT NOT NULL,     -- base64 of nonce and AES-256-GCM ciphertext of the seed
    sealed_with    TEXT NOT NULL,     -- the store key's id
    created_at     BIGINT NOT NULL,   -- unix ms
    signs_from     BIGINT NOT NULL,
    signs_until    BIGINT NOT NULL,
    verifies_until BIGINT NOT NULL
);
CREATE INDEX signing_keys_by_purpose ON signing_keys (purpose, signs_from);

-- Providers' shared records, one JSON document each (the SSH provider's
-- revocation list, from which every replica serves the same KRL).
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);
