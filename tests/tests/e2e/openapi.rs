//! The HTTP API against its own OpenAPI document: schemathesis (from PyPI,
//! installed by `scripts/setup.sh` into `~/.cache/hourglass/schemathesis`)
//! reads `/v1/openapi.json` from a running `hourglassd dev` and calls every
//! operation with inputs made from the document: examples, boundary values,
//! valid and invalid data, and stateful sequences. Every answer must not be
//! a 5xx, must have a status the document lists for the operation, and must
//! match the documented schema, content type and headers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hourglass_e2e::DevBroker;

/// Examples per operation and phase.
const EXAMPLES: &str = "100";
/// Fixed, so that a run is reproducible; set `HOURGLASS_SCHEMATHESIS_SEED` to explore.
const SEED: &str = "20261123";

const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,\
                      content_type_conformance,response_headers_conformance";

/// The schemathesis executable: `HOURGLASS_SCHEMATHESIS`, else the venv
/// `scripts/setup.sh` makes. Missing is a failure that says how to install
/// it, never a silent skip.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("HOURGLASS_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/hourglass/schemathesis/bin/schemathesis")
    });
    let runs = Command::new(&path).arg("--version").output().is_ok_and(|output| output.status.success());
    assert!(
        runs,
        "schemathesis is not installed at {}: run ./scripts/setup.sh (it installs it from PyPI into \
         ~/.cache/hourglass/schemathesis), or `pip install schemathesis` and set HOURGLASS_SCHEMATHESIS",
        path.display()
    );
    path
}

/// The demo policy with call limits far above what schemathesis sends:
/// rate limiting has its own tests, and a 429 here would hide what the
/// operation does with the input (429 is documented all the same).
fn policy_without_rate_limits(into: &Path) {
    hourglass_e2e::copy_demo_policy(into, |toml| toml);
    let toml = into.join("hourglass.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(
        "\n[broker.limits]\nrequests_per_second = 100000\nrequest_burst = 100000\n\
         pending_requests = 100000\nevent_streams = 1000\n",
    );
    std::fs::write(toml, text).unwrap();
}

/// How many operations the broker's document has.
fn operations(broker: &DevBroker) -> usize {
    let document: serde_json::Value = serde_json::from_str(&broker.get("/v1/openapi.json")).unwrap();
    let methods = ["get", "put", "post", "delete", "patch"];
    document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count())
        .sum()
}

#[test]
fn openapi_schemathesis_finds_no_5xx_or_schema_violation() {
    let schemathesis = schemathesis();
    let work = tempfile::tempdir().unwrap();
    let policy = work.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    policy_without_rate_limits(&policy);
    let broker = DevBroker::start_with_policy(&policy, &[]);

    // Real ids for the operations on one request or grant, so that calls
    // reach the lifecycle instead of stopping at "no such id": alice's
    // request waiting for an SRE (bob decides it), and alice's live grant.
    let pending =
        broker.json("alice", &["request", "orders-api", "--role", "write", "--for", "30m", "--reason", "schemathesis"]);
    assert_eq!(pending["state"], "pending", "orders-api/write waits for an SRE: {pending}");
    let approved =
        broker.json("alice", &["request", "orders-api", "--role", "read", "--for", "30m", "--reason", "schemathesis"]);
    assert_eq!(approved["grant"]["state"], "active", "orders-api/read is granted at once: {approved}");
    let request_id = pending["id"].as_str().unwrap();
    let grant_id = approved["grant"]["id"].as_str().unwrap();
    let alice = format!("Bearer {}", broker.token("alice"));
    let bob = format!("Bearer {}", broker.token("bob"));
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"# The event stream never ends: read its first event.
max-stream-events = 1
headers = {{ Authorization = "{alice}" }}

[generation]
database = "none"

[[operations]]
include-path-regex = '^/v1/requests/\{{id\}}/(approve|deny)$'
parameters = {{ "path.id" = "{request_id}" }}
headers = {{ Authorization = "{bob}" }}

[[operations]]
include-path-regex = '^/v1/requests/\{{id\}}'
parameters = {{ "path.id" = "{request_id}" }}

[[operations]]
include-path-regex = '^/v1/grants/\{{id\}}'
parameters = {{ "path.id" = "{grant_id}" }}
"#
        ),
    )
    .unwrap();

    let seed = std::env::var("HOURGLASS_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let started = Instant::now();
    let mut command = Command::new(&schemathesis);
    command
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/v1/openapi.json", broker.url)]);
    if let Some(ca) = &broker.ca {
        // The dev broker's own CA, for the schema and every call.
        command.arg("--tls-verify").arg(ca).env("REQUESTS_CA_BUNDLE", ca);
    }
    let output = command
        .args(["--checks", CHECKS, "--max-examples", EXAMPLES, "--seed", &seed])
        .args(["--request-timeout", "10", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    eprintln!("schemathesis took {:.0?}:\n{report}", started.elapsed());
    assert!(output.status.success(), "schemathesis found failures (seed {seed}):\n{report}");
    let tested = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|count| count.trim().parse::<usize>().ok());
    assert_eq!(tested, Some(operations(&broker)), "every operation of the document was tested:\n{report}");
    assert!(report.contains("passed"), "schemathesis ran test cases:\n{report}");
}
