//! Policy decisions with 1,000 Cedar policies: one `request` permit per
//! resource (each naming its resource and a team's group), as a large
//! organisation's policy directory would have them, and one decision per
//! request for a random resource.

use std::fmt::Write;
use std::time::Instant;

use hourglass_core::{Principal, Timestamp};
use hourglass_policy::{AccessContext, Action, Policy};

use crate::stats::Summary;

pub const POLICIES: usize = 1_000;

/// `hourglass.toml` with `count` resources, and `count` Cedar policies.
pub fn sources(count: usize) -> Vec<(String, String)> {
    let mut toml = String::from(
        "[defaults]\nworkflow = \"review\"\n\n[workflows.review]\napprovals = [{ group = \"sre\", count = 1 }]\n",
    );
    let mut cedar = String::new();
    for i in 0..count {
        let _ = write!(
            toml,
            "\n[resources.svc-{i:04}]\nprovider = \"token\"\nlabels = [\"team-{team}\"]\n\n[resources.svc-{i:04}.roles.read]\n",
            team = i % 50
        );
        let _ = write!(
            cedar,
            "@id(\"team-{team}-requests-svc-{i:04}\")\npermit (\n  principal in Group::\"team-{team}\",\n  action == Action::\"request\",\n  resource in Resource::\"svc-{i:04}\"\n);\n\n",
            team = i % 50
        );
    }
    vec![("hourglass.toml".into(), toml), ("teams.cedar".into(), cedar)]
}

const REQUESTER: &str = "alice@acme.example";

/// alice asking for 30 minutes, as every decision here does.
fn request_context() -> AccessContext<'static> {
    AccessContext {
        requester: REQUESTER,
        duration: hourglass_core::Duration::from_mins(30),
        reason: "benchmark",
        ticket: None,
        renewal: false,
        break_glass: false,
        now: Timestamp::from_unix_millis(1_800_000_000_000),
    }
}

/// Decision time over `runs` decisions (after as many to warm up).
pub fn decisions(runs: usize) -> anyhow::Result<Summary> {
    let policy = Policy::from_sources(sources(POLICIES)).map_err(|e| anyhow::anyhow!("the generated policy: {e}"))?;
    let context = request_context();
    let mut samples = Vec::with_capacity(runs);
    let mut allowed = 0usize;
    // A cheap deterministic spread over resources and teams (no rand needed).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for run in 0..runs * 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let resource = format!("svc-{:04}", x % POLICIES as u64);
        let principal = Principal::new(REQUESTER, [format!("team-{}", (x >> 20) % 50)]);
        let started = Instant::now();
        let decision = policy.authorize(&principal, Action::Request, &resource, "read", &context);
        let took = started.elapsed();
        if run >= runs {
            samples.push(took);
            allowed += usize::from(decision.allowed);
        }
    }
    // About one in fifty is allowed (the right team for that resource): both paths are measured.
    anyhow::ensure!(allowed > 0 && allowed < runs, "the decisions must include allows and denies ({allowed}/{runs})");
    Ok(Summary::of(&mut samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_policy_allows_the_resource_team_only() {
        let policy = Policy::from_sources(sources(100)).expect("valid");
        let team = Principal::new(REQUESTER, ["team-7"]);
        let decision = policy.authorize(&team, Action::Request, "svc-0057", "read", &request_context());
        assert!(decision.allowed, "{decision:?}");
        let other = Principal::new(REQUESTER, ["team-8"]);
        assert!(!policy.authorize(&other, Action::Request, "svc-0057", "read", &request_context()).allowed);
    }
}
