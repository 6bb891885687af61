//! The client cut off from the broker (a proxy between them drops every
//! connection) while the broker restarts and grants end: the agent goes
//! offline, keeps counting down on its own clock, and at the next sync
//! forgets what was revoked while it could not hear.

use hourglass_e2e::DevBroker;
use hourglass_e2e::proxy::Proxy;
use hourglass_e2e::shell::Workstation;
use serde_json::Value;

fn granted(outcome: &Value) -> String {
    outcome["grant"]["id"].as_str().unwrap_or_else(|| panic!("a grant: {outcome}")).to_owned()
}

#[test]
fn agent_cut_off_counts_down_and_drops_grants_revoked_meanwhile_at_the_next_sync() {
    let data = tempfile::tempdir().expect("data dir");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/policy");
    let mut broker = DevBroker::start_at(data.path(), &demo, &[]);
    let proxy = Proxy::start(&broker.url);
    let mut station = Workstation::new(&broker, "alice");
    station.set_var("HOURGLASS_BROKER", &proxy.url);
    station.start_agent();

    let keep = granted(&station.json(&["request", "staging-api", "--role", "deploy", "--for", "10m"]));
    let doomed = granted(&station.json(&[
        "request",
        "orders-api",
        "--role",
        "read",
        "--for",
        "10m",
        "--reason",
        "revoked while cut off",
    ]));
    // One that needs an approval, with a deadline inside the cut.
    let pending =
        station.json(&["request", "orders-api", "--role", "write", "--for", "6s", "--reason", "expires while cut off"]);
    let request = pending["request"]["id"].as_str().or(pending["id"].as_str()).expect("a request id").to_owned();
    let approved = broker.json("bob", &["approve", &request]);
    let short = approved["grant"]["id"].as_str().unwrap_or_else(|| panic!("issued: {approved}")).to_owned();
    station.wait_for("holding all three", |s| {
        [&keep, &doomed, &short].iter().all(|id| Workstation::held(s, id).is_some())
    });

    // Cut off; the broker restarts meanwhile and a grant is revoked.
    proxy.cut();
    station.wait_for("going offline", |s| s["online"] == false);
    broker.restart();
    let revoked = broker.hourglass("alice", &["revoke", &doomed, "--reason", "while the agent was cut off"]);
    assert!(revoked.ok, "revoked at the broker: {}", revoked.stderr);

    // Offline, the agent still ends the short grant by its own clock.
    let offline = station
        .wait_for("dropping the short grant at its deadline, offline", |s| Workstation::held(s, &short).is_none());
    assert_eq!(offline["online"], false, "still cut off: {offline}");
    assert!(Workstation::held(&offline, &doomed).is_some(), "the revoke is not known yet: {offline}");

    // Back: it reconnects, resyncs and drops what was revoked.
    let before = station.hook_file();
    proxy.restore();
    let synced = station.wait_for("reconnecting and forgetting the revoked grant", |s| {
        s["online"] == true && Workstation::held(s, &doomed).is_none()
    });
    assert!(Workstation::held(&synced, &keep).is_some(), "the live grant stays: {synced}");
    assert_ne!(station.hook_file(), before, "shells are told: the hook state changed");
    let gone = station.hourglass(&["env", &doomed]);
    assert!(!gone.ok, "no credential for the revoked grant from the agent: {}", gone.stdout);
    let kept = station.hourglass(&["env", &keep, "--shell", "bash"]);
    assert!(kept.ok && kept.stdout.contains("STAGING_API_TOKEN"), "the live one still served: {}", kept.stderr);
}
