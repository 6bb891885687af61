-- Hourglass store, version 1, as PostgreSQL reads it: the tables of
-- 1-sqlite.sql with the same columns, integers as BIGINT (unix ms do not
-- fit in INTEGER). Later versions: schema/N-*.sql, listed in migrations.rs.

CREATE TABLE IF NOT EXISTS requests (
    id            TEXT PRIMARY KEY,
    requester     TEXT NOT NULL,
    resource      TEXT NOT NULL,
    role          TEXT NOT NULL,
    state         TEXT NOT NULL,
    renews        TEXT,
    created_at    BIGINT NOT NULL,   -- unix ms
    pending_until BIGINT NOT NULL,   -- unix ms
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
    expires_at     BIGINT NOT NULL,  -- unix ms
    revocation_due BIGINT,           -- unix ms of the next attempt; NULL when none is owed
    provider_state TEXT NOT NULL,    -- the provider's non-secret record of what it created
    doc            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_by_owner ON grants (owner, expires_at);
CREATE INDEX IF NOT EXISTS grants_live ON grants (expires_at) WHERE state IN ('issuing', 'active');
CREATE INDEX IF NOT EXISTS grants_revocation_due ON grants (revocation_due) WHERE revocation_due IS NOT NULL;

CREATE TABLE IF NOT EXISTS audit (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
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
