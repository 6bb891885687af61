//! The store's schema versions, one list for both engines: a store at
//! version N has had the first N steps applied, whichever engine it is on.
//! Most steps are one text both engines read; where they differ (types in
//! version 1, functions in versions 3 and 5) each engine has its own, with the
//! same tables and columns (pinned by `schemas_have_the_same_columns` in
//! the store tests). Never edit a step once released: add one.

pub(super) struct Migration {
    /// Run in order on SQLite.
    pub sqlite: &'static [&'static str],
    /// Run in order on PostgreSQL.
    pub postgres: &'static [&'static str],
}

const V2_CLIENT_MATERIAL: &str = "ALTER TABLE requests ADD COLUMN client_material TEXT;";
const V3_REPLICAS: &str = include_str!("schema/3-replicas.sql");
const V4_KEYS: &str = include_str!("schema/4-keys.sql");

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration { sqlite: &[include_str!("schema/1-sqlite.sql")], postgres: &[include_str!("schema/1-postgres.sql")] },
    // 2: the public half of client-made secrets (a SCRAM verifier, an SSH
    // public key), kept apart from the request document so that the API
    // never shows it to approvers.
    Migration { sqlite: &[V2_CLIENT_MATERIAL], postgres: &[V2_CLIENT_MATERIAL] },
    // 3: several brokers on one store: the chain head, the events table,
    // replicas and their claims.
    Migration { sqlite: &[V3_REPLICAS], postgres: &[include_str!("schema/3-postgres.sql"), V3_REPLICAS] },
    // 4: signing keys and providers' shared records, out of the data
    // directory and into the store.
    Migration { sqlite: &[V4_KEYS], postgres: &[V4_KEYS] },
    // 5: PostgreSQL numbers and hashes what a commit appends where it
    // takes the chain's row, in the same round trip as the commit.
    // Nothing changes on SQLite.
    Migration { sqlite: &[], postgres: &[include_str!("schema/5-postgres.sql")] },
];

pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The version a store says it is at, checked against what this binary knows.
pub(super) fn stored_version(stored: Option<&str>, store: &str) -> crate::error::Result<i64> {
    match stored.map(str::parse::<i64>) {
        None => Ok(0),
        Some(Ok(version)) if (0..=SCHEMA_VERSION).contains(&version) => Ok(version),
        Some(other) => Err(crate::error::Error::Config(format!(
            "{store} has store schema version {}; this hourglassd understands versions up to {SCHEMA_VERSION}",
            match other {
                Ok(version) => version.to_string(),
                Err(_) => format!("{:?}", stored.unwrap_or_default()),
            }
        ))),
    }
}
