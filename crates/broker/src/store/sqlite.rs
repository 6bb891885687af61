//! The embedded engine: one SQLite file for one broker.
//!
//! Every change goes through one writer connection and `BEGIN IMMEDIATE`,
//! so read-modify-write sequences are serialized in this process; a second
//! broker on the same file is refused at open (`lock.rs`), so no other
//! process writes. A commit returns once it is on disk; concurrent commits
//! share the fsync (`durability.rs`).
//!
//! Statements run inline on the calling task (rusqlite): a transaction is a
//! handful of microsecond statements, and a thread hop for each, as an
//! async driver makes, cost more CPU than the statements themselves (the
//! broker's CPU per token lifecycle halved without them; BENCHMARKS.md).
//! The writer is one connection; readers are a few more, used concurrently.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::durability::{self, Durability};
use super::lock::StoreLock;
use super::migrations::{MIGRATIONS, stored_version};
use crate::error::{Error, Result};

/// Connections a store reads with.
const READERS: usize = 4;

pub(super) struct SqliteStore {
    path: PathBuf,
    readers: Vec<tokio::sync::Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// None when opened read-only.
    writer: Option<Arc<tokio::sync::Mutex<Connection>>>,
    durability: Option<Arc<Durability>>,
    /// Held while the store is open for writing: no other broker writes.
    _lock: Option<StoreLock>,
}

/// The unix time in ms, as `hourglass_now_ms()` in SQL: the clock leases
/// are measured on. One broker per file: its own clock.
fn now_ms() -> i64 {
    crate::clock::Clock::now(&crate::clock::SystemClock).unix_millis()
}

fn prepare(connection: &Connection) -> rusqlite::Result<()> {
    connection.busy_timeout(StdDuration::from_secs(10))?;
    connection.set_prepared_statement_cache_capacity(64);
    connection.create_scalar_function("hourglass_now_ms", 0, FunctionFlags::SQLITE_UTF8, |_| Ok(now_ms()))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` for this broker alone.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let lock = StoreLock::acquire(path)?;
        // Opening for writing fails on a read-only or full disk: say where.
        let cannot_open = |error: rusqlite::Error| {
            Error::Config(format!(
                "cannot open the store {} for writing (is its directory writable, its disk not full?): {error}",
                path.display()
            ))
        };
        let mut connection = Connection::open(path).map_err(cannot_open)?;
        prepare(&connection)?;
        // NORMAL: SQLite writes the WAL without an fsync; `commit` fsyncs it
        // before returning, once for all concurrent commits, so an
        // acknowledged commit survives power loss as under FULL.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(cannot_open)?;
        migrate(&mut connection, path)?;
        let durability = Arc::new(Durability::new(wal_path(path)));
        // The migrations, and the WAL's directory entry, on disk before anything else.
        durability.flushed(durability.committed()).await?;
        if let Some(dir) = path.parent() {
            durability::sync_dir(dir)?;
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            readers: open_readers(path, READERS)?,
            next_reader: AtomicUsize::new(0),
            writer: Some(Arc::new(tokio::sync::Mutex::new(connection))),
            durability: Some(durability),
            _lock: Some(lock),
        })
    }

    /// Opens an existing store for reading only (audit verify and export
    /// while a broker runs on it): no lock, no migration.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore> {
        if !path.exists() {
            return Err(Error::Config(format!("no store at {}", path.display())));
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            readers: open_readers(path, 2)?,
            next_reader: AtomicUsize::new(0),
            writer: None,
            durability: None,
            _lock: None,
        })
    }

    pub fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    /// The next reader, in turn.
    pub async fn reader(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[turn].lock().await
    }

    pub async fn begin(&self) -> Result<SqliteTx> {
        let writer = self.writer.clone().ok_or_else(|| Error::Internal("the store is open read-only".into()))?;
        let writer = writer.lock_owned().await;
        writer.execute_batch("BEGIN IMMEDIATE")?;
        Ok(SqliteTx {
            changes_at_begin: writer.total_changes(),
            writer,
            durability: self.durability.clone(),
            open: true,
        })
    }
}

fn open_readers(path: &Path, count: usize) -> Result<Vec<tokio::sync::Mutex<Connection>>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        prepare(&connection)?;
        connections.push(tokio::sync::Mutex::new(connection));
    }
    Ok(connections)
}

/// A write transaction (`BEGIN IMMEDIATE`), holding the writer until it is
/// committed or dropped (rolled back).
pub(super) struct SqliteTx {
    writer: tokio::sync::OwnedMutexGuard<Connection>,
    durability: Option<Arc<Durability>>,
    open: bool,
    /// The connection's change count at `BEGIN`: a transaction that changed
    /// nothing has nothing to flush.
    changes_at_begin: u64,
}

impl SqliteTx {
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.writer
    }

    /// Commits, and returns once the commit is on disk.
    pub async fn commit(mut self) -> Result<()> {
        self.open = false;
        // Inline, as every statement: handing the thread over for it cost
        // more than the commit (a WAL append; the fsync comes after).
        if let Err(error) = self.writer.execute_batch("COMMIT") {
            let _ = self.writer.execute_batch("ROLLBACK");
            return Err(error.into());
        }
        let changed = self.writer.total_changes() != self.changes_at_begin;
        let durability = self.durability.take().filter(|_| changed);
        // The next transaction may start while this one waits for the disk.
        drop(self);
        if let Some(durability) = durability {
            durability.flushed(durability.committed()).await?;
        }
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            // Not committed: nothing of it happened.
            if let Err(error) = self.writer.execute_batch("ROLLBACK") {
                tracing::error!("rolling back a store transaction failed: {error}");
            }
        }
    }
}

/// Brings the store to the current version, each step in its own transaction.
fn migrate(connection: &mut Connection, path: &Path) -> Result<()> {
    connection.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    let stored: Option<String> =
        connection.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0)).optional()?;
    let version = stored_version(stored.as_deref(), &path.display().to_string())?;
    for (index, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = connection.transaction()?;
        for text in step.sqlite {
            tx.execute_batch(text)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(index + 1).to_string()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// SQLite's write-ahead log beside the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

#[cfg(test)]
impl SqliteStore {
    pub fn durability(&self) -> Option<Arc<Durability>> {
        self.durability.clone()
    }

    pub fn writer(&self) -> Option<Arc<tokio::sync::Mutex<Connection>>> {
        self.writer.clone()
    }
}
