//! The broker's store: requests, grants and the audit chain in SQLite.
//!
//! Every change goes through a [`WriteTx`]: one writer connection and
//! `BEGIN IMMEDIATE`, so read-modify-write sequences (count an approval,
//! claim due expiries, extend the chain) are serialized, and a state change
//! and its audit events commit together or not at all.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use hourglass_core::api::ClientMaterial;
use hourglass_core::audit::{AuditEvent, AuditRecord, GENESIS_HASH, StoredLink, chain_hash, from_hex, to_hex};
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::error::{Error, Result};

/// Each step takes the store from one schema version to the next; a store at
/// version N has had the first N applied. Never edit a step once released:
/// add one.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    // 2: the public half of client-made secrets (a SCRAM verifier, an SSH
    // public key), kept apart from the request document so that the API
    // never shows it to approvers.
    "ALTER TABLE requests ADD COLUMN client_material TEXT;",
];
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A grant with the provider's (non-secret) record of what it created.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRecord {
    pub grant: Grant,
    pub provider_state: serde_json::Value,
}

#[derive(Clone)]
pub struct Store {
    reader: SqlitePool,
    writer: SqlitePool,
}

pub struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    head: Option<(u64, [u8; 32])>,
    appended: Vec<AuditRecord>,
}

fn parse_doc<T: serde::de::DeserializeOwned>(row: &SqliteRow) -> Result<T> {
    let doc: String = row.try_get("doc")?;
    serde_json::from_str(&doc).map_err(|error| Error::Internal(format!("stored document does not parse: {error}")))
}

