-- Version 3 on PostgreSQL, before 3-replicas.sql: the database's clock in
-- unix ms, which leases are measured on (SQLite's store registers the same
-- function on its connections: one broker, one clock). clock_timestamp(),
-- not now(): a lease is checked at the moment of the statement, not at the
-- start of its transaction.
CREATE FUNCTION hourglass_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
