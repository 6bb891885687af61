//! Data-driven policy tests: policy + request → decision, and broken
//! policies → the problem named with its file and line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::path::PathBuf;

use hourglass_core::{Duration, Principal, Timestamp};
use hourglass_policy::{AccessContext, Action, Error, Policy};

#[path = "policy/fuzz.rs"]
mod fuzz;

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/policy")
}

fn demo() -> Policy {
    Policy::load_dir(&demo_dir()).unwrap_or_else(|error| panic!("demo policy must load:\n{error}"))
}

fn user(id: &str, groups: &[&str]) -> Principal {
    Principal::new(id, groups.iter().copied())
}

/// Monday 2026-11-23 10:00 UTC.
const MONDAY_10: Timestamp = Timestamp::from_unix_millis(1_795_428_000_000);

/// Five minutes asked by `a` for reason `r`, on Monday at 10:00.
fn five_minutes_asked_by_a() -> AccessContext<'static> {
    AccessContext {
        requester: "a",
        duration: Duration::from_mins(5),
        reason: "r",
        ticket: None,
        renewal: false,
        break_glass: false,
        now: MONDAY_10,
    }
}

struct Case {
    who: (&'static str, &'static [&'static str]),
    action: Action,
    target: (&'static str, &'static str),
    duration: &'static str,
    ticket: Option<&'static str>,
    allowed: bool,
    why: &'static str,
}

#[test]
fn demo_policy_decisions() {
    let policy = demo();
    let alice = ("alice@acme.example", &["engineers"][..]);
    let dave = ("dave@acme.example", &["engineers", "oncall"][..]);
    let bob = ("bob@acme.example", &["sre"][..]);
    let carol = ("carol@acme.example", &["security"][..]);
    let stranger = ("mallory@evil.example", &[][..]);
    let cases = [
        Case {
            who: alice,
            action: Action::Request,
            target: ("orders-api", "read"),
            duration: "15m",
            ticket: None,
            allowed: true,
            why: "engineers may request",
        },
        Case {
            who: stranger,
            action: Action::Request,
            target: ("orders-api", "read"),
            duration: "15m",
            ticket: None,
            allowed: false,
            why: "no policy, no access",
        },
        Case {
            who: alice,
            action: Action::AutoApprove,
            target: ("orders-api", "read"),
            duration: "1h",
            ticket: None,
            allowed: true,
            why: "read up to an hour is automatic",
        },
        Case {
            who: alice,
            action: Action::AutoApprove,
            target: ("orders-api", "read"),
            duration: "1h1s",
            ticket: None,
            allowed: false,
            why: "longer than an hour waits for approval",
        },
        Case {
            who: alice,
            action: Action::AutoApprove,
            target: ("orders-api", "write"),
            duration: "5m",
            ticket: None,
            allowed: false,
            why: "write is never automatic",
        },
        Case {
            who: stranger,
            action: Action::AutoApprove,
            target: ("staging-api", "deploy"),
            duration: "5m",
            ticket: None,
            allowed: true,
            why: "staging auto-approves anyone (requesting is still checked)",
        },
        Case {
            who: alice,
            action: Action::Request,
            target: ("payments-api", "admin"),
            duration: "30m",
            ticket: None,
            allowed: false,
            why: "pci forbids without a ticket",
        },
        Case {
            who: alice,
            action: Action::Request,
            target: ("payments-api", "admin"),
            duration: "30m",
            ticket: Some("PAY-1"),
            allowed: true,
            why: "with a ticket the forbid does not apply",
        },
        Case {
            who: alice,
            action: Action::Request,
            target: ("payments-api", "admin"),
            duration: "30m",
            ticket: Some("  "),
            allowed: false,
            why: "a blank ticket is no ticket",
        },
        Case {
            who: dave,
            action: Action::BreakGlass,
            target: ("orders-api", "write"),
            duration: "30m",
            ticket: None,
            allowed: true,
            why: "on-call breaks glass on production",
        },
        Case {
            who: alice,
            action: Action::BreakGlass,
            target: ("orders-api", "write"),
            duration: "30m",
            ticket: None,
            allowed: false,
            why: "only on-call breaks glass",
        },
        Case {
            who: dave,
            action: Action::BreakGlass,
            target: ("staging-api", "deploy"),
            duration: "30m",
            ticket: None,
            allowed: false,
            why: "break-glass is for production",
        },
        Case {
            who: bob,
            action: Action::Approve,
            target: ("orders-api", "write"),
            duration: "30m",
            ticket: None,
            allowed: true,
            why: "sre approves",
        },
        Case {
            who: carol,
            action: Action::Approve,
            target: ("payments-api", "admin"),
            duration: "30m",
            ticket: Some("PAY-1"),
            allowed: true,
            why: "security approves pci",
        },
        Case {
            who: carol,
            action: Action::Approve,
            target: ("orders-api", "write"),
            duration: "30m",
            ticket: None,
            allowed: false,
            why: "security approves only pci",
        },
        Case {
            who: alice,
            action: Action::Approve,
            target: ("orders-api", "write"),
            duration: "30m",
            ticket: None,
            allowed: false,
            why: "engineers do not approve",
        },
    ];
    for case in cases {
        let principal = user(case.who.0, case.who.1);
        let duration: Duration = case.duration.parse().expect("duration");
        let context = AccessContext {
            requester: "alice@acme.example",
            duration,
            reason: "testing",
            ticket: case.ticket,
            renewal: false,
            break_glass: case.action == Action::BreakGlass,
            now: MONDAY_10,
        };
        let decision = policy.authorize(&principal, case.action, case.target.0, case.target.1, &context);
        assert_eq!(
            decision.allowed, case.allowed,
            "{} {:?} {}/{}: {} (policies {:?}, errors {:?})",
            case.who.0, case.action, case.target.0, case.target.1, case.why, decision.policies, decision.errors
        );
        assert!(decision.errors.is_empty(), "{}: evaluation errors {:?}", case.why, decision.errors);
        // Deciding several actions at once (as filing a request does) gives
        // each the decision it gets alone.
        let (resource, role) = case.target;
        let one_by_one = [Action::Request, case.action, Action::AutoApprove]
            .map(|action| policy.authorize(&principal, action, resource, role, &context));
        let at_once = policy.authorize_each(
            &principal,
            [Action::Request, case.action, Action::AutoApprove],
            resource,
            role,
            &context,
        );
        assert_eq!(at_once, one_by_one, "{}: decided at once", case.why);
    }
}

#[test]
fn decisions_name_the_policies_that_made_them() {
    let policy = demo();
    let context = AccessContext {
        requester: "alice@acme.example",
        duration: Duration::from_mins(30),
        reason: "r",
        ticket: None,
        renewal: false,
        break_glass: false,
        now: MONDAY_10,
    };
    let alice = user("alice@acme.example", &["engineers"]);
    let allowed = policy.authorize(&alice, Action::Request, "orders-api", "read", &context);
    assert_eq!(allowed.policies, vec!["staff-may-request".to_owned()]);
    let forbidden = policy.authorize(&alice, Action::Request, "payments-api", "admin", &context);
    assert_eq!(forbidden.policies, vec!["pci-needs-a-ticket".to_owned()], "the forbid is the reason");
}

#[test]
fn owners_act_on_their_grants_and_admins_on_anyones() {
    let policy = demo();
    let alice = user("alice@acme.example", &["engineers"]);
    let dave = user("dave@acme.example", &["engineers"]);
    let carol = user("carol@acme.example", &["security"]);
    let owner = "alice@acme.example";
    assert!(
        policy.authorize_on_grant(&alice, Action::Revoke, "orders-api", "read", owner).allowed,
        "owner revokes own"
    );
    assert!(
        !policy.authorize_on_grant(&dave, Action::Revoke, "orders-api", "read", owner).allowed,
        "peer cannot revoke"
    );
    assert!(!policy.authorize_on_grant(&dave, Action::View, "orders-api", "read", owner).allowed, "peer cannot view");
    assert!(
        policy.authorize_on_grant(&carol, Action::Revoke, "orders-api", "read", owner).allowed,
        "admin revokes any"
    );
}

#[test]
fn unknown_resource_or_role_is_named_with_what_exists() {
    let policy = demo();
    let error = policy.role("orders-db", "read").expect_err("unknown resource").to_string();
    assert!(error.contains("unknown resource \"orders-db\"") && error.contains("orders-api"), "{error}");
    let error = policy.role("orders-api", "admin").expect_err("unknown role").to_string();
    assert_eq!(error, "resource \"orders-api\" has no role \"admin\" (it offers: read, write)");
    let context = AccessContext {
        requester: "a",
        duration: Duration::from_mins(1),
        reason: "",
        ticket: None,
        renewal: false,
        break_glass: false,
        now: MONDAY_10,
    };
    let decision = policy.authorize(&user("a", &["engineers"]), Action::Request, "orders-db", "read", &context);
    assert!(!decision.allowed, "unknown resource: no access");
}

#[test]
fn role_settings_layer_over_resource_and_defaults() {
    let policy = demo();
    let read = policy.role("orders-api", "read").expect("role");
    assert_eq!(read.limits.min_duration, Duration::from_secs(5), "from [defaults]");
    assert_eq!(read.limits.max_duration, Duration::from_hours(1));
    assert_eq!(read.approvals[0].group, "sre", "default workflow");
    assert_eq!(read.pending_timeout, Duration::from_mins(30));
    let admin = policy.role("payments-api", "admin").expect("role");
    assert_eq!(admin.workflow, "two-person");
    assert_eq!(admin.pending_timeout, Duration::from_mins(30), "[defaults] is more specific than the workflow's own");
    assert!(admin.ticket_required);
    assert_eq!(admin.limits.renewals_without_approval, 0);
}

#[test]
fn notify_channels_layer_and_join_the_workflows() {
    let toml = r#"
[defaults]
notify_requester = ["mail"]

[workflows.review]
approvals = [{ group = "sre", count = 1 }]
notify = ["sre-slack"]

[resources.db]
provider = "token"
workflow = "review"
notify = ["audit-hook", "sre-slack"]

[resources.db.roles.read]

[resources.db.roles.write]
notify = ["db-owners"]
notify_requester = []
"#;
    let cedar = "permit(principal, action == Action::\"request\", resource);";
    let policy =
        Policy::from_sources(vec![("hourglass.toml".into(), toml.into()), ("a.cedar".into(), cedar.into())]).unwrap();
    let read = policy.role("db", "read").unwrap();
    assert_eq!(read.notify, ["audit-hook", "sre-slack"], "the resource's and the workflow's, each once");
    assert_eq!(read.notify_requester, ["mail"], "from [defaults]");
    let write = policy.role("db", "write").unwrap();
    assert_eq!(write.notify, ["db-owners", "sre-slack"], "the role's replaces the resource's; the workflow's joins");
    assert!(write.notify_requester.is_empty(), "an empty list turns the default off");
    let found = problems(&[("hourglass.toml", &toml.replace("\"mail\"", "\"Mail Room\""))]);
    assert!(found.iter().any(|problem| problem.contains("channel name \"Mail Room\" must be")), "{found:#?}");
}

const VALID_TOML: &str = r#"
[workflows.review]
approvals = [{ group = "sre", count = 1 }]

[resources.db]
provider = "token"
workflow = "review"

[resources.db.roles.read]
"#;

fn problems(files: &[(&str, &str)]) -> Vec<String> {
    let sources = files.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned())).collect();
    match Policy::from_sources(sources) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn broken_policies_are_refused_with_file_and_line() {
    let permit = "permit(principal, action == Action::\"request\", resource);";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("hourglass.toml", "[resources.db\nprovider = 1")], "hourglass.toml:1:"),
        (
            &[("hourglass.toml", "[workflows.review]\napprovals = []\n")],
            "hourglass.toml:1: workflow \"review\" needs at least one approval",
        ),
        (
            &[("hourglass.toml", &VALID_TOML.replace("workflow = \"review\"", "workflow = \"nope\""))],
            "hourglass.toml:9: role \"db/read\": names unknown workflow \"nope\" (defined: review)",
        ),
        (
            &[(
                "hourglass.toml",
                &VALID_TOML.replace("[resources.db.roles.read]", "[resources.db.roles.read]\nmax_duraton = \"1h\""),
            )],
            "hourglass.toml:10:1: unknown field `max_duraton`",
        ),
        (
            &[(
                "hourglass.toml",
                &VALID_TOML
                    .replace("[resources.db.roles.read]", "[resources.db.roles.read]\nmax_duration = \"ten minutes\""),
            )],
            "hourglass.toml:10:16: \"ten minutes\" is not a duration",
        ),
        (
            &[(
                "hourglass.toml",
                &VALID_TOML.replace("[resources.db.roles.read]", "[resources.db.roles.read]\nmin_duration = \"2h\""),
            )],
            "role \"db/read\": min_duration 2h is longer than max_duration 1h",
        ),
        (&[("hourglass.toml", &VALID_TOML.replace("resources.db", "resources.DB"))], "resource name \"DB\" must be"),
        (&[("hourglass.toml", VALID_TOML), ("a.cedar", "permit(principal, action, resource)")], "a.cedar:1:"),
        (
            &[
                ("hourglass.toml", VALID_TOML),
                ("a.cedar", &format!("{permit}\n\npermit(principal, action == Action::\"fly\", resource);")),
            ],
            "a.cedar:3:",
        ),
        (
            &[
                ("hourglass.toml", VALID_TOML),
                ("a.cedar", "\n\npermit(principal, action == Action::\"request\", resource == Role::\"db/write\");"),
            ],
            "a.cedar:3: Role::\"db/write\" is not a role",
        ),
        (
            &[
                ("hourglass.toml", VALID_TOML),
                (
                    "a.cedar",
                    "permit(principal, action == Action::\"request\", resource) when { resource in Resource::\"dbb\" };",
                ),
            ],
            "a.cedar:1: Resource::\"dbb\" is not a resource",
        ),
        (
            &[
                ("hourglass.toml", VALID_TOML),
                (
                    "a.cedar",
                    "permit(principal, action == Action::\"request\", resource) when { context.durration > 1 };",
                ),
            ],
            "a.cedar:1:",
        ),
        (&[("a.cedar", permit)], "hourglass.toml: missing"),
    ];
    for (files, expected) in cases {
        let found = problems(files);
        assert!(
            found.iter().any(|problem| problem.contains(expected)),
            "expected a problem containing {expected:?}, got {found:#?}"
        );
    }
}

