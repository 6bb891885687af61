//! The opt-in managed block in `~/.pgpass` (or `$PGPASSFILE`), for database
//! IDEs that read libpq's password file rather than the environment.
//!
//! This is the one documented exception to "no secret in files": the user
//! turns it on (`hourglass pgpass enable`), the file stays 0600, and the
//! agent rewrites the block whenever grants change, so a line disappears at
//! its grant's deadline (and the password stops working then anyway:
//! `VALID UNTIL`). Lines outside the markers are never touched. Whether the
//! block is on is the file itself: the markers present mean on.

use std::path::{Path, PathBuf};

use hourglass_core::GrantId;
use zeroize::Zeroizing;

use crate::atomic_write::{self, Durability};

pub const BEGIN: &str = "# BEGIN hourglass: managed by the hourglass agent; lines here end with their grants";
pub const END: &str = "# END hourglass";

/// One line of the block: a live PostgreSQL grant.
#[derive(Clone)]
pub struct Entry {
    pub host: String,
    pub port: String,
    pub database: String,
    pub user: String,
    pub password: Zeroizing<String>,
    pub grant: GrantId,
}

/// libpq's rule: `$PGPASSFILE`, else `~/.pgpass`.
pub fn path() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("PGPASSFILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(file));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|home| PathBuf::from(home).join(".pgpass"))
}

/// `:` and `\` are escaped in `.pgpass` fields.
fn field(value: &str) -> String {
    value.replace('\\', r"\\").replace(':', r"\:")
}

fn render(entries: &[Entry]) -> Zeroizing<String> {
    let mut block = Zeroizing::new(String::new());
    block.push_str(BEGIN);
    block.push('\n');
    for entry in entries {
        block.push_str(&format!("# {}\n", entry.grant));
        block.push_str(&field(&entry.host));
        block.push(':');
        block.push_str(&field(&entry.port));
        block.push(':');
        block.push_str(&field(&entry.database));
        block.push(':');
        block.push_str(&field(&entry.user));
        block.push(':');
        block.push_str(&field(&entry.password));
        block.push('\n');
    }
    block.push_str(END);
    block.push('\n');
    block
}

/// Where the block is: (first line, one past the last line), by line index.
fn block_span(lines: &[&str]) -> Option<(usize, usize)> {
    let begin = lines.iter().position(|line| *line == BEGIN)?;
    let end = lines[begin..].iter().position(|line| *line == END).map_or(lines.len(), |offset| begin + offset + 1);
    Some((begin, end))
}

pub fn is_enabled(text: &str) -> bool {
    block_span(&text.lines().collect::<Vec<_>>()).is_some()
}

/// `text` with the block holding `entries` (added at the end when `add`
/// and absent); `None` when nothing is to change.
fn with_block(text: &str, entries: &[Entry], add: bool) -> Option<Zeroizing<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let block = render(entries);
    let mut out = Zeroizing::new(String::with_capacity(text.len() + block.len()));
    match block_span(&lines) {
        Some((begin, end)) => {
            for line in &lines[..begin] {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&block);
            for line in &lines[end..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        None if add => {
            out.push_str(text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&block);
        }
        None => return None,
    }
    (out.as_str() != text).then_some(out)
}

/// `text` without the block; `None` when it has none.
fn without_block(text: &str) -> Option<Zeroizing<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let (begin, end) = block_span(&lines)?;
    let mut out = Zeroizing::new(String::new());
    for line in lines[..begin].iter().chain(&lines[end..]) {
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

fn read(path: &Path) -> std::io::Result<Zeroizing<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Zeroizing::new(String::new())),
        Err(error) => Err(error),
    }
}

/// Replaces the file in one step, never wider than 0600 (see
/// [`crate::atomic_write`]): a reader never sees half a file.
fn write(path: &Path, text: &str) -> std::io::Result<()> {
    atomic_write::write(path, text.as_bytes(), Durability::Synced)
}

/// Turns the block on: adds it (empty) if absent. Returns whether it was off.
pub fn enable(path: &Path) -> std::io::Result<bool> {
    let text = read(path)?;
    if is_enabled(&text) {
        return Ok(false);
    }
    match with_block(&text, &[], true) {
        Some(new) => write(path, &new).map(|()| true),
        None => Ok(false),
    }
}

/// Turns the block off: removes it and its lines. Returns whether it was on.
pub fn disable(path: &Path) -> std::io::Result<bool> {
    let text = read(path)?;
    match without_block(&text) {
        Some(new) => write(path, &new).map(|()| true),
        None => Ok(false),
    }
}

/// Rewrites the block's lines to `entries` if the block is on. Returns
/// whether the file changed.
pub fn fill(path: &Path, entries: &[Entry]) -> std::io::Result<bool> {
    let text = read(path)?;
    match with_block(&text, entries, false) {
        Some(new) => write(path, &new).map(|()| true),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, password: &str) -> Entry {
        Entry {
            host: "db.example".into(),
            port: "5432".into(),
            database: "orders".into(),
            user: user.into(),
            password: Zeroizing::new(password.into()),
            grant: GrantId::from_random(3),
        }
    }

    #[test]
    fn the_block_is_rewritten_between_its_markers_and_other_lines_stay() {
        let dir = tempfile_dir();
        let path = dir.join("pgpass");
        std::fs::write(&path, "other:5432:*:me:mine\n").expect("seed");
        assert!(!fill(&path, &[entry("u", "p")]).expect("fill"), "off: nothing written");
        assert!(enable(&path).expect("enable"), "turned on");
        assert!(fill(&path, &[entry("hg_u", "a:b\\c")]).expect("fill"), "lines written");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("other:5432:*:me:mine\n"), "the user's line stays first: {text}");
        assert!(text.contains("\ndb.example:5432:orders:hg_u:a\\:b\\\\c\n"), "escaped fields: {text}");
        #[cfg(unix)]
        {
            let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).expect("meta").permissions());
            assert_eq!(mode & 0o777, 0o600, "libpq ignores a .pgpass others can read");
        }
        assert!(fill(&path, &[]).expect("fill"), "the grant ended");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("hg_u"), "its line is gone: {text}");
        assert!(is_enabled(&text), "the block stays on");
        assert!(disable(&path).expect("disable"), "turned off");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "other:5432:*:me:mine\n", "back to the user's file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hourglass-pgpass-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
