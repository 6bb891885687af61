//! The policy loader against text nobody meant to write: arbitrary strings,
//! and the demo policy mutated (bytes cut, characters replaced, chunks
//! copied, TOML and Cedar fragments dropped in, deep nesting and long
//! chains). Whatever the text, loading answers: a policy, or problems that
//! each name their file (and the line, where the text has one). A policy
//! that loads then decides without panicking.
//!
//! Each property runs [`CASES`] cases from a fixed seed, so that CI is
//! deterministic; `PROPTEST_RNG_SEED=n` explores other inputs and
//! `PROPTEST_CASES=n` runs more. No regression files are written: a failure
//! found is pinned as a named test (see `cedar_nesting_*` below).

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngSeed};

use super::{MONDAY_10, demo_dir, user};
use hourglass_core::Duration;
use hourglass_policy::{AccessContext, Action, Error, Policy};

const CASES: u32 = 256;

fn config() -> Config {
    let default = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { CASES },
        failure_persistence: None,
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x706f_6c69_6379),
            chosen => chosen,
        },
        ..default
    }
}

const FILES: [&str; 3] = ["hourglass.toml", "requests.cedar", "approvals.cedar"];

fn demo_sources() -> Vec<(String, String)> {
    FILES
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(demo_dir().join(file)).expect("the demo policy is readable");
            ((*file).to_owned(), text)
        })
        .collect()
}

/// Fragments that mean something to TOML, to Cedar or to our model.
const FRAGMENTS: &[&str] = &[
    // TOML and the model
    "[resources.x]\n",
    "[resources.orders-api.roles.Read]\n",
    "[resources.orders-api.roles.read.x]\n",
    "[workflows.w]\napprovals = []\n",
    "workflow = \"nope\"\n",
    "workflow = \"two-person\"\n",
    "max_duration = \"367d\"\n",
    "max_duration = \"99999999999999999999999s\"\n",
    "min_duration = \"0s\"\n",
    "default_duration = \"2h\"\n",
    "max_total = \"1m\"\n",
    "pending_timeout = \"0s\"\n",
    "renewals_without_approval = -1\n",
    "renewals_without_approval = 4294967296\n",
    "approvals = [{ group = \"\", count = 0 }]\n",
    "approvals = [{ group = \"sre\", count = 18446744073709551616 }]\n",
    "provider = \"\"\n",
    "labels = [1, 2]\n",
    "settings = { a = { b = { c = [] } } }\n",
    "[broker]\nlisten = 5\n",
    "[broker.limits]\nrequests_per_second = 0\n",
    "reason_required = \"yes\"\n",
    "\"\"\"",
    "'''",
    "= ",
    "[[",
    "]]",
    "#",
    "\\u0000",
    "\u{0}",
    "é",
    "\u{feff}",
    "\r\n",
    // Cedar
    "permit",
    "forbid",
    "(principal, action, resource)",
    ";",
    "when { ",
    "unless { ",
    "}",
    "@id(\"staff-may-request\")\n",
    "@id(\"\")\n",
    "principal == ?principal",
    "resource in ?resource",
    "Role::\"orders-api/nope\"",
    "Role::\"orders-api\"",
    "Resource::\"nowhere\"",
    "Resource::\"orders-api\"",
    "Action::\"fly\"",
    "Group::\"\"",
    "User::\"\\u{0}\"",
    "context.duration_seconds",
    "context.nope",
    "resource.labels.contains(\"pci\")",
    "principal is User",
    "principal has email",
    " like \"*a*\"",
    " && ",
    " || ",
    "!",
    "if true then 1 else \"a\"",
    "decimal(\"1.0\")",
    "ip(\"10.0.0.1/33\")",
    "datetime(\"2026-13-01\")",
    "9223372036854775807 + 1",
    "-9223372036854775808",
    "{\"a\": 1}",
    "[1, [2]]",
    "\"",
    "//",
    "::",
    "A::B::C::D::E::F::G::\"x\"",
];