fn grant_record(row: &SqliteRow) -> Result<GrantRecord> {
    let state: String = row.try_get("provider_state")?;
    Ok(GrantRecord {
        grant: parse_doc(row)?,
        provider_state: serde_json::from_str(&state)
            .map_err(|error| Error::Internal(format!("stored provider state does not parse: {error}")))?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|error| Error::Internal(format!("serializing: {error}")))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub async fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit the broker acknowledged survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(StdDuration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(StdDuration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        migrate(&writer, path).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(Store { reader, writer })
    }

    /// Opens an existing store for reading only (audit verify and export
    /// while a broker runs on it).
    pub async fn open_read_only(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(Error::Config(format!("no store at {}", path.display())));
        }
        let options =
            SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(StdDuration::from_secs(10));
        let reader = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        Ok(Store { writer: reader.clone(), reader })
    }

    pub async fn begin(&self) -> Result<WriteTx> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, head: None, appended: Vec::new() })
    }

    pub async fn request(&self, id: &RequestId) -> Result<Option<AccessRequest>> {
        let row =
            sqlx::query("SELECT doc FROM requests WHERE id = ?").bind(id.as_str()).fetch_optional(&self.reader).await?;
        row.as_ref().map(parse_doc).transpose()
    }

    pub async fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>> {
        let row = sqlx::query("SELECT doc, provider_state FROM grants WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(grant_record).transpose()
    }

    /// What the client sent with a request for its credential.
    pub async fn request_material(&self, id: &RequestId) -> Result<Option<ClientMaterial>> {
        let text: Option<Option<String>> = sqlx::query_scalar("SELECT client_material FROM requests WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        text.flatten()
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|error| Error::Internal(format!("stored client material does not parse: {error}")))
            })
            .transpose()
    }

    /// The requester's requests, newest first.
    pub async fn requests_of(&self, requester: &str, max: usize) -> Result<Vec<AccessRequest>> {
        let rows = sqlx::query("SELECT doc FROM requests WHERE requester = ? ORDER BY created_at DESC, id LIMIT ?")
            .bind(requester)
            .bind(limit(max))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(parse_doc).collect()
    }

    /// Every pending request, oldest first.
    pub async fn pending_requests(&self, max: usize) -> Result<Vec<AccessRequest>> {
        let rows = sqlx::query("SELECT doc FROM requests WHERE state = 'pending' ORDER BY pending_until LIMIT ?")
            .bind(limit(max))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(parse_doc).collect()
    }

    /// Grants, newest deadline first: one owner's, or everybody's.
    pub async fn grants(&self, owner: Option<&str>, include_ended: bool, max: usize) -> Result<Vec<GrantRecord>> {
        let live = if include_ended { "" } else { "AND state IN ('issuing', 'active')" };
        let sql = format!(
            "SELECT doc, provider_state FROM grants WHERE (?1 IS NULL OR owner = ?1) {live} ORDER BY expires_at DESC, id LIMIT ?2"
        );
        let rows = sqlx::query(&sql).bind(owner).bind(limit(max)).fetch_all(&self.reader).await?;
        rows.iter().map(grant_record).collect()
    }

    /// Grants still being issued: work a crash interrupted.
    pub async fn issuing_grants(&self) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query("SELECT doc, provider_state FROM grants WHERE state = 'issuing'")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(grant_record).collect()
    }

    /// The earliest instant at which the scheduler has work: a live grant's
    /// deadline, a pending request's timeout or a revocation retry.
    pub async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(t) FROM (
                SELECT MIN(expires_at) AS t FROM grants WHERE state IN ('issuing', 'active')
                UNION ALL SELECT MIN(pending_until) FROM requests WHERE state = 'pending'
                UNION ALL SELECT MIN(revocation_due) FROM grants WHERE revocation_due IS NOT NULL
            )",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(next.map(Timestamp::from_unix_millis))
    }

    /// Audit events after `after` (a sequence number), in order, for verification.
    pub async fn audit_links(&self, after: u64, max: usize) -> Result<Vec<StoredLink>> {
        let rows = sqlx::query("SELECT seq, event, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(limit(max))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredLink {
                    seq: u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0),
                    canonical: row.try_get("event")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Audit records after `after`, in order, for export.
    pub async fn audit_records(&self, after: u64, max: usize) -> Result<Vec<AuditRecord>> {
        self.audit_links(after, max).await?.into_iter().map(record_of).collect()
    }

    /// A principal's history: events about their access or by them, newest first.
    pub async fn history(&self, principal: &str, max: usize) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, event, prev_hash, hash FROM audit WHERE subject = ?1 OR actor = ?1 ORDER BY seq DESC LIMIT ?2",
        )
        .bind(principal)
        .bind(limit(max))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                record_of(StoredLink {
                    seq: u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0),
                    canonical: row.try_get("event")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }
}

