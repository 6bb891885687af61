//! One broker per SQLite file. Two brokers on one file would each take the
//! other's leased work as their own (at start a broker reclaims every
//! revocation and issue a stopped run left), so the second is refused at
//! open, naming the first. The lock is an advisory `flock` on a file beside
//! the store, released by the kernel when its process ends, however it ends
//! (a crash leaves nothing stale to clean up).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(super) struct StoreLock {
    /// Open for as long as the store: closing it releases the lock.
    _file: std::fs::File,
}

/// `DATA/hourglass.db` → `DATA/hourglass.db.lock`.
fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    name.into()
}

impl StoreLock {
    pub fn acquire(store: &Path) -> Result<StoreLock> {
        let path = lock_path(store);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process".to_owned() } else { holder.to_owned() };
                return Err(Error::Config(format!(
                    "the store {} is in use by another hourglassd ({holder}): two brokers on one SQLite file \
                     would corrupt it. Stop that one first, or run several brokers as replicas on PostgreSQL \
                     (README: \"Run several replicas\")",
                    store.display()
                )));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(Error::io(format!("locking {}", path.display()))(error));
            }
        }
        // Who holds it, for the next one that tries.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "this host".into());
        let note = format!(
            "pid {} on {host}, since {}\n",
            std::process::id(),
            crate::clock::Clock::now(&crate::clock::SystemClock)
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(StoreLock { _file: file })
    }
}
