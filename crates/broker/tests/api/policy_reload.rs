//! Policy hot reload: a good policy applies at once, a bad one changes nothing.

use super::*;

fn policy_text(h: &Harness) -> String {
    std::fs::read_to_string(h.policy_dir.join("hourglass.toml")).expect("the policy file reads")
}

fn write_policy(h: &Harness, text: &str) {
    std::fs::write(h.policy_dir.join("hourglass.toml"), text).expect("the policy file writes");
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} is in the policy"));
    text[..offset].matches('\n').count() + 1
}

#[tokio::test]
async fn policy_reload_refuses_invalid_and_keeps_old() {
    let h = Harness::new().await;
    let digest = h.broker.policy().digest.clone();
    let good = policy_text(&h);
    let bad = good.replacen("max_duration = \"1h\"", "max_duration = \"one hour\"", 1);
    assert_ne!(bad, good, "the edit applies");
    write_policy(&h, &bad);

    let reload = h.broker.reload_policy().await.expect("a reload answers");
    let Reload::Refused { problems } = reload else { panic!("an invalid policy is refused, got {reload:?}") };
    let place = format!("hourglass.toml:{}", line_of(&bad, "one hour"));
    assert!(problems.iter().any(|p| p.contains(&place)), "the problem names {place}: {problems:?}");
    assert_eq!(h.broker.policy().digest, digest, "the last good policy stays in force");

    let refused = h.post("alice", "/v1/requests", read_orders("2h")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "1h", "the old bound still applies");
    let outcome = h.file("alice", read_orders("10m")).await;
    assert_eq!(outcome["grant"]["state"], "active", "requests still work under the old policy");
}

/// A Cedar file nested deeper than a thread's stack can parse used to abort
/// the broker on reload (found by the policy loader's fuzzing, see
/// `hourglass-policy`'s `cedar_limits.rs`). Refused now like any broken
/// policy: named with file and line, the last good policy kept. This test
/// runs on a 2 MiB stack, like the tokio worker that reloads in `hourglassd`.
#[tokio::test]
async fn policy_reload_of_cedar_nested_too_deep_is_refused_not_a_crash() {
    let h = Harness::new().await;
    let digest = h.broker.policy().digest.clone();
    let deep =
        format!("permit (principal, action, resource)\nwhen {{ {}true{} }};\n", "(".repeat(2000), ")".repeat(2000));
    std::fs::write(h.policy_dir.join("deep.cedar"), deep).expect("deep.cedar is written");

    let reload = h.broker.reload_policy().await.expect("a reload answers");
    let Reload::Refused { problems } = reload else { panic!("a too deep policy is refused, got {reload:?}") };
    assert!(problems.iter().any(|p| p.contains("deep.cedar:2:") && p.contains("nest deeper")), "{problems:?}");
    assert_eq!(h.broker.policy().digest, digest, "the last good policy stays in force");
    let outcome = h.file("alice", read_orders("10m")).await;
    assert_eq!(outcome["grant"]["state"], "active", "requests still work under the old policy");
}

#[tokio::test]
async fn policy_reload_applies_valid_change() {
    let h = Harness::new().await;
    let refused = h.post("alice", "/v1/requests", read_orders("2h")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "1h", "2h is over the demo bound");
    let before = policy_text(&h);
    let after = before.replacen(
        "[resources.orders-api.roles.read]\n",
        "[resources.orders-api.roles.read]\nmax_duration = \"2h\"\n",
        1,
    );
    assert_ne!(after, before, "the edit applies");
    write_policy(&h, &after);

    let reload = h.broker.reload_policy().await.expect("a reload answers");
    let Reload::Loaded { digest } = reload else { panic!("a valid change loads, got {reload:?}") };
    assert_eq!(h.broker.policy().digest, digest, "the new policy is in force");
    assert_eq!(h.broker.reload_policy().await.expect("a reload answers"), Reload::Unchanged, "loaded once");

    let outcome = h.file("alice", read_orders("2h")).await;
    // Cedar approves reads at once only up to an hour, so 2h waits for an SRE.
    assert_eq!(outcome["request"]["state"], "pending", "the new bound admits 2h: {outcome}");
    let refused = h.post("dave", "/v1/requests", read_orders("3h")).await;
    assert_refused(&refused, StatusCode::BAD_REQUEST, "duration_out_of_bounds", "2h", "and bounds at 2h");
}
