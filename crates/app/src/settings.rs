//! What a user sets in the app: which broker, when to warn, which
//! notifications, start at login. No secret is ever part of it: the session
//! lives in the keyring. Stored as JSON in `$XDG_CONFIG_HOME/hourglass/desktop.json`.

use std::path::{Path, PathBuf};

use hourglass_client::atomic_write::{self, Durability};
use hourglass_core::{Duration, Warnings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
pub struct Settings {
    pub broker_url: String,
    /// How long before a deadline to warn, largest first (default 10m and 2m).
    pub warn_before: Vec<Duration>,
    pub notify: NotifyKinds,
    pub start_at_login: bool,
}

/// Which notifications to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
pub struct NotifyKinds {
    /// A request waits for my approval.
    pub approval_needed: bool,
    /// My request was approved or denied.
    pub decided: bool,
    /// A grant of mine expires soon.
    pub expiring: bool,
    /// A grant of mine was revoked by someone else.
    pub revoked: bool,
}

impl Default for NotifyKinds {
    fn default() -> Self {
        NotifyKinds { approval_needed: true, decided: true, expiring: true, revoked: true }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            broker_url: hourglass_client::DEFAULT_BROKER.into(),
            warn_before: Warnings::DEFAULT.to_vec(),
            notify: NotifyKinds::default(),
            start_at_login: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not valid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Rejected(String),
}

impl Settings {
    /// Checks what a user entered before it is saved.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let url = self.broker_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SettingsError::Rejected(format!(
                "broker URL \"{url}\" must start with https:// (or http:// for a local broker)"
            )));
        }
        if self.warn_before.iter().any(|d| d.is_zero()) {
            return Err(SettingsError::Rejected("warning times must be at least 1s".into()));
        }
        Ok(())
    }

    /// The warning times, as core's rules read them.
    pub fn warnings(&self) -> Warnings {
        Warnings::new(self.warn_before.iter().copied())
    }

    /// `$XDG_CONFIG_HOME/hourglass/desktop.json` (or `~/.config/…`).
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
        Some(base.join("hourglass/desktop.json"))
    }

    /// Reads settings; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|error| SettingsError::Invalid { path: path.to_owned(), message: error.to_string() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(source) => Err(SettingsError::Read { path: path.to_owned(), source }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        self.validate()?;
        let write = |source| SettingsError::Write { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| SettingsError::Rejected(e.to_string()))?;
        atomic_write::write(path, text.as_bytes(), Durability::Synced).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_missing_file_means_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("hourglass/desktop.json");
        assert_eq!(Settings::load(&path).expect("defaults"), Settings::default(), "no file: defaults");
        let mut settings = Settings { warn_before: vec![Duration::from_mins(5)], ..Settings::default() };
        settings.notify.revoked = false;
        settings.save(&path).expect("save");
        assert_eq!(Settings::load(&path).expect("load"), settings, "what was saved is read back");
    }

    #[test]
    fn partial_files_keep_defaults_for_what_they_omit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("desktop.json");
        std::fs::write(&path, r#"{"broker_url": "https://hourglass.acme.example"}"#).expect("write");
        let settings = Settings::load(&path).expect("load");
        assert_eq!(settings.broker_url, "https://hourglass.acme.example");
        assert_eq!(settings.warn_before, Settings::default().warn_before, "defaults fill the rest");
    }

    #[test]
    fn bad_settings_are_refused_and_not_saved() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("desktop.json");
        let settings = Settings { broker_url: "hourglass.acme.example".into(), ..Settings::default() };
        let error = settings.save(&path).expect_err("no scheme").to_string();
        assert!(error.contains("must start with https://"), "{error}");
        assert!(!path.exists(), "nothing written");
        std::fs::write(&path, "{ not json").expect("write");
        assert!(Settings::load(&path).expect_err("invalid").to_string().contains("is not valid"));
    }

    #[test]
    fn warnings_are_ordered_largest_first() {
        let settings = Settings {
            warn_before: vec![Duration::from_mins(2), Duration::from_mins(10), Duration::from_mins(2)],
            ..Settings::default()
        };
        assert_eq!(settings.warnings().times(), [Duration::from_mins(10), Duration::from_mins(2)]);
    }
}
