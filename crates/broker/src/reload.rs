//! Hot reload: the policy directory is checked every second (and on SIGHUP);
//! a change is loaded and validated as a whole, and refused whole if invalid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime};

use crate::broker::{Broker, Reload};

/// Name, size and modification time of every policy file: cheap to take
/// every second, and any edit, addition or removal changes it.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if meta.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "cedar" || ext == "toml") {
                files.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    files
}

pub async fn watch_policy(broker: Arc<Broker>, dir: PathBuf) {
    let mut last = fingerprint(&dir);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<()>();
        let forced = tokio::select! {
            () = tokio::time::sleep(StdDuration::from_secs(1)) => false,
            () = hangup_received => true,
            () = broker.stopping() => return,
        };
        let current = fingerprint(&dir);
        if !forced && current == last {
            continue;
        }
        last = current;
        match broker.reload_policy().await {
            Ok(Reload::Loaded { digest }) => tracing::info!("policy {} loaded from {}", &digest[..12], dir.display()),
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Refused { .. }) => {}
            Err(error) => tracing::error!("policy reload failed: {error}"),
        }
    }
}