/// Brings the store to [`SCHEMA_VERSION`], each step in its own transaction.
async fn migrate(writer: &SqlitePool, path: &Path) -> Result<()> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .execute(writer)
        .await?;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'schema_version'").fetch_optional(writer).await?;
    let version = match stored.as_deref().map(i64::from_str) {
        None => 0,
        Some(Ok(version)) if (0..=SCHEMA_VERSION).contains(&version) => version,
        Some(other) => {
            return Err(Error::Config(format!(
                "{} has store schema version {other:?}; this hourglassd understands versions up to {SCHEMA_VERSION}",
                path.display()
            )));
        }
    };
    for (index, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let mut tx = writer.begin().await?;
        sqlx::raw_sql(step).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind((index + 1).to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn record_of(link: StoredLink) -> Result<AuditRecord> {
    let event: AuditEvent = serde_json::from_str(&link.canonical)
        .map_err(|error| Error::Internal(format!("audit event {} does not parse: {error}", link.seq)))?;
    Ok(AuditRecord { event, prev_hash: link.prev_hash, hash: link.hash })
}

impl WriteTx {
    pub async fn request(&mut self, id: &RequestId) -> Result<Option<AccessRequest>> {
        let row = sqlx::query("SELECT doc FROM requests WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(parse_doc).transpose()
    }

    pub async fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>> {
        let row = sqlx::query("SELECT doc, provider_state FROM grants WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(grant_record).transpose()
    }

    pub async fn insert_request(&mut self, request: &AccessRequest, material: Option<&ClientMaterial>) -> Result<()> {
        let material = material.map(to_json).transpose()?;
        sqlx::query(
            "INSERT INTO requests (id, requester, resource, role, state, renews, created_at, pending_until, doc, client_material)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(request.id.as_str())
        .bind(&request.requester)
        .bind(&request.resource)
        .bind(&request.role)
        .bind(request.state.as_str())
        .bind(request.renews.as_ref().map(GrantId::as_str))
        .bind(request.created_at.unix_millis())
        .bind(request.pending_until.unix_millis())
        .bind(to_json(request)?)
        .bind(material)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn update_request(&mut self, request: &AccessRequest) -> Result<()> {
        sqlx::query("UPDATE requests SET state = ?, doc = ? WHERE id = ?")
            .bind(request.state.as_str())
            .bind(to_json(request)?)
            .bind(request.id.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn insert_grant(&mut self, record: &GrantRecord) -> Result<()> {
        let grant = &record.grant;
        sqlx::query(
            "INSERT INTO grants (id, request_id, owner, resource, role, state, expires_at, revocation_due, provider_state, doc)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(grant.id.as_str())
        .bind(grant.request_id.as_str())
        .bind(&grant.owner)
        .bind(&grant.resource)
        .bind(&grant.role)
        .bind(grant.state.as_str())
        .bind(grant.expires_at.unix_millis())
        .bind(revocation_due(grant))
        .bind(to_json(&record.provider_state)?)
        .bind(to_json(grant)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn update_grant(&mut self, record: &GrantRecord) -> Result<()> {
        let grant = &record.grant;
        sqlx::query(
            "UPDATE grants SET state = ?, expires_at = ?, revocation_due = ?, provider_state = ?, doc = ? WHERE id = ?",
        )
        .bind(grant.state.as_str())
        .bind(grant.expires_at.unix_millis())
        .bind(revocation_due(grant))
        .bind(to_json(&record.provider_state)?)
        .bind(to_json(grant)?)
        .bind(grant.id.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// A pending request by `requester` for the same access, if any. One
    /// past its timeout at `now` no longer counts: it can no longer be
    /// approved, and the scheduler expires it.
    pub async fn pending_duplicate(
        &mut self,
        requester: &str,
        resource: &str,
        role: &str,
        now: Timestamp,
    ) -> Result<Option<RequestId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM requests WHERE requester = ? AND resource = ? AND role = ? AND state = 'pending' AND renews IS NULL AND pending_until > ? LIMIT 1",
        )
        .bind(requester)
        .bind(resource)
        .bind(role)
        .bind(now.unix_millis())
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(id.and_then(|id| RequestId::parse(&id).ok()))
    }

    /// A live grant `owner` holds for the same access, if any. One past its
    /// deadline at `now` no longer counts: it can no longer be renewed, and
    /// the scheduler expires it.
    pub async fn live_grant(
        &mut self,
        owner: &str,
        resource: &str,
        role: &str,
        now: Timestamp,
    ) -> Result<Option<GrantRecord>> {
        let row = sqlx::query(
            "SELECT doc, provider_state FROM grants WHERE owner = ? AND resource = ? AND role = ? AND state IN ('issuing', 'active') AND expires_at > ? LIMIT 1",
        )
        .bind(owner)
        .bind(resource)
        .bind(role)
        .bind(now.unix_millis())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(grant_record).transpose()
    }

    pub async fn pending_renewals(&mut self, grant: &GrantId) -> Result<Vec<AccessRequest>> {
        let rows = sqlx::query("SELECT doc FROM requests WHERE renews = ? AND state = 'pending'")
            .bind(grant.as_str())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(parse_doc).collect()
    }

    /// Live grants whose deadline has passed, earliest first.
    pub async fn due_grants(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT doc, provider_state FROM grants WHERE state IN ('issuing', 'active') AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now.unix_millis())
        .bind(limit(max))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(grant_record).collect()
    }

    /// Pending requests whose timeout has passed.
    pub async fn due_requests(&mut self, now: Timestamp, max: usize) -> Result<Vec<AccessRequest>> {
        let rows = sqlx::query(
            "SELECT doc FROM requests WHERE state = 'pending' AND pending_until <= ? ORDER BY pending_until LIMIT ?",
        )
        .bind(now.unix_millis())
        .bind(limit(max))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(parse_doc).collect()
    }

    /// Ended grants whose revocation is owed now.
    pub async fn due_revocations(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT doc, provider_state FROM grants WHERE revocation_due IS NOT NULL AND revocation_due <= ? ORDER BY revocation_due LIMIT ?",
        )
        .bind(now.unix_millis())
        .bind(limit(max))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(grant_record).collect()
    }

    /// Appends an event to the chain; it commits with the transaction.
    pub async fn audit(&mut self, mut event: AuditEvent) -> Result<()> {
        let (last_seq, prev) = match self.head {
            Some(head) => head,
            None => {
                let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *self.tx)
                    .await?;
                match row {
                    None => (0, GENESIS_HASH),
                    Some(row) => {
                        let seq = u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0);
                        let hash: String = row.try_get("hash")?;
                        let hash = from_hex(&hash)
                            .ok_or_else(|| Error::Internal(format!("audit event {seq} has a malformed hash")))?;
                        (seq, hash)
                    }
                }
            }
        };
        event.seq = last_seq + 1;
        let canonical = event.canonical();
        let hash = chain_hash(&prev, &canonical);
        sqlx::query(
            "INSERT INTO audit (seq, at, actor, action, target, subject, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
        .bind(event.at.unix_millis())
        .bind(&event.actor)
        .bind(event.action.as_str())
        .bind(&event.target)
        .bind(&event.subject)
        .bind(&canonical)
        .bind(to_hex(&prev))
        .bind(to_hex(&hash))
        .execute(&mut *self.tx)
        .await?;
        self.head = Some((event.seq, hash));
        self.appended.push(AuditRecord { event, prev_hash: to_hex(&prev), hash: to_hex(&hash) });
        Ok(())
    }

    /// Commits; returns the audit records it appended.
    pub async fn commit(self) -> Result<Vec<AuditRecord>> {
        self.tx.commit().await?;
        Ok(self.appended)
    }
}

fn revocation_due(grant: &Grant) -> Option<i64> {
    grant
        .revocation
        .as_ref()
        .filter(|r| r.status == hourglass_core::RevocationStatus::Pending)
        .and_then(|r| r.next_attempt_at)
        .map(Timestamp::unix_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_version_1_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hourglass.db");
        {
            let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = SqlitePoolOptions::new().connect_with(options).await.expect("sqlite");
            sqlx::raw_sql(MIGRATIONS[0]).execute(&pool).await.expect("version 1 schema");
            sqlx::query("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
                .execute(&pool)
                .await
                .expect("v1");
            pool.close().await;
        }
        let store = Store::open(&path).await.expect("opens and migrates");
        let version: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'schema_version'")
            .fetch_one(&store.reader)
            .await
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION.to_string(), "migrated to the current version");
        let column: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('requests') WHERE name = 'client_material'")
                .fetch_one(&store.reader)
                .await
                .expect("table info");
        assert_eq!(column, 1, "the client_material column was added");
        drop(store);
        Store::open(&path).await.expect("opening again applies nothing twice");
    }

    #[tokio::test]
    async fn a_store_from_a_newer_broker_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hourglass.db");
        let store = Store::open(&path).await.expect("fresh store");
        sqlx::query("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            .execute(&store.writer)
            .await
            .expect("bump");
        drop(store);
        let error = Store::open(&path).await.err().expect("refused").to_string();
        assert!(error.contains("understands versions up to"), "{error}");
    }
}
