//! The broker's store: requests, grants and the audit chain in SQLite.
//!
//! Every change goes through a [`WriteTx`]: one writer connection and
//! `BEGIN IMMEDIATE`, so read-modify-write sequences (count an approval,
//! claim due expiries, extend the chain) are serialized, and a state change
//! and its audit events commit together or not at all. A commit returns
//! once it is on disk; concurrent commits share the fsync (`durability.rs`).
//!
//! Statements run inline on the calling task (rusqlite): a transaction is a
//! handful of microsecond statements, and a thread hop for each, as an
//! async driver makes, cost more CPU than the statements themselves (the
//! broker's CPU per token lifecycle halved without them; BENCHMARKS.md).
//! The writer is one connection; readers are a few more, used concurrently.

mod durability;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use hourglass_core::api::ClientMaterial;
use hourglass_core::audit::{AuditEvent, AuditRecord, GENESIS_HASH, StoredLink, chain_hash, from_hex, to_hex};
use hourglass_core::{AccessRequest, Grant, GrantId, RequestId, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Params};

use crate::error::{Error, Result};
use durability::Durability;

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
    readers: Arc<Readers>,
    /// None when opened read-only.
    writer: Option<Arc<tokio::sync::Mutex<Writer>>>,
    durability: Option<Arc<Durability>>,
}

/// Read-only connections, taken in turn.
struct Readers {
    connections: Vec<tokio::sync::Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

/// Connections a store reads with.
const READERS: usize = 4;

impl Readers {
    fn open(path: &Path, count: usize) -> Result<Readers> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            let connection = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
            )?;
            connection.busy_timeout(StdDuration::from_secs(10))?;
            connection.set_prepared_statement_cache_capacity(64);
            connections.push(tokio::sync::Mutex::new(connection));
        }
        Ok(Readers { connections, next: std::sync::atomic::AtomicUsize::new(0) })
    }

    /// Runs `read` on the next connection.
    async fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.connections.len();
        let connection = self.connections[turn].lock().await;
        read(&connection)
    }
}

/// The one connection that writes, and what it knows of the audit chain.
struct Writer {
    connection: Connection,
    /// The chain's last link as committed, once read.
    chain_head: Option<ChainHead>,
}

/// The sequence number and hash of the audit chain's last event.
type ChainHead = (u64, [u8; 32]);

/// A write transaction (`BEGIN IMMEDIATE`), holding the writer until it is
/// committed or dropped (rolled back).
pub struct WriteTx {
    writer: tokio::sync::OwnedMutexGuard<Writer>,
    /// The chain head as this transaction extends it.
    head: Option<ChainHead>,
    appended: Vec<AuditRecord>,
    durability: Option<Arc<Durability>>,
    open: bool,
    /// The connection's change count at `BEGIN`: a transaction that changed
    /// nothing has nothing to flush.
    changes_at_begin: u64,
}

/// A stored JSON document.
fn from_doc<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T> {
    serde_json::from_str(doc).map_err(|error| Error::Internal(format!("stored document does not parse: {error}")))
}

/// The first column (a JSON document) of each row `sql` selects.
fn docs<T: serde::de::DeserializeOwned>(connection: &Connection, sql: &str, params: impl Params) -> Result<Vec<T>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| row.get::<_, String>(0))?;
    let mut docs = Vec::new();
    for row in rows {
        docs.push(from_doc(&row?)?);
    }
    Ok(docs)
}

/// The grants `sql` selects (its columns: doc, provider_state).
fn grant_rows(connection: &Connection, sql: &str, params: impl Params) -> Result<Vec<GrantRecord>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
    let mut records = Vec::new();
    for row in rows {
        let (doc, state) = row?;
        records.push(GrantRecord {
            grant: from_doc(&doc)?,
            provider_state: serde_json::from_str(&state)
                .map_err(|error| Error::Internal(format!("stored provider state does not parse: {error}")))?,
        });
    }
    Ok(records)
}

