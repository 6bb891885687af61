//! Starting at login: an XDG autostart entry
//! (`$XDG_CONFIG_HOME/autostart/hourglass-desktop.desktop`) that starts the
//! app in the tray, without its window.

use std::path::{Path, PathBuf};

use hourglass_client::atomic_write::{self, Durability};

pub const FILE_NAME: &str = "hourglass-desktop.desktop";

pub fn autostart_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("autostart"))
}

/// The entry for the app at `exe`.
pub fn entry(exe: &Path) -> String {
    // Desktop entry Exec values quote arguments with double quotes.
    let exe = exe.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "[Desktop Entry]\nType=Application\nName=Hourglass\nComment=Just-in-time access\nExec=\"{exe}\" --hidden\nIcon=hourglass-desktop\nX-GNOME-Autostart-enabled=true\nNoDisplay=false\n"
    )
}

/// Writes or removes the entry in `dir`.
pub fn apply(dir: &Path, enabled: bool, exe: &Path) -> std::io::Result<()> {
    let path = dir.join(FILE_NAME);
    if enabled {
        std::fs::create_dir_all(dir)?;
        atomic_write::write(&path, entry(exe).as_bytes(), Durability::Synced)
    } else {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autostart_entry_is_written_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let exe = Path::new("/opt/Hourglass \"beta\"/hourglass-desktop");
        apply(dir.path(), true, exe).expect("enable");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("written");
        assert!(text.contains("Exec=\"/opt/Hourglass \\\"beta\\\"/hourglass-desktop\" --hidden"), "{text}");
        apply(dir.path(), false, exe).expect("disable");
        assert!(!dir.path().join(FILE_NAME).exists(), "removed");
        apply(dir.path(), false, exe).expect("disabling twice is fine");
    }
}
