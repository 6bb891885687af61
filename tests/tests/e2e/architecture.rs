//! ARCHITECTURE.md's structural invariants, checked: which crate may depend
//! on what (read from `cargo metadata`, so a new dependency that breaks a
//! rule fails here, not in review), where the wall clock may be read, and
//! that no source file imports one that imports it back.
//! Each rule says why it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace is the e2e crate's parent").to_path_buf()
}

/// Each workspace crate's direct dependencies of normal kind (what its
/// library and binaries link; optional ones included), by crate name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(workspace().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("a name").to_owned();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|dep| dep["kind"].is_null())
            .map(|dep| dep["name"].as_str().expect("a dependency's name").to_owned())
            .collect();
        crates.insert(name, deps);
    }
    assert!(crates.contains_key("hourglass-core"), "the workspace's crates are listed: {crates:?}");
    crates
}

/// The harnesses that drive everything from outside (tests, benchmarks):
/// they may depend on anything.
const HARNESSES: [&str; 2] = ["hourglass-e2e", "hourglass-bench"];

/// Crates only `owners` (and the harnesses) may depend on, and why.
const ONLY: &[(&[&str], &[&str], &str)] = &[
    (
        &["axum", "tower-http", "utoipa-axum", "rusqlite", "sqlx", "rcgen", "prometheus-client", "cedar-policy"],
        &["hourglass-broker", "hourglass-policy"],
        "only the broker serves HTTP, keeps a store and decides policy (the policy crate decides with Cedar)",
    ),
    (
        &["tokio-postgres", "postgres-protocol"],
        &["hourglass-broker", "hourglass-client"],
        "of the providers' protocols, a client speaks only PostgreSQL's: one login with the password only it \
         holds (readiness)",
    ),
    (
        &["tauri", "tauri-build", "tauri-plugin-single-instance", "notify-rust", "glib"],
        &["hourglass-desktop"],
        "only src-tauri depends on Tauri and the desktop: what the app decides is tested without a display",
    ),
    (
        &["hourglass-aws"],
        &["hourglass-broker"],
        "only the broker speaks to AWS (with its own identity): a client gets a grant's keys from the agent",
    ),
    (
        &["reqwest", "oauth2", "keyring"],
        &["hourglass-client", "hourglass-broker", "hourglass-aws"],
        "the app and the CLI reach the broker, the identity provider and the keyring only through hourglass-client",
    ),
    (
        &["anyhow"],
        &["hourglass-broker", "hourglass-cli"],
        "anyhow in binaries only; every library crate has its own thiserror type",
    ),
];

/// What `core` may depend on: nothing that does I/O, reads a clock or
/// makes randomness.
const CORE_MAY_USE: [&str; 8] = ["serde", "serde_json", "sha2", "thiserror", "time", "zeroize", "ts-rs", "utoipa"];

/// Workspace crates a crate must not depend on, and why.
const NEVER: &[(&str, &[&str], &str)] = &[
    (
        "hourglass-client",
        &["hourglass-broker", "hourglass-policy", "hourglass-app"],
        "a client knows the broker by its API",
    ),
    ("hourglass-broker", &["hourglass-client", "hourglass-app"], "the broker knows no client"),
    (
        "hourglass-cli",
        &["hourglass-broker", "hourglass-policy"],
        "the CLI reaches the broker only through hourglass-client",
    ),
    (
        "hourglass-app",
        &["hourglass-broker", "hourglass-policy"],
        "the app reaches the broker only through hourglass-client",
    ),
    (
        "hourglass-desktop",
        &["hourglass-broker", "hourglass-policy"],
        "the app reaches the broker only through hourglass-client",
    ),
];

#[test]
fn architecture_core_depends_on_nothing_that_does_io() {
    let crates = dependencies();
    let extra: Vec<&String> =
        crates["hourglass-core"].iter().filter(|dep| !CORE_MAY_USE.contains(&dep.as_str())).collect();
    assert!(extra.is_empty(), "core is pure (no I/O, no clock, no randomness) but depends on {extra:?}");
}