/// Audit links `sql` selects (its columns: seq, event, prev_hash, hash).
fn audit_rows(connection: &Connection, sql: &str, params: impl Params) -> Result<Vec<StoredLink>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| {
        Ok(StoredLink {
            seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
            canonical: row.get(1)?,
            prev_hash: row.get(2)?,
            hash: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        // Opening for writing fails on a read-only or full disk: say where.
        let cannot_open = |error: rusqlite::Error| {
            Error::Config(format!(
                "cannot open the store {} for writing (is its directory writable, its disk not full?): {error}",
                path.display()
            ))
        };
        let mut connection = Connection::open(path).map_err(cannot_open)?;
        connection.busy_timeout(StdDuration::from_secs(10))?;
        // NORMAL: SQLite writes the WAL without an fsync; `WriteTx::commit`
        // fsyncs it before returning, once for all concurrent commits, so an
        // acknowledged commit survives power loss as under FULL.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(cannot_open)?;
        connection.set_prepared_statement_cache_capacity(64);
        migrate(&mut connection, path)?;
        let durability = Arc::new(Durability::new(wal_path(path)));
        // The migrations, and the WAL's directory entry, on disk before anything else.
        durability.flushed(durability.committed()).await?;
        if let Some(dir) = path.parent() {
            durability::sync_dir(dir)?;
        }
        let writer = Writer { connection, chain_head: None };
        Ok(Store {
            readers: Arc::new(Readers::open(path, READERS)?),
            writer: Some(Arc::new(tokio::sync::Mutex::new(writer))),
            durability: Some(durability),
        })
    }

    /// Opens an existing store for reading only (audit verify and export
    /// while a broker runs on it).
    pub async fn open_read_only(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(Error::Config(format!("no store at {}", path.display())));
        }
        Ok(Store { readers: Arc::new(Readers::open(path, 2)?), writer: None, durability: None })
    }

    pub async fn begin(&self) -> Result<WriteTx> {
        let writer = self.writer.clone().ok_or_else(|| Error::Internal("the store is open read-only".into()))?;
        let writer = writer.lock_owned().await;
        writer.connection.execute_batch("BEGIN IMMEDIATE")?;
        Ok(WriteTx {
            changes_at_begin: writer.connection.total_changes(),
            head: writer.chain_head,
            writer,
            appended: Vec::new(),
            durability: self.durability.clone(),
            open: true,
        })
    }

    pub async fn request(&self, id: &RequestId) -> Result<Option<AccessRequest>> {
        self.readers.read(|c| Ok(docs(c, "SELECT doc FROM requests WHERE id = ?1", [id.as_str()])?.pop())).await
    }

    pub async fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>> {
        self.readers
            .read(|c| Ok(grant_rows(c, "SELECT doc, provider_state FROM grants WHERE id = ?1", [id.as_str()])?.pop()))
            .await
    }

    /// What the client sent with a request for its credential.
    pub async fn request_material(&self, id: &RequestId) -> Result<Option<ClientMaterial>> {
        let text: Option<Option<String>> = self
            .readers
            .read(|c| {
                Ok(c.prepare_cached("SELECT client_material FROM requests WHERE id = ?1")?
                    .query_row([id.as_str()], |row| row.get(0))
                    .optional()?)
            })
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
        self.readers
            .read(|c| {
                docs(
                    c,
                    "SELECT doc FROM requests WHERE requester = ?1 ORDER BY created_at DESC, id LIMIT ?2",
                    rusqlite::params![requester, limit(max)],
                )
            })
            .await
    }

    /// Every pending request, oldest first.
    pub async fn pending_requests(&self, max: usize) -> Result<Vec<AccessRequest>> {
        self.readers
            .read(|c| {
                docs(
                    c,
                    "SELECT doc FROM requests WHERE state = 'pending' ORDER BY pending_until LIMIT ?1",
                    [limit(max)],
                )
            })
            .await
    }

    /// Grants, newest deadline first: one owner's, or everybody's.
    pub async fn grants(&self, owner: Option<&str>, include_ended: bool, max: usize) -> Result<Vec<GrantRecord>> {
        let live = if include_ended { "" } else { "AND state IN ('issuing', 'active')" };
        let sql = format!(
            "SELECT doc, provider_state FROM grants WHERE (?1 IS NULL OR owner = ?1) {live} ORDER BY expires_at DESC, id LIMIT ?2"
        );
        self.readers.read(|c| grant_rows(c, &sql, rusqlite::params![owner, limit(max)])).await
    }

    /// Grants still being issued: work a crash interrupted.
    pub async fn issuing_grants(&self) -> Result<Vec<GrantRecord>> {
        self.readers.read(|c| grant_rows(c, "SELECT doc, provider_state FROM grants WHERE state = 'issuing'", [])).await
    }

    /// The earliest instant at which the scheduler has work: a live grant's
    /// deadline, a pending request's timeout or a revocation retry.
    pub async fn next_deadline(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = self
            .readers
            .read(|c| {
                Ok(c.prepare_cached(
                    "SELECT MIN(t) FROM (
                        SELECT MIN(expires_at) AS t FROM grants WHERE state IN ('issuing', 'active')
                        UNION ALL SELECT MIN(pending_until) FROM requests WHERE state = 'pending'
                        UNION ALL SELECT MIN(revocation_due) FROM grants WHERE revocation_due IS NOT NULL
                    )",
                )?
                .query_row([], |row| row.get(0))?)
            })
            .await?;
        Ok(next.map(Timestamp::from_unix_millis))
    }

    /// Audit events after `after` (a sequence number), in order, for verification.
    pub async fn audit_links(&self, after: u64, max: usize) -> Result<Vec<StoredLink>> {
        self.readers
            .read(|c| {
                audit_rows(
                    c,
                    "SELECT seq, event, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    rusqlite::params![i64::try_from(after).unwrap_or(i64::MAX), limit(max)],
                )
            })
            .await
    }

    /// Audit records after `after`, in order, for export.
    pub async fn audit_records(&self, after: u64, max: usize) -> Result<Vec<AuditRecord>> {
        self.audit_links(after, max).await?.into_iter().map(record_of).collect()
    }

    /// A principal's history: events about their access or by them, newest first.
    pub async fn history(&self, principal: &str, max: usize) -> Result<Vec<AuditRecord>> {
        let links = self
            .readers
            .read(|c| {
                audit_rows(
                    c,
                    "SELECT seq, event, prev_hash, hash FROM audit WHERE subject = ?1 OR actor = ?1 ORDER BY seq DESC LIMIT ?2",
                    rusqlite::params![principal, limit(max)],
                )
            })
            .await?;
        links.into_iter().map(record_of).collect()
    }
}

