//! Replacing a file whole: the contents go to a new file beside it, which
//! is then renamed over it (`tempfile`'s `persist`). A reader sees the old
//! contents or the new, never half a file; a crash leaves one or the other.
//! The new file is created private (0600 on Unix) and stays so: a file that
//! may hold a secret (`.pgpass`) is never readable by others on the way.
//! Every file the client crates replace goes through [`write`].

use std::io::Write;
use std::path::Path;

/// Whether the new contents must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed to disk before the rename: settings, `.pgpass`.
    Synced,
    /// Not flushed: a runtime file rewritten at every start (the hook
    /// state line), where a flush would only slow every change down.
    Volatile,
}

/// Replaces `path` with `contents`.
pub fn write(path: &Path, contents: &[u8], durability: Durability) -> std::io::Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new().prefix(".hourglass-").tempfile_in(dir)?;
    file.write_all(contents)?;
    if durability == Durability::Synced {
        file.as_file().sync_all()?;
    }
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_whole_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("file");
        write(&path, b"first", Durability::Synced).expect("created");
        write(&path, b"second", Durability::Volatile).expect("replaced");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["file"], "no temporary file is left");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_makes_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        write(&path, b"pw", Durability::Synced).expect("written");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    }
}
