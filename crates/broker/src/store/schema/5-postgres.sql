-- Version 5 on PostgreSQL: appending to the audit chain and the event
-- stream where the numbers are taken. The chain's row is locked, the
-- events numbered and hashed, the rows written and the head moved in one
-- call, so that the row is held for the time the server takes to do that
-- (sent with COMMIT: the lock ends with it), not for a round trip to the
-- broker and back. SQLite's one writer has no such wait: it keeps the
-- broker's own loop.
--
-- audit_rows: JSON array of {at, actor, action, target, subject, tail},
-- in order, where tail is the event's canonical text after its number
-- (AuditEvent::canonical_after_seq): the canonical text is
-- '{"seq":' || seq || tail, and its hash SHA-256(prev_hash || canonical),
-- as core's chain_hash computes it (every test verifies the chain with
-- core's rule). event_rows: JSON array of {at, kind, audience, event}.
-- Returns each appended audit event's number and link, in order.
CREATE FUNCTION hourglass_append(audit_rows TEXT, event_rows TEXT)
RETURNS TABLE (seq BIGINT, prev_hash TEXT, hash TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    head_seq   BIGINT;
    head_hash  TEXT;
    head_event BIGINT;
    first_event BIGINT;
    row        RECORD;
    canonical  TEXT;
    next_hash  TEXT;
BEGIN
    SELECT c.audit_seq, c.audit_hash, c.event_seq INTO head_seq, head_hash, head_event
        FROM chain AS c WHERE c.id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the store has no chain head';
    END IF;
    FOR row IN
        SELECT r.* FROM ROWS FROM (json_to_recordset(CAST(audit_rows AS json))
                AS (at BIGINT, actor TEXT, action TEXT, target TEXT, subject TEXT, tail TEXT))
            WITH ORDINALITY AS r(at, actor, action, target, subject, tail, n)
        ORDER BY r.n
    LOOP
        head_seq := head_seq + 1;
        canonical := '{"seq":' || head_seq || row.tail;
        next_hash := encode(sha256(decode(head_hash, 'hex') || convert_to(canonical, 'UTF8')), 'hex');
        INSERT INTO audit (seq, at, actor, action, target, subject, event, prev_hash, hash)
            VALUES (head_seq, row.at, row.actor, row.action, row.target, row.subject, canonical, head_hash, next_hash);
        seq := head_seq;
        prev_hash := head_hash;
        hash := next_hash;
        RETURN NEXT;
        head_hash := next_hash;
    END LOOP;
    first_event := head_event;
    INSERT INTO events (seq, at, kind, audience, event)
        SELECT first_event + r.n, r.at, r.kind, r.audience, r.event
        FROM ROWS FROM (json_to_recordset(CAST(event_rows AS json))
                AS (at BIGINT, kind TEXT, audience TEXT, event TEXT))
            WITH ORDINALITY AS r(at, kind, audience, event, n);
    GET DIAGNOSTICS head_event = ROW_COUNT;
    head_event := first_event + head_event;
    UPDATE chain SET audit_seq = head_seq, audit_hash = head_hash, event_seq = head_event WHERE id = 1;
    IF head_event > first_event THEN
        -- A wake-up for every replica's follower; the events are read from the table.
        PERFORM pg_notify('hourglass_events', CAST(head_event AS TEXT));
    END IF;
END
$$;
