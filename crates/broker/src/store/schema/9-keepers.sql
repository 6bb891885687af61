-- Version 9: who keeps a live grant's deadline, and the scheduler's next
-- look read from indexes alone. One text for both engines
-- (the index, PostgreSQL's only, is in migrations.rs).
--
-- The replica that set the deadline (issued the grant, or renewed it)
-- expires it on time; another replica looks a moment later, in case the
-- keeper fell behind, or at the deadline itself once the keeper's lease
-- has lapsed. Three replicas no longer all wake, and race, for every
-- deadline. '' (grants from before, or kept by a replica long gone): every
-- replica's at its deadline.
ALTER TABLE grants ADD COLUMN keeper TEXT DEFAULT '';

-- The scheduler's next look finds the first unclaimed revocation due in
-- this index alone (claimed_by in it too): with the heap to read for the
-- claim, PostgreSQL planned that look on an empty store as a read of every
-- grant, and kept the plan.
DROP INDEX grants_revocation_due;
CREATE INDEX grants_revocation_due ON grants (revocation_due, claimed_by) WHERE revocation_due IS NOT NULL;
