-- Version 3: several brokers on one store. One text for both engines
-- (integers are BIGINT, which SQLite reads as INTEGER).

-- The audit chain's head and the event stream's last sequence number, in
-- one row that every commit appending to either updates. Its row lock
-- (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the one writer) serializes
-- appends across replicas, so the chain has one order, and event numbers
-- are taken in commit order: a reader that has seen event N has seen every
-- event before it.
CREATE TABLE chain (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    audit_seq  BIGINT NOT NULL,
    audit_hash TEXT NOT NULL,
    event_seq  BIGINT NOT NULL
);
INSERT INTO chain (id, audit_seq, audit_hash, event_seq)
SELECT 1,
       COALESCE((SELECT seq FROM audit ORDER BY seq DESC LIMIT 1), 0),
       COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1),
                '0000000000000000000000000000000000000000000000000000000000000000'),
       0;

-- What /v1/events sent, written in the commit that caused it: every
-- replica follows this table, and a client that reconnects (to any
-- replica) with Last-Event-ID is sent what it missed. Kept for a while,
-- then pruned (a client further behind is told to resync).
CREATE TABLE events (
    seq      BIGINT PRIMARY KEY,
    at       BIGINT NOT NULL,          -- unix ms
    kind     TEXT NOT NULL,
    audience TEXT NOT NULL,            -- JSON: {"principals": [...], "deciders": bool}
    event    TEXT NOT NULL             -- the Event as sent
);

-- Each running broker, and until when its claims hold, on the database's
-- clock (unix ms). A replica renews its row while it runs; work it claimed
-- (grants.claimed_by) is anyone's once its row lapses.
CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    alive_until BIGINT NOT NULL
);

-- The replica issuing a grant, or revoking it: nobody else works on it
-- while that replica's row holds.
ALTER TABLE grants ADD COLUMN claimed_by TEXT;
CREATE INDEX grants_claimed ON grants (claimed_by) WHERE claimed_by IS NOT NULL;

-- A principal's history reads events by actor as well as by subject; the
-- renewals of a grant are looked up whenever it ends.
CREATE INDEX audit_by_actor ON audit (actor, seq);
CREATE INDEX requests_renewing ON requests (renews) WHERE renews IS NOT NULL;