/// Brings the store to [`SCHEMA_VERSION`], each step in its own transaction.
fn migrate(connection: &mut Connection, path: &Path) -> Result<()> {
    connection.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    let stored: Option<String> =
        connection.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0)).optional()?;
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
        let tx = connection.transaction()?;
        tx.execute_batch(step)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(index + 1).to_string()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// SQLite's write-ahead log beside the database at `path`.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

fn record_of(link: StoredLink) -> Result<AuditRecord> {
    let event: AuditEvent = serde_json::from_str(&link.canonical)
        .map_err(|error| Error::Internal(format!("audit event {} does not parse: {error}", link.seq)))?;
    Ok(AuditRecord { event, prev_hash: link.prev_hash, hash: link.hash })
}

impl WriteTx {
    fn connection(&self) -> &Connection {
        &self.writer.connection
    }

    fn execute(&self, sql: &str, params: impl Params) -> Result<()> {
        self.connection().prepare_cached(sql)?.execute(params)?;
        Ok(())
    }

    pub async fn request(&mut self, id: &RequestId) -> Result<Option<AccessRequest>> {
        Ok(docs(self.connection(), "SELECT doc FROM requests WHERE id = ?1", [id.as_str()])?.pop())
    }

    pub async fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>> {
        Ok(grant_rows(self.connection(), "SELECT doc, provider_state FROM grants WHERE id = ?1", [id.as_str()])?.pop())
    }

