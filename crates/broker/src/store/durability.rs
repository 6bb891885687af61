//! Group commit: a commit is acknowledged only once it is on disk, and
//! commits that finish while a flush runs share the next one.
//!
//! The writer connection commits with `synchronous = NORMAL`: in WAL mode
//! SQLite then writes the transaction's frames to the `-wal` file without
//! an fsync. [`Durability::flushed`] fsyncs that file once for every commit
//! counted so far, so an acknowledged transaction survives power loss as
//! it would under `synchronous = FULL`, while N concurrent commits cost one
//! fsync instead of N. This is safe because
//! - the WAL is append-only between checkpoints, so one fsync covers every
//!   frame written before it;
//! - SQLite syncs the WAL before each checkpoint and the database after it,
//!   so frames a checkpoint moved are durable in the database file, and
//!   a WAL restarted after a checkpoint only holds newer frames;
//! - the file is opened for each flush, so a WAL that SQLite deleted (all
//!   checkpointed, then durable in the database) and recreated is never
//!   missed through a stale descriptor.
//!
//! Another connection can read a transaction between its commit and its
//! flush. Nothing is acknowledged, published or acted on outside the store
//! before `flushed` returns, so what such a read sees is at worst a state a
//! power loss takes back before anybody was told of it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

pub(super) struct Durability {
    wal: PathBuf,
    /// Commits written to the WAL (in the page cache, maybe not on disk).
    pub(super) committed: AtomicU64,
    /// Commits known to be on disk.
    flushed: AtomicU64,
    /// One flush at a time; waiters behind it are covered by the next.
    pub(super) turn: tokio::sync::Mutex<()>,
    /// fsyncs done, for tests and metrics.
    syncs: AtomicU64,
}

impl Durability {
    pub(super) fn new(wal: PathBuf) -> Durability {
        Durability {
            wal,
            committed: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            syncs: AtomicU64::new(0),
        }
    }

    /// Counts a commit that just returned; its number for [`Self::flushed`].
    pub(super) fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Returns once commit `number` is on disk.
    pub(super) async fn flushed(&self, number: u64) -> Result<()> {
        if self.flushed.load(Ordering::Acquire) >= number {
            return Ok(());
        }
        let _turn = self.turn.lock().await;
        if self.flushed.load(Ordering::Acquire) >= number {
            return Ok(()); // the flush we waited behind covered it
        }
        // Every commit counted so far has its frames in the WAL already.
        let covered = self.committed.load(Ordering::Acquire);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || sync_file(&wal))
            .await
            .map_err(|error| Error::Internal(format!("the store flush stopped: {error}")))??;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.flushed.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// fsyncs `path`'s data; a file that is gone has nothing unflushed (SQLite
/// deletes the WAL only after checkpointing it into a synced database).
fn sync_file(path: &std::path::Path) -> Result<()> {
    match std::fs::File::open(path) {
        Ok(file) => file.sync_data().map_err(Error::io(format!("flushing {} to disk", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::io(format!("opening {} to flush it", path.display()))(error)),
    }
}

/// fsyncs a directory, so that a file created in it (the WAL) survives.
pub(super) fn sync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("flushing the directory {} to disk", dir.display())))
}
