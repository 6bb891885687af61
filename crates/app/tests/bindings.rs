//! The front end's TypeScript is generated from Rust: the types it
//! receives, and its one way to call the app and hear from it (`ipc.ts`,
//! with the commands' and events' names, arguments and answers from
//! `hourglass_app::ipc`). This test fails when the committed files
//! (ui/src/bindings) are stale; run it with HOURGLASS_UPDATE_BINDINGS=1 to
//! regenerate them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hourglass_app::ipc::{Answers, Call, Events, typescript_api};
use hourglass_core::api::ApiError;
use ts_rs::{Config, TS};

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/bindings")
}

/// Every type the front end uses (what the commands take and answer, what
/// the events carry, and the errors), with what they refer to; and `ipc.ts`.
fn export_all(dir: &Path) {
    // JSON numbers, not bigint: nothing we send exceeds 2^53.
    let config = Config::new().with_out_dir(dir).with_large_int("number");
    Call::export_all(&config).unwrap();
    Answers::export_all(&config).unwrap();
    Events::export_all(&config).unwrap();
    ApiError::export_all(&config).unwrap();
    std::fs::write(dir.join("ipc.ts"), typescript_api()).unwrap();
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
    assert!(fresh.contains_key("ipc.ts"), "the calls and events");
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
