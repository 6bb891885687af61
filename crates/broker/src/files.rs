//! Files the broker writes (its keys, the dev certificates, the KRL, the
//! SSH CA's public key, the demo policy): written whole or not at all. The
//! contents go to a temporary file beside the target, are flushed to disk,
//! and the temporary file is renamed over the target, so a reader (sshd, a
//! restarted broker) never sees half a file and a crash leaves the old one.

use std::io::Write;
use std::path::Path;

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The broker's user only (0600): keys.
    Owner,
    /// Anyone (0644): certificates, the KRL, the policy.
    Everyone,
}

/// Writes `contents` to `path`, replacing what is there, creating the
/// directory if needed.
pub fn write_atomic(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    let temp = written_beside(path, contents, access)?;
    temp.persist(path).map_err(|error| error.error)?;
    sync_directory(path);
    Ok(())
}

/// Writes `contents` to `path` unless a file is already there (another
/// process made it first): returns whether this call made it.
pub fn create_atomic(path: &Path, contents: &[u8], access: Access) -> std::io::Result<bool> {
    let temp = written_beside(path, contents, access)?;
    match temp.persist_noclobber(path) {
        Ok(_) => {
            sync_directory(path);
            Ok(true)
        }
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error.error),
    }
}

/// Makes `dir` (the data directory) the broker's user's alone: created
/// 0700 when missing, and narrowed to 0700 when others could enter it.
/// Returns whether it was narrowed. Inside are the store and its key: no
/// other user of the host, an exec hook run as one included, reads them.
pub fn private_dir(dir: &Path) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            return Ok(false);
        }
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            return Ok(true);
        }
        Ok(false)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)?;
        Ok(false)
    }
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A temporary file in `path`'s directory holding `contents`, on disk.
/// Removed if dropped before it is renamed.
fn written_beside(path: &Path, contents: &[u8], access: Access) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = directory_of(path);
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Created readable by the owner only (tempfile's default), so a secret
    // is never readable by others, even for a moment.
    let mut temp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    #[cfg(unix)]
    if access == Access::Everyone {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = access;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    Ok(temp)
}

/// Makes a rename durable; not every filesystem allows it, and the file is
/// whole either way.
fn sync_directory(path: &Path) {
    if let Ok(directory) = std::fs::File::open(directory_of(path)) {
        let _ = directory.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_replaces_the_old_one_whole_with_its_access() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("sub/krl");
        write_atomic(&path, b"first", Access::Everyone).expect("written");
        write_atomic(&path, b"second", Access::Everyone).expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let key = dir.path().join("key");
        write_atomic(&key, b"secret", Access::Owner).expect("written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o644, "anyone may read the KRL");
            assert_eq!(mode(&key), 0o600, "only the broker reads a key");
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("listed")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        assert!(names.iter().all(|name| !name.ends_with(".tmp")), "no temporary file left: {names:?}");
    }

    #[test]
    fn creating_never_replaces_a_file_another_made_first() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("store.key");
        assert!(create_atomic(&path, b"mine", Access::Owner).expect("created"), "made by this call");
        assert!(!create_atomic(&path, b"theirs", Access::Owner).expect("no error"), "already there");
        assert_eq!(std::fs::read(&path).expect("read"), b"mine", "the first one stays");
    }
}