#[test]
fn architecture_crates_depend_only_on_what_their_layer_may() {
    let crates = dependencies();
    let mut broken = Vec::new();
    for (name, deps) in &crates {
        if HARNESSES.contains(&name.as_str()) {
            continue;
        }
        for (guarded, owners, why) in ONLY {
            for dep in deps.iter().filter(|dep| guarded.contains(&dep.as_str())) {
                if !owners.contains(&name.as_str()) {
                    broken.push(format!("{name} depends on {dep}: {why}"));
                }
            }
        }
    }
    for (name, forbidden, why) in NEVER {
        for dep in crates[*name].iter().filter(|dep| forbidden.contains(&dep.as_str())) {
            broken.push(format!("{name} depends on {dep}: {why}"));
        }
    }
    assert!(broken.is_empty(), "dependencies ARCHITECTURE.md rules out:\n{}", broken.join("\n"));
}

/// The only files that read the wall clock. Everything else is given
/// `now` (the broker's `Clock`, the client's `BrokerClock`), so that what
/// a deadline means is decided in one place and tests pass time in.
const READ_THE_CLOCK: [&str; 5] = [
    // The broker's Clock; tokens' expiry as the JWT library checks it; the
    // dev CA's certificate validity.
    "crates/broker/src/clock.rs",
    "crates/broker/src/auth.rs",
    "crates/broker/src/dev/tls.rs",
    // This machine's clock, for every client crate.
    "crates/client/src/clock.rs",
    // The window's one timer.
    "ui/src/lib/clock.svelte.ts",
];

/// Ways to read the wall clock, in Rust and in the front end's TypeScript.
const CLOCK_READS: [&str; 7] =
    ["SystemTime::now", "now_utc()", "now_local()", "Utc::now", "Local::now", "Date.now()", "new Date()"];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "node_modules" && name != "bindings" {
            sources(&path, found);
        } else if ["rs", "ts", "svelte"].iter().any(|ext| path.extension().is_some_and(|e| e == *ext)) {
            found.push(path);
        }
    }
}

#[test]
fn architecture_only_the_named_files_read_the_clock() {
    let root = workspace();
    let mut files = Vec::new();
    // The product's code; the harnesses (tests/, crates/bench) time things.
    for dir in ["crates/core/src", "crates/policy/src", "crates/broker/src", "crates/client/src", "crates/cli/src"] {
        sources(&root.join(dir), &mut files);
    }
    for dir in ["crates/app/src", "src-tauri/src", "ui/src"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "the sources were found: {}", files.len());
    let mut reading = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under the workspace").to_string_lossy().replace('\\', "/");
        if READ_THE_CLOCK.contains(&relative.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a source file");
        for (number, line) in text.lines().enumerate() {
            if let Some(read) = CLOCK_READS.iter().find(|read| line.contains(**read)) {
                reading.push(format!("{relative}:{}: {read}", number + 1));
            }
        }
    }
    assert!(
        reading.is_empty(),
        "the clock is read outside the files that may (pass `now` in, or use the crate's clock):\n{}",
        reading.join("\n")
    );
}

/// A crate's source files by module path (`provider/exec/mod.rs` is
/// `["provider", "exec"]`; the crate root is `[]`).
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files
        .into_iter()
        .filter(|file| file.extension().is_some_and(|ext| ext == "rs"))
        .map(|file| {
            let relative = file.strip_prefix(src).expect("under src").with_extension("");
            let mut path: Vec<String> =
                relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
            if path.last().is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str())) {
                path.pop();
            }
            (path, file)
        })
        .collect()
}

/// The module paths a file names through `crate::` and `super::` (outside
/// comments and its test module), made absolute. `dir` is the module the
/// file's `super` is relative to.
fn named_paths(text: &str, dir: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(['c', 's']) {
        let before = code.len() - rest.len() + at;
        let tail = &rest[at..];
        rest = &rest[at + 1..];
        if before > 0 && code[..before].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let (mut path, after) = if let Some(after) = tail.strip_prefix("crate::") {
            (Vec::new(), after)
        } else if let Some(after) = tail.strip_prefix("super::") {
            (dir[..dir.len().saturating_sub(1)].to_vec(), after)
        } else {
            continue;
        };
        // `a::b::Item`, `super::super::a`, or `{a, b::c}` (each item's path).
        let mut segments = after;
        loop {
            if let Some(group) = segments.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let item: Vec<String> = item
                        .trim()
                        .split("::")
                        .map(|s| s.chars().take_while(|c| is_ident(*c)).collect::<String>())
                        .take_while(|s| !s.is_empty())
                        .collect();
                    if !item.is_empty() {
                        found.push([path.clone(), item].concat());
                    }
                }
                break;
            }
            let ident: String = segments.chars().take_while(|c| is_ident(*c)).collect();
            if ident.is_empty() {
                break;
            }
            segments = &segments[ident.len()..];
            if ident == "super" {
                path.pop();
            } else {
                path.push(ident);
            }
            match segments.strip_prefix("::") {
                Some(next) => segments = next,
                None => break,
            }
        }
        found.push(path);
    }
    found
}

