//! The front end's TypeScript types are generated from the Rust types it
//! receives. This test fails when the committed ones (ui/src/bindings) are
//! stale; run it with HOURGLASS_UPDATE_BINDINGS=1 to regenerate them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hourglass_app::alerts::Alert;
use hourglass_app::integration::IntegrationStatus;
use hourglass_app::settings::Settings;
use hourglass_app::tray::TrayStatus;
use hourglass_app::view::{Account, AppView};
use hourglass_core::api::{ApiError, Catalog, CreateRequest, RenewOutcome, RequestOutcome};
use hourglass_core::audit::AuditRecord;
use ts_rs::{Config, TS};

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/bindings")
}

/// Every type the front end uses, with what they refer to.
fn export_all(dir: &Path) {
    // JSON numbers, not bigint: nothing we send exceeds 2^53.
    let config = Config::new().with_out_dir(dir).with_large_int("number");
    AppView::export_all(&config).unwrap();
    Alert::export_all(&config).unwrap();
    Settings::export_all(&config).unwrap();
    TrayStatus::export_all(&config).unwrap();
    Catalog::export_all(&config).unwrap();
    CreateRequest::export_all(&config).unwrap();
    RequestOutcome::export_all(&config).unwrap();
    RenewOutcome::export_all(&config).unwrap();
    AuditRecord::export_all(&config).unwrap();
    ApiError::export_all(&config).unwrap();
    Account::export_all(&config).unwrap();
    IntegrationStatus::export_all(&config).unwrap();
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ts"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect()
}

#[test]
fn typescript_bindings_are_fresh() {
    let generated = tempfile::tempdir().unwrap();
    export_all(generated.path());
    let fresh = files(generated.path());
    assert!(fresh.contains_key("AppView.ts") && fresh.contains_key("Grant.ts"), "types and their dependencies");
    if std::env::var_os("HOURGLASS_UPDATE_BINDINGS").is_some() {
        let dir = committed();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &fresh {
            std::fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    let current = files(&committed());
    let stale: Vec<&String> = fresh.keys().filter(|name| current.get(*name) != fresh.get(*name)).collect();
    let extra: Vec<&String> = current.keys().filter(|name| !fresh.contains_key(*name)).collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "ui/src/bindings is stale (changed: {stale:?}, no longer generated: {extra:?}); \
         run `HOURGLASS_UPDATE_BINDINGS=1 cargo test -p hourglass-app --test bindings` and commit the result"
    );
}