/// A fragment, or a run of nesting or chaining long enough to test the
/// parser's depth (a policy file is not trusted to be shallow).
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(FRAGMENTS).prop_map(str::to_owned),
        1 => (0usize..300).prop_map(|n| "(".repeat(n)),
        1 => (0usize..300).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        1 => (0usize..300).prop_map(|n| format!("{}true{}", "(".repeat(n), ")".repeat(n))),
        1 => (0usize..2000).prop_map(|n| format!("true{}", " && true".repeat(n))),
        1 => (0usize..2000).prop_map(|n| format!("{}true{}", "if true then ".repeat(n), " else false".repeat(n))),
        1 => (0usize..2000).prop_map(|n| format!("context{}", ".a".repeat(n))),
        1 => (0usize..300).prop_map(|n| format!("x = {}1{}\n", "[".repeat(n), "]".repeat(n))),
        1 => any::<String>(),
    ]
}

/// A whole Cedar policy around a deep or long expression, to insert
/// between two policies.
fn whole_policy() -> impl Strategy<Value = String> {
    (fragment(), select(&["permit", "forbid"][..]))
        .prop_map(|(condition, effect)| format!("\n{effect}(principal, action, resource) when {{ {condition} }};\n"))
}

#[derive(Debug, Clone)]
enum Mutation {
    Cut {
        at: Index,
        len: usize,
    },
    Insert {
        at: Index,
        text: String,
    },
    /// At the start of a line.
    InsertLine {
        at: Index,
        text: String,
    },
    Replace {
        at: Index,
        with: char,
    },
    Copy {
        from: Index,
        len: usize,
        to: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1usize..40).prop_map(|(at, len)| Mutation::Cut { at, len }),
        (any::<Index>(), fragment()).prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<Index>(), whole_policy()).prop_map(|(at, text)| Mutation::InsertLine { at, text }),
        (any::<Index>(), any::<char>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        (any::<Index>(), 1usize..200, any::<Index>()).prop_map(|(from, len, to)| Mutation::Copy { from, len, to }),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for mutation in mutations {
        match mutation {
            Mutation::Cut { at, len } if !chars.is_empty() => {
                let start = at.index(chars.len());
                chars.drain(start..(start + len).min(chars.len()));
            }
            Mutation::Insert { at, text } => {
                let at = at.index(chars.len() + 1);
                chars.splice(at..at, text.chars());
            }
            Mutation::InsertLine { at, text } => {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain(chars.iter().enumerate().filter(|(_, c)| **c == '\n').map(|(i, _)| i + 1))
                    .collect();
                let at = starts[at.index(starts.len())];
                chars.splice(at..at, text.chars());
            }
            Mutation::Replace { at, with } if !chars.is_empty() => {
                let at = at.index(chars.len());
                chars[at] = *with;
            }
            Mutation::Copy { from, len, to } if !chars.is_empty() => {
                let start = from.index(chars.len());
                let chunk: Vec<char> = chars[start..(start + len).min(chars.len())].to_vec();
                let to = to.index(chars.len() + 1);
                chars.splice(to..to, chunk);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Loading `sources` answers with a policy that decides, or with problems
/// that each name one of the files (and a line inside it).
fn loads_or_names_the_problem(sources: Vec<(String, String)>) -> Result<(), TestCaseError> {
    let texts = sources.clone();
    match Policy::from_sources(sources) {
        Ok(policy) => decides_without_panicking(&policy),
        Err(Error::Invalid(problems)) => {
            prop_assert!(!problems.is_empty(), "refused without a problem named");
            for problem in &problems {
                let Some((_, text)) = texts.iter().find(|(file, _)| *file == problem.file) else {
                    return Err(TestCaseError::fail(format!("{problem} names no file of the policy")));
                };
                prop_assert!(!problem.message.trim().is_empty(), "{problem}: a problem says what is wrong");
                // The toml crate's one error without a place: keys dotted
                // deeper than its recursion limit (found by these mutations).
                if problem.file == "hourglass.toml" && !problem.message.contains("recursion limit") {
                    prop_assert!(problem.line.is_some(), "{problem}: a problem in hourglass.toml has its line");
                }
                if let Some(line) = problem.line {
                    let lines = text.split('\n').count();
                    prop_assert!((1..=lines).contains(&line), "{problem}: line {line} of {lines}");
                }
                prop_assert!(problem.column.is_none_or(|column| column >= 1), "{problem}: columns count from 1");
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("loading from text is no I/O, yet: {other}"))),
    }
}

/// Every decision on every role, for people of every demo group and none.
fn decides_without_panicking(policy: &Policy) -> Result<(), TestCaseError> {
    let people = [user("alice@acme.example", &["engineers", "oncall"]), user("bob@acme.example", &["sre", "security"])];
    let context = AccessContext {
        requester: "alice@acme.example",
        duration: Duration::from_mins(30),
        reason: "fuzz",
        ticket: Some("T-1"),
        renewal: false,
        break_glass: true,
        now: MONDAY_10,
    };
    let actions = [Action::Request, Action::AutoApprove, Action::BreakGlass, Action::Approve];
    for resource in policy.resources.values() {
        for role in resource.roles.keys() {
            for who in &people {
                for action in actions {
                    let _ = policy.authorize(who, action, &resource.name, role, &context);
                }
                let _ = policy.authorize_on_grant(who, Action::Revoke, &resource.name, role, "alice@acme.example");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn policy_loader_never_panics_on_arbitrary_toml(text in prop_oneof![any::<String>(), fragment()]) {
        let mut sources = demo_sources();
        sources[0].1 = text;
        loads_or_names_the_problem(sources)?;
    }

    #[test]
    fn policy_loader_never_panics_on_arbitrary_cedar(text in prop_oneof![any::<String>(), fragment(), whole_policy()]) {
        let mut sources = demo_sources();
        sources[1].1 = text;
        loads_or_names_the_problem(sources)?;
    }

    #[test]
    fn policy_loader_never_panics_on_mutated_demo_policy(
        file in 0usize..FILES.len(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut sources = demo_sources();
        sources[file].1 = mutate(&sources[file].1, &mutations);
        loads_or_names_the_problem(sources)?;
    }
}

/// Found by the mutations: 160 nested parentheses overflowed a 2 MiB stack
/// (a tokio worker's, where the broker reloads policy) and aborted the
/// process. Refused now, with file and line, before Cedar parses it. The
/// test thread's stack is 2 MiB, like a tokio worker's.
#[test]
fn cedar_nesting_too_deep_for_the_stack_is_refused_with_file_and_line() {
    let deep =
        |n: usize| format!("permit(principal, action, resource)\nwhen {{ {}true{} }};", "(".repeat(n), ")".repeat(n));
    let cases = [
        deep(200),
        deep(100_000),
        format!("permit(principal, action, resource)\nwhen {{ {}1{}.isEmpty() }};", "[".repeat(5000), "]".repeat(5000)),
        format!("permit(principal, action, resource)\nwhen {{ true{} }};", " && true".repeat(20_000)),
        format!(
            "permit(principal, action, resource)\nwhen {{ {}true{} }};",
            "if true then ".repeat(20_000),
            " else false".repeat(20_000)
        ),
    ];
    for cedar in cases {
        let mut sources = demo_sources();
        sources[1].1 = cedar;
        let Err(Error::Invalid(problems)) = Policy::from_sources(sources) else {
            panic!("a policy nested beyond the bounds is refused");
        };
        assert!(
            problems.iter().any(|p| p.file == "requests.cedar"
                && p.line == Some(2)
                && (p.message.contains("split it") || p.message.contains("nest deeper"))),
            "the problem names the file and line: {problems:?}"
        );
    }
}

/// Nesting as deep as the bounds allow still loads and decides on a 2 MiB
/// stack: the bounds refuse nothing a person writes, and what they let
/// through cannot overflow.
#[test]
fn cedar_nesting_at_the_bounds_loads_and_decides() {
    let at_bounds = format!(
        "permit(principal in Group::\"engineers\", action == Action::\"request\", resource)\nwhen {{ {}true{}{} }};",
        "(".repeat(30),
        " && (context.duration_seconds + 1 > 0)".repeat(120),
        ")".repeat(30),
    );
    let mut sources = demo_sources();
    sources[1].1 = at_bounds;
    let policy = Policy::from_sources(sources).unwrap_or_else(|error| panic!("within the bounds it loads: {error}"));
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
    let decision = policy.authorize(&alice, Action::Request, "orders-api", "read", &context);
    assert!(decision.allowed && decision.errors.is_empty(), "it evaluates: {decision:?}");
}
