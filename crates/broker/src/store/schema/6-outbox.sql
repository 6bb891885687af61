-- Version 6: the outbox's indexes (its table differs by engine only in
-- how `seq` counts).
CREATE INDEX outbox_due ON outbox (due_at) WHERE done_at IS NULL;
-- A topic's messages go out in order: one waits for those before it on
-- its channel and topic; a later one finds the first one's reference.
CREATE INDEX outbox_topic ON outbox (channel, topic, seq);
CREATE INDEX outbox_done ON outbox (done_at) WHERE done_at IS NOT NULL;
