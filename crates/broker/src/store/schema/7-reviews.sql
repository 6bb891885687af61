-- Version 7: break-glass grants awaiting their review, found without
-- reading every grant. One text for both engines.
ALTER TABLE grants ADD COLUMN awaiting_review BIGINT;
UPDATE grants SET awaiting_review = 1 WHERE doc LIKE '%"needs_review":true%';
CREATE INDEX grants_awaiting_review ON grants (expires_at) WHERE awaiting_review = 1;