#[test]
fn a_valid_minimal_policy_loads() {
    let found = problems(&[
        ("hourglass.toml", VALID_TOML),
        ("a.cedar", "permit(principal, action == Action::\"request\", resource);"),
    ]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn policies_apply_only_to_their_resource_slice() {
    let toml = format!(
        "{VALID_TOML}\n[resources.cache]\nprovider = \"token\"\nworkflow = \"review\"\n[resources.cache.roles.flush]\n"
    );
    let sources = vec![
        ("hourglass.toml".to_owned(), toml),
        (
            "a.cedar".to_owned(),
            "permit(principal, action == Action::\"request\", resource in Resource::\"db\");".to_owned(),
        ),
    ];
    let policy = Policy::from_sources(sources).expect("valid");
    let context = five_minutes_asked_by_a();
    let anyone = user("a", &[]);
    assert!(policy.authorize(&anyone, Action::Request, "db", "read", &context).allowed);
    assert!(!policy.authorize(&anyone, Action::Request, "cache", "flush", &context).allowed, "scoped to db only");
}

#[test]
fn the_policy_digest_changes_with_any_file() {
    let a = Policy::from_sources(vec![("hourglass.toml".into(), VALID_TOML.into())]).expect("valid");
    let b = Policy::from_sources(vec![("hourglass.toml".into(), format!("{VALID_TOML}\n# comment"))]).expect("valid");
    assert_ne!(a.digest, b.digest);
    assert_eq!(a.warnings.len(), 1, "no Cedar files is a warning: {:?}", a.warnings);
}

#[test]
fn principal_attributes_an_issuer_exposes_reach_cedar_and_only_their_values_match() {
    let toml = format!(
        "[broker]\n[[broker.issuers]]\nissuer = \"https://ci.example\"\nkind = \"machine\"\nattributes = [\"repository\"]\n\n{VALID_TOML}"
    );
    let cedar = r#"permit(principal, action == Action::"auto_approve", resource)
        when { principal.repository == "acme/deploy" };"#;
    let policy = Policy::from_sources(vec![("hourglass.toml".into(), toml.clone()), ("ci.cedar".into(), cedar.into())])
        .expect("a policy reading principal.repository loads when an issuer exposes it");
    let context = five_minutes_asked_by_a();
    let pipeline = |repository: &str| {
        let mut principal = user("ci:deploy", &[]);
        principal.attributes.insert("repository".into(), repository.into());
        principal
    };
    let decide = |principal: &Principal| policy.authorize(principal, Action::AutoApprove, "db", "read", &context);
    assert!(decide(&pipeline("acme/deploy")).allowed, "the named repository");
    assert!(!decide(&pipeline("acme/web")).allowed, "another repository");
    let person = decide(&user("alice@acme.example", &[]));
    assert!(!person.allowed && person.errors.is_empty(), "a person has no repository, and no error: {person:?}");

    // Without an issuer exposing it, the policy reads nothing: refused at load.
    let found = problems(&[("hourglass.toml", VALID_TOML), ("ci.cedar", cedar)]);
    assert!(found.iter().any(|p| p.contains("ci.cedar") && p.contains("repository")), "{found:#?}");
    // An attribute must be a name a policy can write.
    let bad = toml.replace("[\"repository\"]", "[\"job-workflow-ref\"]");
    let found = problems(&[("hourglass.toml", &bad), ("a.cedar", "permit(principal, action, resource);")]);
    assert!(found.iter().any(|p| p.contains("\"job-workflow-ref\" is not a name")), "{found:#?}");
}