/// Files of one crate that import each other, directly or round a longer
/// loop (a module and its own parent or children excepted: Rust nests them).
fn import_cycles(src: &Path) -> Vec<Vec<String>> {
    let modules = modules(src);
    let mut edges: BTreeMap<&Vec<String>, std::collections::BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("a source file");
        // A mod.rs's `super` is its parent's parent; a.rs's is a's parent.
        let is_dir = file.file_stem().is_some_and(|stem| ["mod", "lib", "main"].contains(&stem.to_str().unwrap_or("")));
        let dir: Vec<String> = if is_dir { [module.clone(), vec!["_".into()]].concat() } else { module.clone() };
        let targets = edges.entry(module).or_default();
        for path in named_paths(&text, &dir) {
            let Some(target) = (0..=path.len()).rev().find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
            else {
                continue;
            };
            let nested = target.starts_with(module) || module.starts_with(target);
            if !nested {
                targets.insert(target);
            }
        }
    }
    // A module is in a cycle when it can reach itself.
    let mut cycles = Vec::new();
    for start in edges.keys() {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = edges[start].iter().copied().collect();
        while let Some(next) = stack.pop() {
            if next == *start {
                cycles.push(start.join("/"));
                break;
            }
            if seen.insert(next) {
                stack.extend(edges.get(next).into_iter().flatten().copied());
            }
        }
    }
    if cycles.is_empty() { Vec::new() } else { vec![cycles] }
}

#[test]
fn architecture_no_file_imports_one_that_imports_it_back() {
    let root = workspace();
    let mut found = Vec::new();
    let crates: Vec<PathBuf> =
        ["crates/core", "crates/policy", "crates/broker", "crates/client", "crates/cli", "crates/app"]
            .iter()
            .map(|dir| root.join(dir).join("src"))
            .chain([root.join("src-tauri/src")])
            .collect();
    for src in &crates {
        assert!(modules(src).len() > 1, "{} has modules", src.display());
        for cycle in import_cycles(src) {
            found.push(format!("{}: {}", src.strip_prefix(&root).unwrap_or(src).display(), cycle.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "files that import each other (move what both need to one of them, or below both):\n{}",
        found.join("\n")
    );
}

#[test]
fn architecture_the_cycle_check_finds_files_that_import_each_other() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path();
    std::fs::create_dir(src.join("store")).expect("a module directory");
    std::fs::write(src.join("lib.rs"), "mod error;\nmod store;\nmod tls;\n").expect("written");
    std::fs::write(src.join("tls.rs"), "use crate::error::Error;\n").expect("written");
    std::fs::write(src.join("store/mod.rs"), "use super::error::{self, Error};\nmod sql;\n").expect("written");
    std::fs::write(src.join("store/sql.rs"), "use super::super::error::Error;\nuse super::Store;\n").expect("written");
    std::fs::write(src.join("error.rs"), "pub enum Error { Tls(crate::tls::TlsError), Sql(crate::store::sql::E) }\n")
        .expect("written");
    // store/sql reaches error through `super::super`; store itself and its
    // child naming each other is nesting, not a cycle.
    let cycles = import_cycles(src);
    assert_eq!(cycles, vec![vec!["error".to_owned(), "store/sql".into(), "tls".into()]]);
    // Untied: the error no longer names tls, and nothing imports store.
    std::fs::write(src.join("error.rs"), "pub enum Error { Io(std::io::Error) }\n").expect("written");
    assert_eq!(import_cycles(src), Vec::<Vec<String>>::new(), "no cycle left");
}