    pub async fn insert_request(&mut self, request: &AccessRequest, material: Option<&ClientMaterial>) -> Result<()> {
        let material = material.map(to_json).transpose()?;
        self.execute(
            "INSERT INTO requests (id, requester, resource, role, state, renews, created_at, pending_until, doc, client_material)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                request.id.as_str(),
                request.requester,
                request.resource,
                request.role,
                request.state.as_str(),
                request.renews.as_ref().map(GrantId::as_str),
                request.created_at.unix_millis(),
                request.pending_until.unix_millis(),
                to_json(request)?,
                material,
            ],
        )
    }

    pub async fn update_request(&mut self, request: &AccessRequest) -> Result<()> {
        self.execute(
            "UPDATE requests SET state = ?1, doc = ?2 WHERE id = ?3",
            rusqlite::params![request.state.as_str(), to_json(request)?, request.id.as_str()],
        )
    }

    pub async fn insert_grant(&mut self, record: &GrantRecord) -> Result<()> {
        let grant = &record.grant;
        self.execute(
            "INSERT INTO grants (id, request_id, owner, resource, role, state, expires_at, revocation_due, provider_state, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                grant.id.as_str(),
                grant.request_id.as_str(),
                grant.owner,
                grant.resource,
                grant.role,
                grant.state.as_str(),
                grant.expires_at.unix_millis(),
                revocation_due(grant),
                to_json(&record.provider_state)?,
                to_json(grant)?,
            ],
        )
    }

    pub async fn update_grant(&mut self, record: &GrantRecord) -> Result<()> {
        let grant = &record.grant;
        self.execute(
            "UPDATE grants SET state = ?1, expires_at = ?2, revocation_due = ?3, provider_state = ?4, doc = ?5 WHERE id = ?6",
            rusqlite::params![
                grant.state.as_str(),
                grant.expires_at.unix_millis(),
                revocation_due(grant),
                to_json(&record.provider_state)?,
                to_json(grant)?,
                grant.id.as_str(),
            ],
        )
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
        let mut statement = self.connection().prepare_cached(
            "SELECT id FROM requests WHERE requester = ?1 AND resource = ?2 AND role = ?3 AND state = 'pending' AND renews IS NULL AND pending_until > ?4 LIMIT 1",
        )?;
        let id: Option<String> = statement
            .query_row(rusqlite::params![requester, resource, role, now.unix_millis()], |row| row.get(0))
            .optional()?;
        Ok(id.and_then(|id| RequestId::parse(&id).ok()))
    }

    /// How many requests of `requester` wait for approval at `now`
    /// (renewals included; one past its timeout no longer waits).
    pub async fn pending_count(&mut self, requester: &str, now: Timestamp) -> Result<u64> {
        let mut statement = self.connection().prepare_cached(
            "SELECT count(*) FROM requests WHERE requester = ?1 AND state = 'pending' AND pending_until > ?2",
        )?;
        let count: i64 = statement.query_row(rusqlite::params![requester, now.unix_millis()], |row| row.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
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
        Ok(grant_rows(
                self.connection(),
                "SELECT doc, provider_state FROM grants WHERE owner = ?1 AND resource = ?2 AND role = ?3 AND state IN ('issuing', 'active') AND expires_at > ?4 LIMIT 1",
                rusqlite::params![owner, resource, role, now.unix_millis()],
            )?
            .pop())
    }

    /// Live grants on `resource`, narrowed to a role and an owner when given.
    pub async fn live_grants_on(
        &mut self,
        resource: &str,
        role: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<GrantRecord>> {
        grant_rows(
            self.connection(),
            "SELECT doc, provider_state FROM grants WHERE state IN ('issuing', 'active') AND resource = ?1 AND (?2 IS NULL OR role = ?2) AND (?3 IS NULL OR owner = ?3) ORDER BY expires_at",
            rusqlite::params![resource, role, owner],
        )
    }

    pub async fn pending_renewals(&mut self, grant: &GrantId) -> Result<Vec<AccessRequest>> {
        docs(self.connection(), "SELECT doc FROM requests WHERE renews = ?1 AND state = 'pending'", [grant.as_str()])
    }

    /// Live grants whose deadline has passed, earliest first.
    pub async fn due_grants(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        grant_rows(
            self.connection(),
            "SELECT doc, provider_state FROM grants WHERE state IN ('issuing', 'active') AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
            rusqlite::params![now.unix_millis(), limit(max)],
        )
    }

    /// Pending requests whose timeout has passed.
    pub async fn due_requests(&mut self, now: Timestamp, max: usize) -> Result<Vec<AccessRequest>> {
        docs(
            self.connection(),
            "SELECT doc FROM requests WHERE state = 'pending' AND pending_until <= ?1 ORDER BY pending_until LIMIT ?2",
            rusqlite::params![now.unix_millis(), limit(max)],
        )
    }

    /// Ended grants whose revocation is owed now.
    pub async fn due_revocations(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        grant_rows(
            self.connection(),
            "SELECT doc, provider_state FROM grants WHERE revocation_due IS NOT NULL AND revocation_due <= ?1 ORDER BY revocation_due LIMIT ?2",
            rusqlite::params![now.unix_millis(), limit(max)],
        )
    }

    /// Pending revocations not due before `now`: claimed by an attempt
    /// (their lease) or waiting out a backoff.
    pub async fn leased_revocations(&mut self, now: Timestamp, max: usize) -> Result<Vec<GrantRecord>> {
        grant_rows(
            self.connection(),
            "SELECT doc, provider_state FROM grants WHERE revocation_due IS NOT NULL AND revocation_due > ?1 ORDER BY revocation_due LIMIT ?2",
            rusqlite::params![now.unix_millis(), limit(max)],
        )
    }

    /// Appends an event to the chain; it commits with the transaction.
    pub async fn audit(&mut self, mut event: AuditEvent) -> Result<()> {
        let (last_seq, prev) = match self.head {
            Some(head) => head,
            None => {
                let last: Option<(i64, String)> = self
                    .connection()
                    .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                match last {
                    None => (0, GENESIS_HASH),
                    Some((seq, hash)) => {
                        let seq = u64::try_from(seq).unwrap_or(0);
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
        self.execute(
            "INSERT INTO audit (seq, at, actor, action, target, subject, event, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                i64::try_from(event.seq).unwrap_or(i64::MAX),
                event.at.unix_millis(),
                event.actor,
                event.action.as_str(),
                event.target,
                event.subject,
                canonical,
                to_hex(&prev),
                to_hex(&hash),
            ],
        )?;
        self.head = Some((event.seq, hash));
        self.appended.push(AuditRecord { event, prev_hash: to_hex(&prev), hash: to_hex(&hash) });
        Ok(())
    }

    /// Commits, and returns once the commit is on disk; returns the audit
    /// records it appended.
    pub async fn commit(mut self) -> Result<Vec<AuditRecord>> {
        self.open = false;
        // Inline, as every statement: handing the thread over for it cost
        // more than the commit (a WAL append; the fsync comes after).
        let committed = self.writer.connection.execute_batch("COMMIT");
        if let Err(error) = committed {
            // Whether it committed is unknown: read the head again next time.
            self.writer.chain_head = None;
            let _ = self.writer.connection.execute_batch("ROLLBACK");
            return Err(error.into());
        }
        self.writer.chain_head = self.head;
        let appended = std::mem::take(&mut self.appended);
        let changed = self.writer.connection.total_changes() != self.changes_at_begin;
        let durability = self.durability.take().filter(|_| changed);
        // The next transaction may start while this one waits for the disk.
        drop(self);
        if let Some(durability) = durability {
            durability.flushed(durability.committed()).await?;
        }
        Ok(appended)
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            // Not committed: nothing of it happened.
            if let Err(error) = self.writer.connection.execute_batch("ROLLBACK") {
                tracing::error!("rolling back a store transaction failed: {error}");
            }
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_acknowledged_after_a_flush_they_share() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("hourglass.db")).await.expect("fresh store");
        let durability = store.durability.clone().expect("a writable store");
        let syncs_before = durability.syncs();
        // A flush in progress: commits may go to the WAL meanwhile, but none
        // is acknowledged until a flush after it.
        let flushing = durability.turn.lock().await;
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..8 {
            let (store, done_tx) = (store.clone(), done_tx.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.expect("begin");
                let at = Timestamp::from_unix_millis(1_800_000_000_000 + i);
                let event = AuditEvent::new(
                    at,
                    "alice@acme.example",
                    hourglass_core::audit::AuditAction::RequestFiled,
                    "req",
                    hourglass_core::audit::AuditResult::Ok,
                );
                tx.audit(event).await.expect("append");
                tx.commit().await.expect("commit");
                done_tx.send(()).expect("report");
            });
        }
        drop(done_tx);
        while durability.committed.load(std::sync::atomic::Ordering::Acquire) < 9 {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        assert!(done.try_recv().is_err(), "a commit was acknowledged before any flush covered it");
        drop(flushing);
        let mut acknowledged = 0;
        while done.recv().await.is_some() {
            acknowledged += 1;
        }
        assert_eq!(acknowledged, 8);
        assert_eq!(durability.syncs() - syncs_before, 1, "the eight commits waiting shared one fsync");
        assert_eq!(store.audit_records(0, 100).await.expect("audit").len(), 8, "all eight are in the chain");
    }

    #[tokio::test]
    async fn a_version_1_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hourglass.db");
        {
            let connection = Connection::open(&path).expect("sqlite");
            connection.execute_batch(MIGRATIONS[0]).expect("version 1 schema");
            connection.execute_batch("INSERT INTO meta (key, value) VALUES ('schema_version', '1')").expect("v1");
        }
        let store = Store::open(&path).await.expect("opens and migrates");
        let (version, column): (String, i64) = store
            .readers
            .read(|c| {
                let version = c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))?;
                let column = c.query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('requests') WHERE name = 'client_material'",
                    [],
                    |r| r.get(0),
                )?;
                Ok((version, column))
            })
            .await
            .expect("read");
        assert_eq!(version, SCHEMA_VERSION.to_string(), "migrated to the current version");
        assert_eq!(column, 1, "the client_material column was added");
        drop(store);
        Store::open(&path).await.expect("opening again applies nothing twice");
    }

    #[tokio::test]
    async fn a_store_from_a_newer_broker_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hourglass.db");
        let store = Store::open(&path).await.expect("fresh store");
        let writer = store.writer.clone().expect("writable");
        writer
            .lock()
            .await
            .connection
            .execute_batch("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            .expect("bump");
        drop(writer);
        drop(store);
        let error = Store::open(&path).await.err().expect("refused").to_string();
        assert!(error.contains("understands versions up to"), "{error}");
    }
}
