//! The broker killed with SIGKILL at random points of a busy lifecycle
//! (approvals, issues and revocations through a slow exec hook, bursts of
//! grants expiring at once) and restarted on the same data directory, by
//! a seeded schedule. Afterwards nothing acknowledged is lost, nothing is
//! counted or issued twice, no grant outlives its deadline by more than the
//! promised lag of broker uptime, the target keeps no account of an ended
//! grant, and the audit chain verifies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hourglass_client::{Client, Trust};
use hourglass_core::api::CreateRequest;
use hourglass_core::{GrantState, RevocationStatus, Verdict};
use hourglass_e2e::{DevBroker, eventually, policy_dir};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{StoreFile, assert_audit_intact, audit_events, install_hook, now_millis, seed};

/// Longest a grant may outlive its deadline (or its revocation) in broker
/// uptime: the time the broker was down does not count, the time after a
/// restart does.
const LAG_MILLIS: i64 = 3_000;
/// What each kill inside that span may add: the attempt it cut short (the
/// hook's sleep and a process start), started again after the restart.
const LAG_PER_KILL_MILLIS: i64 = 500;
/// How long the exec hook takes after changing the target: the window in
/// which a kill leaves the target changed and the broker uninformed.
const HOOK_SLEEP: &str = "0.3";

const CEDAR: &str = r#"
permit (principal, action == Action::"request", resource);
permit (principal, action == Action::"auto_approve", resource in Resource::"api");
permit (principal, action == Action::"auto_approve", resource == Role::"cloud/peek");
permit (principal in Group::"sre", action == Action::"approve", resource);
permit (principal in Group::"security", action in [Action::"view", Action::"revoke"], resource);
"#;

fn toml(work: &Path) -> String {
    format!(
        r#"
[broker]
provider_timeout = "10s"

[defaults]
workflow = "two-sre"
min_duration = "2s"
max_duration = "1h"
max_total = "4h"
renewals_without_approval = 2
pending_timeout = "30m"

[workflows.two-sre]
approvals = [{{ group = "sre", count = 2 }}]

[resources.cloud]
provider = "exec"
settings = {{ command = ["hooks/account.sh", "{work}"], timeout = "10s" }}

[resources.cloud.roles.deploy]
description = "two SREs approve"

[resources.cloud.roles.deploy2]
description = "two SREs approve"

[resources.cloud.roles.peek]
description = "approved at once"

[resources.api]
provider = "token"
settings = {{ audience = "https://api.acme.example" }}

[resources.api.roles.r1]
[resources.api.roles.r2]
[resources.api.roles.r3]
[resources.api.roles.r4]
"#,
        work = work.display()
    )
}

/// What the broker acknowledged to the workload: all of it must survive.
#[derive(Default)]
struct Ledger {
    requests: BTreeSet<String>,
    approvals: BTreeSet<(String, String)>,
    revoked: BTreeSet<String>,
    /// Pending two-approval requests, for approvers to pick from.
    pending: Vec<String>,
    /// Live grants and their owners, for revokes.
    live: Vec<(String, String)>,
    /// Deadlines of bursts of grants filed together (unix ms).
    bursts: Vec<i64>,
}

const USERS: [&str; 5] = ["alice", "dave", "bob", "erin", "carol"];
const ID_OF: [(&str, &str); 5] = [
    ("alice", "alice@acme.example"),
    ("dave", "dave@acme.example"),
    ("bob", "bob@acme.example"),
    ("erin", "erin@acme.example"),
    ("carol", "carol@acme.example"),
];

fn body(resource: &str, role: &str, seconds: u64) -> CreateRequest {
    CreateRequest {
        resource: resource.into(),
        role: role.into(),
        duration: format!("{seconds}s"),
        reason: "fault test".into(),
        ticket: None,
        break_glass: false,
        client_material: None,
    }
}

