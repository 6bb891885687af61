-- Hourglass store, version 1, as SQLite reads it (PostgreSQL: 1-postgres.sql; later versions: schema/N-*.sql, listed in migrations.rs). Each domain object is kept whole as JSON in
-- `doc`; the other columns are copies of its fields that queries filter and
-- sort on, written together with `doc` in one statement.

CREATE TABLE IF NOT EXISTS requests (
    id            TEXT PRIMARY KEY,
    requester     TEXT NOT NULL,
    resource      TEXT NOT NULL,
    role          TEXT NOT NULL,
    state         TEXT NOT NULL,
    renews        TEXT,
    created_at    INTEGER NOT NULL,   -- unix ms
    pending_until INTEGER NOT NULL,   -- unix ms
    doc           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_requester ON requests (requester, created_at);
CREATE INDEX IF NOT EXISTS requests_pending ON requests (pending_until) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS grants (
    id             TEXT PRIMARY KEY,
    request_id     TEXT NOT NULL,
    owner          TEXT NOT NULL,
    resource       TEXT NOT NULL,
    role           TEXT NOT NULL,
    state          TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,  -- unix ms
    revocation_due INTEGER,           -- unix ms of the next attempt; NULL when none is owed
    provider_state TEXT NOT NULL,     -- the provider's non-secret record of what it created
    doc            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_by_owner ON grants (owner, expires_at);
CREATE INDEX IF NOT EXISTS grants_live ON grants (expires_at) WHERE state IN ('issuing', 'active');
CREATE INDEX IF NOT EXISTS grants_revocation_due ON grants (revocation_due) WHERE revocation_due IS NOT NULL;

-- The hash-chained audit log. `event` is the canonical JSON that was hashed;
-- the other columns are copies for queries.
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    subject   TEXT,
    event     TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit (subject, seq);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target, seq);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
