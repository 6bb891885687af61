-- Version 8: lookups that read only the grants they are about. One text for
-- both engines.
--
-- A filing's clash check (is this person's access to this role live
-- already?) and a resource's live grants: by resource, role and owner,
-- among live grants only. Before this the check could be planned on
-- `grants_live` (by deadline), reading every live grant per filing: the plan
-- PostgreSQL caches for a statement when the store is new and empty, kept
-- by each pooled connection until the tables' statistics change.
CREATE INDEX grants_live_by_access ON grants (resource, role, owner) WHERE state IN ('issuing', 'active');
-- Grants being issued: the scheduler looks for interrupted issues each
-- turn, among the few grants in that state rather than every live one.
CREATE INDEX grants_issuing ON grants (expires_at) WHERE state = 'issuing';