/// Requests, approvals, revokes and bursts of short grants, chosen by
/// `rng`, until `stop`. Errors (the broker is down, a duplicate) are part
/// of the game; what succeeded goes to the ledger.
async fn workload(
    url: String,
    trust: Trust,
    tokens: BTreeMap<String, String>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let clients: BTreeMap<&str, Client> = USERS
        .iter()
        .map(|user| (*user, Client::with_trust(&url, trust.clone(), &tokens[*user]).expect("client")))
        .collect();
    let limit = Duration::from_secs(15);
    while !stop.load(Ordering::SeqCst) {
        let op = rng.gen_range(0..100);
        if op < 20 {
            let user = *["alice", "dave", "carol"].choose(&mut rng).expect("user");
            let role = *["deploy", "deploy2"].choose(&mut rng).expect("role");
            let seconds = rng.gen_range(3..8);
            if let Ok(Ok(outcome)) =
                tokio::time::timeout(limit, clients[user].create_request(&body("cloud", role, seconds))).await
            {
                let mut ledger = ledger.lock().expect("ledger");
                ledger.requests.insert(outcome.request.id.to_string());
                ledger.pending.push(outcome.request.id.to_string());
            }
        } else if op < 60 {
            let approver = *["bob", "erin"].choose(&mut rng).expect("approver");
            let Some(id) = ledger.lock().expect("ledger").pending.choose(&mut rng).cloned() else { continue };
            let request = hourglass_core::RequestId::parse(&id).expect("request id");
            match tokio::time::timeout(limit, clients[approver].approve(&request, None)).await {
                Ok(Ok(outcome)) => {
                    let mut ledger = ledger.lock().expect("ledger");
                    ledger.approvals.insert((id.clone(), format!("{approver}@acme.example")));
                    if outcome.request.state != hourglass_core::RequestState::Pending {
                        ledger.pending.retain(|p| p != &id);
                    }
                    if let Some(grant) = outcome.grant {
                        ledger.live.push((grant.id.to_string(), outcome.request.requester.clone()));
                    }
                }
                Ok(Err(error)) if error.code().is_some() => {
                    // Refused (already decided, no longer pending): settled.
                    let still = clients[approver].request(&request).await;
                    if still.is_ok_and(|r| r.state != hourglass_core::RequestState::Pending) {
                        ledger.lock().expect("ledger").pending.retain(|p| p != &id);
                    }
                }
                _ => {}
            }
        } else if op < 72 {
            let user = *["alice", "dave"].choose(&mut rng).expect("user");
            let seconds = rng.gen_range(2..6);
            if let Ok(Ok(outcome)) =
                tokio::time::timeout(limit, clients[user].create_request(&body("cloud", "peek", seconds))).await
            {
                let mut ledger = ledger.lock().expect("ledger");
                ledger.requests.insert(outcome.request.id.to_string());
                if let Some(grant) = outcome.grant {
                    ledger.live.push((grant.id.to_string(), outcome.request.requester.clone()));
                }
            }
        } else if op < 82 {
            // A burst: every user, every api role, the same short duration.
            let deadline = now_millis() + 3_000;
            ledger.lock().expect("ledger").bursts.push(deadline);
            let calls = USERS.iter().flat_map(|user| {
                ["r1", "r2", "r3", "r4"].map(|role| {
                    let client = &clients[*user];
                    async move { tokio::time::timeout(limit, client.create_request(&body("api", role, 3))).await }
                })
            });
            for outcome in futures::future::join_all(calls).await.into_iter().flatten().flatten() {
                let mut ledger = ledger.lock().expect("ledger");
                ledger.requests.insert(outcome.request.id.to_string());
                if let Some(grant) = outcome.grant {
                    ledger.live.push((grant.id.to_string(), outcome.request.requester.clone()));
                }
            }
        } else {
            let picked = {
                let mut ledger = ledger.lock().expect("ledger");
                let index = (!ledger.live.is_empty()).then(|| rng.gen_range(0..ledger.live.len()));
                index.map(|i| ledger.live.swap_remove(i))
            };
            let Some((grant, owner)) = picked else { continue };
            let user = ID_OF.iter().find(|(_, id)| *id == owner).map(|(user, _)| *user).expect("a known owner");
            let id = hourglass_core::GrantId::parse(&grant).expect("grant id");
            if let Ok(Ok(revoked)) = tokio::time::timeout(limit, clients[user].revoke(&id, None)).await {
                assert_eq!(revoked.state, GrantState::Revoked, "an acknowledged revoke revoked: {revoked:?}");
                ledger.lock().expect("ledger").revoked.insert(grant);
            }
        }
    }
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillPoint {
    /// Any moment: approvals and requests are the bulk of the traffic.
    Anywhere,
    /// While the exec hook issues (after it created the account).
    MidIssue,
    /// While the exec hook revokes (after it removed the account).
    MidRevocation,
    /// Just after a burst of grants reached their common deadline.
    MassExpiry,
}

/// Lines of the hook's call log so far.
fn calls(work: &Path) -> Vec<String> {
    std::fs::read_to_string(work.join("calls.log")).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Waits (up to 3 s) for the hook to start a new `action` call.
fn wait_for_call(work: &Path, action: &str) {
    let before = calls(work).len();
    let _ = eventually(Duration::from_secs(3), || {
        calls(work).iter().skip(before).any(|line| line.starts_with(action)).then_some(())
    });
}

/// Milliseconds of `[from, to]` during which the broker was down.
fn downtime(down: &[(i64, i64)], from: i64, to: i64) -> i64 {
    down.iter().map(|&(start, end)| (end.min(to) - start.max(from)).max(0)).sum()
}

#[test]
fn broker_killed_at_random_points_loses_nothing_and_doubles_nothing() {
    let seed = seed("broker_killed_at_random_points");
    let kills: usize = std::env::var("HOURGLASS_FAULT_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(40);
    let mut rng = StdRng::seed_from_u64(seed);
    let work = tempfile::tempdir().expect("work dir");
    std::fs::create_dir(work.path().join("accounts")).expect("accounts dir");
    std::fs::write(work.path().join("sleep"), HOOK_SLEEP).expect("sleep file");
    let policy = policy_dir(&toml(work.path()), CEDAR);
    install_hook(policy.path(), "account.sh");
    let data = tempfile::tempdir().expect("data dir");
    let mut broker = DevBroker::start_at(data.path(), policy.path(), &[]);
    let tokens: BTreeMap<String, String> =
        USERS.iter().map(|user| ((*user).to_owned(), broker.token(user).to_owned())).collect();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (url, trust, ledger, stop) = (broker.url.clone(), broker.trust(), Arc::clone(&ledger), Arc::clone(&stop));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(workload(url, trust, tokens, ledger, stop, seed));
        })
    };

    let started = Instant::now();
    let mut down: Vec<(i64, i64)> = Vec::new();
    let mut landed: BTreeMap<KillPoint, usize> = BTreeMap::new();
    for _ in 0..kills {
        let point = *[KillPoint::Anywhere, KillPoint::MidIssue, KillPoint::MidRevocation, KillPoint::MassExpiry]
            .choose(&mut rng)
            .expect("a kill point");
        match point {
            KillPoint::Anywhere => std::thread::sleep(Duration::from_millis(rng.gen_range(150..1500))),
            KillPoint::MidIssue | KillPoint::MidRevocation => {
                let action = if point == KillPoint::MidIssue { "issue" } else { "revoke" };
                wait_for_call(work.path(), action);
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..250)));
            }
            KillPoint::MassExpiry => {
                let next = ledger.lock().expect("ledger").bursts.iter().copied().filter(|d| *d > now_millis()).min();
                let wait = next.map_or(1000, |deadline| deadline - now_millis()).clamp(0, 5000);
                std::thread::sleep(Duration::from_millis(wait.unsigned_abs() + rng.gen_range(0..400)));
            }
        }
        let killed = now_millis();
        broker.restart();
        down.push((killed, now_millis()));
        *landed.entry(point).or_default() += 1;
    }
    stop.store(true, Ordering::SeqCst);
    load.join().expect("the workload ran to its end");
    let faulted = started.elapsed();

    // Quiet now: every deadline passed is acted on, every revocation done.
    let store = StoreFile::open(&broker.data_dir);
    let settled = eventually(Duration::from_secs(30), || {
        let now = now_millis();
        let owed = store.count(&format!(
            "SELECT COUNT(*) FROM grants WHERE (state IN ('issuing', 'active') AND expires_at <= {now}) OR revocation_due IS NOT NULL"
        ));
        (owed == 0).then_some(())
    });
    assert!(settled.is_some(), "every due expiry and revocation completes after the last restart");

    let ledger = ledger.lock().expect("ledger");
    let grants = store.grants();
    let requests = store.requests();
    let by_id: BTreeMap<String, &hourglass_core::AccessRequest> =
        requests.iter().map(|r| (r.id.to_string(), r)).collect();

    // Acknowledged means on disk: every answer the broker gave survived.
    for id in &ledger.requests {
        assert!(by_id.contains_key(id), "acknowledged request {id} survived the kills");
    }
    for (id, approver) in &ledger.approvals {
        let request = by_id.get(id).unwrap_or_else(|| panic!("approved request {id} exists"));
        assert!(request.decision_by(approver).is_some(), "{approver}'s acknowledged approval of {id} survived");
    }
    for id in &ledger.revoked {
        let grant = grants.iter().find(|g| g.id.to_string() == *id).expect("a revoked grant exists");
        assert_eq!(grant.state, GrantState::Revoked, "acknowledged revoke of {id} survived: {grant:?}");
    }

    // Decided once, counted once: one decision per approver, never more
    // approvals than the threshold, one decision event per approver.
    for request in &requests {
        let approvers: Vec<&str> = request.decisions.iter().map(|d| d.approver.as_str()).collect();
        let distinct: BTreeSet<&str> = approvers.iter().copied().collect();
        assert_eq!(approvers.len(), distinct.len(), "one decision per approver on {}: {approvers:?}", request.id);
        let approvals = request.decisions.iter().filter(|d| d.verdict == Verdict::Approve).count();
        assert!(approvals <= 2, "no approval counted beyond the threshold on {}: {approvers:?}", request.id);
    }
    let events = audit_events(&broker.data_dir);
    let mut decisions: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut issued: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        let (action, target, actor) = (&event["action"], &event["target"], &event["actor"]);
        let action = action.as_str().unwrap_or_default();
        if ["request.approval_recorded", "request.approved", "request.denied"].contains(&action)
            && actor != hourglass_core::principal::SYSTEM_ACTOR
        {
            *decisions.entry((target.to_string(), actor.to_string())).or_default() += 1;
        }
        if action == "grant.issued" {
            *issued.entry(target.to_string()).or_default() += 1;
        }
    }
    for (key, count) in &decisions {
        assert_eq!(*count, 1, "one decision recorded in the audit log per approver and request: {key:?}");
    }
    for (grant, count) in &issued {
        assert_eq!(*count, 1, "grant {grant} issued once in the audit log");
    }

    // Issued once: one grant per approved request.
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for grant in &grants {
        *per_request.entry(grant.request_id.to_string()).or_default() += 1;
    }
    for (request, count) in &per_request {
        assert_eq!(*count, 1, "one grant for request {request}");
        let filed = by_id.get(request).expect("the grant's request exists");
        assert_eq!(
            filed.grant_id.as_ref().map(ToString::to_string),
            grants.iter().find(|g| g.request_id.to_string() == *request).map(|g| g.id.to_string()),
            "the request names its one grant"
        );
    }

    // Deadlines hold: every grant ended, was removed at the target within
    // the lag of broker uptime, and its account is gone.
    let mut worst = (0_i64, String::new());
    let mut ended = 0;
    for grant in &grants {
        if grant.state.is_live() {
            continue;
        }
        ended += 1;
        let revocation = grant.revocation.as_ref().expect("an ended grant has a revocation");
        assert_eq!(revocation.status, RevocationStatus::Done, "revocation of {} completed: {grant:?}", grant.id);
        let from = grant.ended_at.expect("ended").unix_millis();
        let done = revocation.completed_at.expect("completed").unix_millis();
        if grant.state == GrantState::Expired {
            assert_eq!(from, grant.expires_at.unix_millis(), "expired at its deadline: {grant:?}");
        }
        let lag = done - from - downtime(&down, from, done);
        let kills_meanwhile = down.iter().filter(|&&(killed, _)| killed > from && killed < done).count() as i64;
        let allowed = LAG_MILLIS + kills_meanwhile * LAG_PER_KILL_MILLIS;
        if lag > worst.0 {
            worst = (lag, format!("{}, {}, {kills_meanwhile} kills meanwhile", grant.id, grant.state));
        }
        assert!(
            lag <= allowed,
            "{} ({}) was removed {lag} ms of broker uptime after it ended, across {kills_meanwhile} kills \
             (promised ≤ {allowed} ms): {grant:?}",
            grant.id,
            grant.state
        );
    }
    let live: BTreeSet<String> = grants.iter().filter(|g| g.state.is_live()).map(|g| g.id.to_string()).collect();
    for account in std::fs::read_dir(work.path().join("accounts")).expect("accounts").flatten() {
        let name = account.file_name().to_string_lossy().into_owned();
        let history: Vec<String> = calls(work.path()).into_iter().filter(|line| line.ends_with(&name)).collect();
        let record = grants.iter().find(|g| g.id.as_str() == name);
        assert!(
            live.contains(&name),
            "the target keeps an account only for a live grant, not for {name}: hook calls {history:?}, grant {record:?}"
        );
    }
    let known: BTreeSet<String> = grants.iter().map(|g| g.id.to_string()).collect();
    for line in calls(work.path()) {
        let grant = line.split_once(' ').map(|(_, id)| id.to_owned()).unwrap_or_default();
        assert!(known.contains(&grant), "the hook only ever acted for a grant the store holds: {line}");
    }

    assert_audit_intact(&broker.data_dir);
    assert_eq!(store.integrity(), "ok", "the store's file is sound");
    eprintln!(
        "broker_killed_at_random_points: seed {seed}, {kills} kills in {:.0?} ({landed:?}), {} requests, {} approvals, \
         {} revokes acknowledged; {} grants ({ended} ended), worst lag {} ms ({}), {} audit events",
        faulted,
        ledger.requests.len(),
        ledger.approvals.len(),
        ledger.revoked.len(),
        grants.len(),
        worst.0,
        worst.1,
        events.len()
    );
    assert!(ledger.approvals.len() >= kills / 3 && ended > kills, "the workload did real work between kills");
}
