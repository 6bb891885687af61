//! Several brokers on one PostgreSQL store (issue 20): real `hourglassd
//! serve` processes, one real PostgreSQL for the store (and one more as a
//! target where grants are database roles). Each test proves one promise of
//! running replicas: any replica serves any step, concurrent decisions
//! count once, work a dead or paused replica held is done by another (once),
//! and the store's outage loses nothing acknowledged.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use hourglass_core::api::{CreateRequest, ErrorCode, Event, EventKind};
use hourglass_core::{GrantState, RequestId, RequestState};
use hourglass_e2e::eventually;
use hourglass_e2e::postgres::PostgresCluster;
use hourglass_e2e::replicas::{CEDAR, POLICY, Replicas};
use serde_json::Value;

fn ask(role: &str, duration: &str) -> CreateRequest {
    CreateRequest {
        resource: "api".into(),
        role: role.into(),
        duration: duration.into(),
        reason: "replica test".into(),
        ticket: None,
        break_glass: false,
        client_material: None,
    }
}

/// The audit log as exported by `hourglassd audit export`, one event per line.
fn audit(set: &Replicas) -> Vec<Value> {
    let output = std::process::Command::new(hourglass_e2e::bin("hourglassd"))
        .args(["audit", "export", "--store", &set.store_url()])
        .output()
        .expect("hourglassd runs");
    assert!(output.status.success(), "audit export: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).expect("JSON")).collect()
}

/// How many audit events of `action` are about `target`.
fn count(events: &[Value], action: &str, target: &str) -> usize {
    events.iter().filter(|e| e["action"] == action && e["target"] == target).count()
}

/// The next event of `stream` of a kind in `kinds`, within a generous bound.
async fn next_of(
    stream: &mut (impl futures::Stream<Item = hourglass_client::Result<Event>> + Unpin),
    kinds: &[EventKind],
) -> Event {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = stream.next().await {
            let event = event.expect("the event stream reads");
            if kinds.contains(&event.kind) {
                return event;
            }
        }
        panic!("the event stream ended");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {kinds:?} event within 20s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_request_on_one_approve_on_another_heard_on_a_third_renew_and_revoke_anywhere() {
    let cluster = PostgresCluster::shared();
    let set = Replicas::start(cluster, 3, POLICY, CEDAR, &[]);
    let (a, b, c) = (set.replica(0), set.replica(1), set.replica(2));
    let mut alice_on_c = Box::pin(c.client("alice").events().await.expect("alice's stream on replica C"));

    let filed = a.client("alice").create_request(&ask("write", "30m")).await.expect("filed on A");
    assert_eq!(filed.request.state, RequestState::Pending, "one SRE must approve");
    let approved = b.client("bob").approve(&filed.request.id, None).await.expect("approved on B");
    let grant = approved.grant.expect("the approval issues the grant");
    assert_eq!(grant.state, GrantState::Active);

    let heard = next_of(&mut alice_on_c, &[EventKind::RequestApproved]).await;
    assert_eq!(heard.request.expect("the request").id, filed.request.id, "C tells alice of B's approval");
    let issued = next_of(&mut alice_on_c, &[EventKind::GrantIssued]).await;
    assert_eq!(issued.grant.expect("the grant").id, grant.id);

    let renewed = c.client("alice").renew(&grant.id, "45m", None).await.expect("renewed on C");
    assert!(renewed.grant.expires_at > grant.expires_at, "the deadline moved");
    next_of(&mut alice_on_c, &[EventKind::GrantRenewed]).await;
    let revoked = a.client("alice").revoke(&grant.id, None).await.expect("revoked on A");
    assert_eq!(revoked.state, GrantState::Revoked);
    next_of(&mut alice_on_c, &[EventKind::GrantRevoked]).await;

    // Keys are the store's: every replica publishes the same JWKS, and a
    // token one replica signed verifies at another.
    let jwks: Vec<String> =
        tokio::task::block_in_place(|| (0..3).map(|i| set.replica(i).get("/.well-known/jwks.json")).collect());
    assert!(jwks.iter().all(|j| j == &jwks[0]), "one JWKS: {jwks:?}");
    let mine = b.client("alice").grants(false, false).await.expect("alice's grants from B");
    assert!(mine.grants.iter().all(|g| g.id != grant.id), "the revoked grant is gone from every replica's list");
    let verify = set.verify();
    assert!(verify.ok, "one audit chain across replicas: {}{}", verify.stdout, verify.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_a_stream_reconnecting_to_another_replica_misses_nothing() {
    let cluster = PostgresCluster::shared();
    let set = Replicas::start(cluster, 2, POLICY, CEDAR, &[]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let open = |index: usize, last: Option<String>| {
        let mut request = http.get(format!("{}/v1/events", set.replica(index).url)).bearer_auth(set.token("bob"));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send()
    };
    let mut stream = SseReader::new(open(0, None).await.expect("bob's stream on A"));
    assert_eq!(stream.next().await.0, "hello");
    let first = set.replica(0).client("alice").create_request(&ask("write", "10m")).await.expect("filed");
    let (kind, id, _) = stream.next().await;
    assert_eq!(kind, "request.filed");
    let seen = id.expect("events carry their number");
    drop(stream); // replica A's stream is gone (A dies, the balancer moves bob)

    let second = set.replica(1).client("dave").create_request(&ask("write", "10m")).await.expect("filed on B");
    set.replica(1).client("alice").cancel(&first.request.id).await.expect("cancelled on B");

    let mut again = SseReader::new(open(1, Some(seen)).await.expect("bob's stream on B"));
    assert_eq!(again.next().await.0, "hello");
    let (kind, _, data) = again.next().await;
    assert_eq!((kind.as_str(), data["request"]["id"].as_str()), ("request.filed", Some(second.request.id.as_str())));
    let (kind, _, data) = again.next().await;
    assert_eq!((kind.as_str(), data["request"]["id"].as_str()), ("request.cancelled", Some(first.request.id.as_str())));

    // bob logs out on A: B refuses his token too, and his stream on B closes.
    let logout = http.post(format!("{}/v1/auth/logout", set.replica(0).url)).bearer_auth(set.token("bob"));
    assert_eq!(logout.send().await.expect("A answers").status(), 204, "logged out on A");
    assert!(again.ends().await, "bob's stream on B closed once he logged out on A");
    let refused = http.get(format!("{}/v1/whoami", set.replica(1).url)).bearer_auth(set.token("bob"));
    let refused = refused.send().await.expect("B answers");
    assert_eq!(refused.status(), 401, "B refuses the ended token");
    assert!(refused.text().await.unwrap_or_default().contains("ended"), "saying why");
}

/// Reads a raw event stream: (event, id, data).
struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        assert!(response.status().is_success(), "the stream opens: {}", response.status());
        SseReader {
            body: Box::pin(response.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec()))),
            buffer: String::new(),
        }
    }

    /// Whether the stream ends (after any events still in it) within 20 s.
    async fn ends(&mut self) -> bool {
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(chunk) = self.body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        });
        end.await.is_ok()
    }

    async fn next(&mut self) -> (String, Option<String>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut kind, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if kind.is_empty() {
                    continue;
                }
                return (kind, id, serde_json::from_str(&data).unwrap_or(Value::Null));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("an event within 20s")
                .expect("the stream goes on")
                .expect("the stream reads");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_approvers_on_two_replicas_at_once_make_one_grant_and_count_each_decision_once() {
    let cluster = PostgresCluster::shared();
    let set = Replicas::start(cluster, 3, POLICY, CEDAR, &[]);
    let approvers = ["bob", "erin", "frank"];
    // Threshold 1: the first approval issues, the others find it decided.
    // Threshold 2: two approvals issue, the third finds it decided.
    for (role, threshold) in [("write", 1), ("deploy", 2)] {
        for round in 0..5 {
            let requester = if round % 2 == 0 { "alice" } else { "dave" };
            let filed =
                set.replica(round % 3).client(requester).create_request(&ask(role, "10m")).await.expect("filed");
            let id = filed.request.id.clone();
            let decisions = approvers.iter().enumerate().map(|(i, approver)| {
                let client = set.replica(i).client(approver);
                let id = id.clone();
                async move { client.approve(&id, None).await }
            });
            let outcomes = futures::future::join_all(decisions).await;
            let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
            for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
                assert!(
                    matches!(refused.code(), Some(ErrorCode::NotPending | ErrorCode::ApprovalNotNeeded)),
                    "a late approver is told it is decided: {refused}"
                );
            }
            assert_eq!(accepted, threshold, "{role} round {round}: exactly {threshold} decision(s) counted");
            let request = set.replica(0).client(requester).request(&id).await.expect("the request");
            assert_eq!(request.state, RequestState::Approved);
            assert_eq!(request.decisions.len(), threshold, "each decision counted once: {:?}", request.decisions);
            let grant_id = request.grant_id.clone().expect("one grant");
            let events = audit(&set);
            assert_eq!(count(&events, "request.approved", id.as_str()), 1, "approved once");
            assert_eq!(count(&events, "grant.issued", grant_id.as_str()), 1, "issued once");
            let grants = set.replica(1).client(requester).grants(false, false).await.expect("grants");
            assert_eq!(grants.grants.iter().filter(|g| g.request_id == id).count(), 1, "one grant for the request");
            set.replica(2).client(requester).revoke(&grant_id, None).await.expect("revoked, for the next round");
        }
    }
    assert!(set.verify().ok, "the chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_a_renewal_racing_expiry_either_extends_or_ends_the_grant_never_both() {
    let cluster = PostgresCluster::shared();
    let set = Replicas::start(cluster, 3, POLICY, CEDAR, &[]);
    let (mut extended, mut ended) = (0, 0);
    for round in 0..6 {
        let requester = if round % 2 == 0 { "alice" } else { "dave" };
        let outcome = set.replica(0).client(requester).create_request(&ask("read", "3s")).await.expect("auto-approved");
        let grant = outcome.grant.expect("a grant");
        // Renew on B just as every replica's scheduler expires it.
        let until = grant.expires_at.unix_millis() - now_millis() - 20 + (round as i64 % 3) * 20;
        tokio::time::sleep(Duration::from_millis(u64::try_from(until.max(0)).unwrap_or(0))).await;
        let renewed = set.replica(1).client(requester).renew(&grant.id, "1m", None).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // every replica's scheduler has had its turn
        let now = set.replica(2).client(requester).grant(&grant.id).await.expect("the grant");
        let events = audit(&set);
        let (renewals, expiries) =
            (count(&events, "grant.renewed", grant.id.as_str()), count(&events, "grant.expired", grant.id.as_str()));
        match renewed {
            Ok(renewed) => {
                extended += 1;
                assert_eq!(now.state, GrantState::Active, "extended: it lives on: {now:?}");
                assert_eq!(now.expires_at, renewed.grant.expires_at, "to the new deadline");
                assert_eq!((renewals, expiries), (1, 0), "renewed, not expired");
            }
            Err(error) => {
                ended += 1;
                assert_eq!(now.state, GrantState::Expired, "ended: {error}");
                assert_eq!((renewals, expiries), (0, 1), "expired once, never renewed: {error}");
            }
        }
        set.replica(0).client(requester).revoke(&grant.id, None).await.ok();
    }
    eprintln!("renewal against expiry: {extended} extended, {ended} ended");
    assert!(set.verify().ok, "the chain verifies");
}

/// Renews `grant` on replica 0 while replica 1 revokes it: the renewal is
/// held just after it read the grant (the test takes the requester's turn,
/// which filing a renewal waits for) until the revocation committed.
async fn renew_as_it_is_revoked(
    set: &Replicas,
    requester: &str,
    grant: &hourglass_core::Grant,
) -> hourglass_client::Result<hourglass_core::api::RenewOutcome> {
    let (mut store, connection) =
        tokio_postgres::connect(&set.store_url(), tokio_postgres::NoTls).await.expect("the store connects");
    tokio::spawn(connection);
    let turn = store.transaction().await.expect("a transaction");
    let principal = format!("principal/{}", grant.owner);
    turn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&principal]).await.expect("the turn");
    let renewal = tokio::spawn({
        let (client, id) = (set.replica(0).client(requester), grant.id.clone());
        async move { client.renew(&id, "30m", None).await }
    });
    // The renewal has read the grant and waits for the turn.
    let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let held = tokio::time::timeout(Duration::from_secs(20), async {
        while turn.query_one(waiting, &[]).await.expect("pg_locks").get::<_, i64>(0) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "the renewal never waited for the requester's turn");
    set.replica(1).client(requester).revoke(&grant.id, None).await.expect("revoked on B");
    turn.commit().await.expect("the turn given back");
    renewal.await.expect("the renewal answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_a_renewal_filed_as_its_grant_is_revoked_is_refused_and_nothing_waits_for_it() {
    let cluster = PostgresCluster::shared();
    let set = Replicas::start(cluster, 2, POLICY, CEDAR, &[]);

    // A renewal that would wait for an approver: the grant's renewals
    // without approval are used up.
    let filed = set.replica(0).client("alice").create_request(&ask("write", "1m")).await.expect("filed");
    let approved = set.replica(1).client("bob").approve(&filed.request.id, None).await.expect("approved");
    let grant = approved.grant.expect("a grant");
    let mut current = grant.clone();
    for duration in ["2m", "3m", "4m"] {
        current = set.replica(0).client("alice").renew(&grant.id, duration, None).await.expect("renewed").grant;
    }
    let refused = renew_as_it_is_revoked(&set, "alice", &current).await.expect_err("no renewal of a revoked grant");
    assert_eq!(refused.code(), Some(ErrorCode::NotActive), "{refused}");
    assert!(refused.to_string().contains("revoked"), "it says why: {refused}");
    let inbox = set.replica(0).client("bob").requests().await.expect("the inbox");
    let waiting: Vec<_> = inbox.awaiting_me.iter().filter(|r| r.renews.as_ref() == Some(&grant.id)).collect();
    assert!(waiting.is_empty(), "no approver is asked to renew a revoked grant: {waiting:?}");

    // A renewal approved at once by policy: refused before anything is recorded.
    let grant = set.replica(0).client("dave").create_request(&ask("read", "1m")).await.expect("issued").grant;
    let grant = grant.expect("a grant");
    let refused = renew_as_it_is_revoked(&set, "dave", &grant).await.expect_err("no renewal of a revoked grant");
    assert_eq!(refused.code(), Some(ErrorCode::NotActive), "{refused}");
    let events = audit(&set);
    let renewals =
        events.iter().filter(|e| e["action"] == "request.filed" && e["details"]["renews"] == grant.id.as_str());
    assert_eq!(renewals.count(), 0, "no renewal request recorded for a grant revoked before it was filed");
    assert!(set.verify().ok, "the chain verifies");
}

fn now_millis() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_one_killed_while_grants_expire_the_others_revoke_each_once() {
    // The store, and a target database whose roles are grants.
    let store_cluster = PostgresCluster::shared();
    let target = PostgresCluster::start();
    target.create_orders_db();
    let policy = format!("{POLICY}\n{}", target.orders_db_policy());
    let cedar = format!(
        "{CEDAR}\npermit (principal in Group::\"engineers\", action == Action::\"auto_approve\", resource == Role::\"orders-db/read\");\n"
    );
    let admin = target.admin_dsn();
    let mut set = Replicas::start(store_cluster, 3, &policy, &cedar, &[("ORDERS_DB_ADMIN_DSN", admin.as_str())]);

    // 1,000 token grants and 100 database roles, all ending in the same
    // second: each asks for the whole seconds left until then. Filed a few
    // dozen at a time, as clients do: a thousand connections opened at once
    // outrun the brokers' accept queues on a loaded machine, and this test
    // is about their expiry.
    let idp = &set.idp;
    let deadlines_at = now_millis() + 25_000;
    let grants: Vec<_> = futures::stream::iter(0..1_100usize)
        .map(|n| {
            let replica = set.replica(n % 3);
            let (url, token) =
                (replica.url.clone(), idp.token(&format!("user{n}@acme.example"), &["engineers"], "hourglass", 3600));
            async move {
                let client = hourglass_client::Client::new(&url, &token).expect("a client");
                let seconds = (deadlines_at - now_millis() + 999) / 1000;
                let mut body = ask("read", &format!("{seconds}s"));
                if n >= 1_000 {
                    body.resource = "orders-db".into();
                    body.client_material = Some(hourglass_client::material::postgres().material);
                }
                client.create_request(&body).await.expect("issued").grant.expect("a grant")
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let latest = grants.iter().map(|g| g.expires_at).max().expect("grants");
    let inactive: Vec<_> = grants.iter().filter(|g| g.state != GrantState::Active).map(|g| (&g.id, g.state)).collect();
    assert!(inactive.is_empty(), "every grant issued: {inactive:?}\n{}", set.log(1));
    // Replica 0 dies just before the deadlines: whatever it had claimed is
    // the others' once its lease lapses.
    let first = grants.iter().map(|g| g.expires_at).min().expect("grants");
    tokio::time::sleep(Duration::from_millis(
        u64::try_from((first.unix_millis() - now_millis() - 200).max(0)).unwrap(),
    ))
    .await;
    set.kill(0);

    let settled = eventually(Duration::from_secs(60), || {
        let left = set.store_sql(
            store_cluster,
            "SELECT count(*) FROM grants WHERE state <> 'expired' OR revocation_due IS NOT NULL",
        );
        (left == "0").then_some(())
    });
    assert!(settled.is_some(), "every grant expired and revoked by the survivors");
    let roles = target.sql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'hg\\_user%'");
    assert_eq!(roles, "0", "no database role outlives its grant");
    let events = audit(&set);
    for grant in &grants {
        assert_eq!(count(&events, "grant.expired", grant.id.as_str()), 1, "{} expired once", grant.id);
        let revoked = events
            .iter()
            .filter(|e| {
                e["action"] == "grant.revocation_attempt" && e["target"] == grant.id.as_str() && e["result"] == "ok"
            })
            .count();
        assert_eq!(revoked, 1, "{} revoked once", grant.id);
    }
    let lag_ms: Vec<i64> = events
        .iter()
        .filter(|e| e["action"] == "grant.revocation_attempt" && e["result"] == "ok")
        .filter_map(|e| Some(hourglass_core::Timestamp::parse(e["at"].as_str()?).ok()?.unix_millis()))
        .map(|at| at - latest.unix_millis())
        .collect();
    eprintln!("revocations after the last deadline: worst {} ms", lag_ms.iter().max().unwrap_or(&0));
    let verify = set.verify();
    assert!(verify.ok, "the chain verifies: {}{}", verify.stdout, verify.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_a_paused_replica_does_not_act_on_work_another_took_over() {
    let cluster = PostgresCluster::shared();
    let hooks = tempfile::tempdir().expect("temp dir");
    // A hook whose revoke takes a while, and that says who ran it.
    let calls = hooks.path().join("calls.log");
    let script = format!(
        "#!/bin/sh\nread input\ncase \"$1\" in\n  issue) echo '{{\"state\": {{\"n\": 1}}, \"env\": {{\"X_TOKEN\": \"t\"}}}}' ;;\n  \
         revoke) echo \"revoke $HOURGLASS_GRANT_ID $PPID\" >> {calls}; sleep 3 ;;\n  *) echo '{{}}' ;;\nesac\n",
        calls = calls.display()
    );
    let hook = hooks.path().join("hook.sh");
    std::fs::write(&hook, script).expect("the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("executable");
    let policy = format!(
        "{POLICY}\n[resources.cloud]\nprovider = \"exec\"\nsettings = {{ command = [\"{}\"] }}\n[resources.cloud.roles.read]\n",
        hook.display()
    );
    let cedar = format!(
        "{CEDAR}\npermit (principal in Group::\"engineers\", action == Action::\"auto_approve\", resource == Role::\"cloud/read\");\n"
    );
    let set = Replicas::start(cluster, 2, &policy, &cedar, &[]);
    let (a_pid, b_pid) = (set.replica(0).pid().unwrap(), set.replica(1).pid().unwrap());
    let mut body = ask("read", "30m");
    body.resource = "cloud".into();
    let grant = set.replica(0).client("alice").create_request(&body).await.expect("issued").grant.expect("grant");

    // Alice revokes on A; A's hook starts; A is paused past its lease.
    let revoking = {
        let client = set.replica(0).client("alice");
        let id = grant.id.clone();
        tokio::spawn(async move { client.revoke(&id, None).await })
    };
    let started = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&calls).ok().filter(|text| text.contains(&format!(" {a_pid}"))).map(drop)
    });
    assert!(started.is_some(), "A's revocation started");
    set.signal(0, "STOP");
    // B takes the revocation over once A's lease lapses, and records it.
    let taken_over = eventually(Duration::from_secs(30), || {
        let done =
            set.store_sql(cluster, &format!("SELECT revocation_due IS NULL FROM grants WHERE id = '{}'", grant.id));
        let b_ran = std::fs::read_to_string(&calls).ok()?.contains(&format!(" {b_pid}"));
        (done == "t" && b_ran).then_some(())
    });
    let state = set.store_sql(
        cluster,
        "SELECT g.state, g.revocation_due, g.claimed_by, r.alive_until - hourglass_now_ms() FROM grants g LEFT JOIN replicas r ON r.id = g.claimed_by",
    );
    let activity = cluster.sql("postgres", "SELECT pid, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity WHERE datname LIKE 'store_%'");
    let ps = std::process::Command::new("ps").args(["-eo", "pid,ppid,pgid,stat,etime,args"]).output().unwrap();
    let activity = format!(
        "{activity}\n{}",
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.contains("hook") || l.contains("sleep") || l.contains("hourglassd"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    set.signal(0, "CONT");
    assert!(
        taken_over.is_some(),
        "B revoked while A was paused:\n{}\nA:\n{}\nB:\n{}\n{state}\n{activity}",
        std::fs::read_to_string(&calls).unwrap_or_default(),
        set.log(0),
        set.log(1)
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), revoking).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // A's own attempt finishes and tries to record

    let runs = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(runs.lines().count(), 2, "A's one attempt, then B's; A starts nothing after it resumes:\n{runs}");
    let events = audit(&set);
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "grant.revocation_attempt" && e["target"] == grant.id.as_str())
        .collect();
    assert_eq!(attempts.len(), 1, "one attempt recorded, the one of the replica holding the claim: {attempts:?}");
    let recorded_by = attempts[0]["details"]["replica"].as_str().unwrap_or_default();
    assert!(recorded_by.contains(&format!("-{b_pid}-")), "recorded by B ({b_pid}), which took it over: {recorded_by}");
    assert!(set.log(0).contains("taken over by another replica"), "A says why it recorded nothing");
    assert!(set.verify().ok, "the chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_the_store_restarted_under_load_loses_nothing_acknowledged() {
    // A store cluster of its own: this test stops it.
    let cluster = PostgresCluster::start();
    let set = Replicas::start(&cluster, 2, POLICY, CEDAR, &[]);
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<RequestId, usize>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4usize {
        let (url, idp_token) = (
            set.replica(worker % 2).url.clone(),
            set.idp.token(&format!("load{worker}@acme.example"), &["engineers"], "hourglass", 3600),
        );
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let client = hourglass_client::Client::new(&url, &idp_token).expect("a client");
            let (mut ok, mut refused) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.create_request(&ask("read", "2s")).await {
                    Ok(outcome) => {
                        ok += 1;
                        acknowledged.lock().unwrap().insert(outcome.request.id, worker);
                    }
                    Err(_) => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, refused)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.pause();
    tokio::time::sleep(Duration::from_secs(3)).await; // grants reach their deadlines meanwhile
    cluster.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = (0, 0);
    for worker in load {
        let (ok, refused) = worker.await.expect("a load worker");
        totals = (totals.0 + ok, totals.1 + refused);
    }
    assert!(totals.1 > 0, "requests were refused while the store was down");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 10, "requests were served before and after: {totals:?}");
    for id in acknowledged.keys() {
        let found = set.store_sql(&cluster, &format!("SELECT count(*) FROM requests WHERE id = '{id}'"));
        assert_eq!(found, "1", "acknowledged request {id} is in the store");
    }
    // Everything due meanwhile is done once the store is back.
    let settled = eventually(Duration::from_secs(30), || {
        let left = set
            .store_sql(&cluster, "SELECT count(*) FROM grants WHERE state <> 'expired' OR revocation_due IS NOT NULL");
        (left == "0").then_some(())
    });
    assert!(settled.is_some(), "the grants that expired while the store was down were revoked after");
    assert!(set.verify().ok, "the chain verifies");
    drop(set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrate_store_moves_a_brokers_history_live_grants_and_keys_to_postgres() {
    let cluster = PostgresCluster::shared();
    let target = PostgresCluster::start();
    target.create_orders_db();
    let hooks = tempfile::tempdir().expect("temp dir");
    let hook = hooks.path().join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\nread input\ncase \"$1\" in\n  issue|renew) echo '{\"state\": {\"n\": 1}, \"env\": {\"X_TOKEN\": \"t\"}}' ;;\n  *) ;;\nesac\n",
    )
    .expect("the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("executable");
    let policy = format!(
        "{POLICY}\n{}\n[resources.bastion]\nprovider = \"ssh\"\n[resources.bastion.roles.ops]\nsettings = {{ principals = [\"ops\"] }}\n\
         [resources.cloud]\nprovider = \"exec\"\nsettings = {{ command = [\"{}\"] }}\n[resources.cloud.roles.read]\n",
        target.orders_db_policy(),
        hook.display()
    );
    let mut cedar = CEDAR.to_owned();
    for role in ["orders-db/read", "bastion/ops", "cloud/read"] {
        cedar.push_str(&format!(
            "permit (principal in Group::\"engineers\", action == Action::\"auto_approve\", resource == Role::\"{role}\");\n"
        ));
    }
    let admin = target.admin_dsn();
    let env = [("ORDERS_DB_ADMIN_DSN", admin.as_str())];
    let (config, idp) = Replicas::config(&policy, &cedar);
    let tokens = Replicas::tokens(&idp);
    let log = config.path().join("source.log");
    // One broker on its SQLite store: a team before it runs replicas.
    let mut source = hourglass_e2e::DevBroker::serve_logged(config.path(), tokens, &env, &log, "info");
    let ask_for = |resource: &str, role: &str| {
        let mut body = ask(role, "30m");
        body.resource = resource.into();
        body
    };
    let (alice, dave) = (source.client("alice"), source.client("dave"));
    let token = alice.create_request(&ask("read", "30m")).await.expect("token").grant.expect("a grant");
    let mut database = ask_for("orders-db", "read");
    database.client_material = Some(hourglass_client::material::postgres().material);
    let db_grant = dave.create_request(&database).await.expect("database").grant.expect("a grant");
    let mut ssh = ask_for("bastion", "ops");
    ssh.client_material = Some(hourglass_client::material::ssh().expect("a key").material);
    let ssh_grant = alice.create_request(&ssh).await.expect("ssh").grant.expect("a grant");
    let exec_grant = alice.create_request(&ask_for("cloud", "read")).await.expect("exec").grant.expect("a grant");
    let pending = alice.create_request(&ask("write", "30m")).await.expect("pending").request;
    let ended = dave.create_request(&ask("read", "30m")).await.expect("token").grant.expect("a grant");
    dave.revoke(&ended.id, None).await.expect("revoked");
    let role = db_grant_role(&target, &db_grant.id);
    let (jwks, ca_pub) =
        tokio::task::block_in_place(|| (source.get("/.well-known/jwks.json"), source.get("/v1/providers/ssh/ca.pub")));

    let database_url = cluster.new_database();
    let store = config.path().join("source/hourglass.db");
    let migrate = |to: String| {
        std::process::Command::new(hourglass_e2e::bin("hourglassd"))
            .args(["migrate-store", "--from", &format!("sqlite:{}", store.display()), "--to", &to, "--store-key"])
            .arg(config.path().join("store.key"))
            .output()
            .expect("hourglassd runs")
    };
    let refused = migrate(database_url.url("sslmode=disable"));
    let refused_text = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "a running broker's store is not moved");
    assert!(refused_text.contains("in use by another hourglassd"), "names the running broker: {refused_text}");
    source.kill();
    let moved = migrate(database_url.url("sslmode=disable"));
    let moved_text = String::from_utf8_lossy(&moved.stdout).into_owned();
    assert!(moved.status.success(), "moved: {moved_text}{}", String::from_utf8_lossy(&moved.stderr));
    assert!(moved_text.contains("audit chain intact"), "verified after the move: {moved_text}");
    let again = migrate(database_url.url("sslmode=disable"));
    assert!(!again.status.success(), "a non-empty target is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "and says so");

    // Two replicas on the moved store, with the source's store key.
    let set = Replicas::start_on(database_url, config, idp, 2, &env);
    let (a, b) = (set.replica(0), set.replica(1));
    let live = a.client("alice").grants(false, false).await.expect("alice's grants");
    for grant in [&token, &ssh_grant, &exec_grant] {
        let found = live.grants.iter().find(|g| g.id == grant.id).unwrap_or_else(|| panic!("{} moved", grant.id));
        assert_eq!((found.state, found.expires_at), (GrantState::Active, grant.expires_at), "live, same deadline");
    }
    let same_jwks = tokio::task::block_in_place(|| b.get("/.well-known/jwks.json"));
    assert_eq!(same_jwks, jwks, "the grant-token keys moved: tokens signed before still verify");
    let same_ca = tokio::task::block_in_place(|| b.get("/v1/providers/ssh/ca.pub"));
    assert_eq!(same_ca, ca_pub, "the SSH CA moved: hosts that trust it keep trusting its certificates");
    let inbox = b.client("bob").requests().await.expect("bob's inbox");
    assert!(inbox.awaiting_me.iter().any(|r| r.id == pending.id), "the pending request waits for bob on a replica");
    let approved = b.client("bob").approve(&pending.id, None).await.expect("approved on a replica");
    assert_eq!(approved.grant.expect("issued").state, GrantState::Active);
    b.client("dave").revoke(&db_grant.id, None).await.expect("the database grant revoked on a replica");
    assert_eq!(target.sql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")), "0");
    let history = a.client("dave").history(100).await.expect("dave's history");
    assert!(history.iter().any(|r| r.event.target == ended.id.as_str()), "history moved with the store");
    let verify = set.verify();
    assert!(verify.ok, "the chain verifies on the target: {}{}", verify.stdout, verify.stderr);
}

/// The database role of a PostgreSQL grant, as the provider names it.
fn db_grant_role(target: &PostgresCluster, grant: &hourglass_core::GrantId) -> String {
    let suffix = grant.as_str().trim_start_matches(hourglass_core::GrantId::PREFIX);
    let role = target.sql("postgres", &format!("SELECT rolname FROM pg_roles WHERE rolname LIKE '%{suffix}'"));
    assert!(!role.is_empty(), "the grant's role exists");
    role
}

/// Exec hooks' credentials live in the memory of the replica that minted
/// them, never in the store: another replica asked for them mints fresh
/// ones for the same grant (a reissue, the hook's `renew` with
/// `"reissue": true`), as a broker does after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_an_exec_grant_issued_on_one_replica_has_its_credential_minted_again_on_another() {
    let cluster = PostgresCluster::shared();
    let hooks = tempfile::tempdir().expect("temp dir");
    let calls = hooks.path().join("calls.log");
    let hook = hooks.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nread input\necho \"$1 $HOURGLASS_REISSUE $PPID\" >> {calls}\ncase \"$1\" in\n  \
             issue|renew) echo \"{{\\\"state\\\": {{\\\"n\\\": 1}}, \\\"env\\\": {{\\\"X_TOKEN\\\": \\\"minted-by-$PPID\\\"}}}}\" ;;\nesac\n",
            calls = calls.display()
        ),
    )
    .expect("the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("executable");
    let policy = format!(
        "{POLICY}\n[resources.cloud]\nprovider = \"exec\"\nsettings = {{ command = [\"{}\"] }}\n[resources.cloud.roles.read]\n",
        hook.display()
    );
    let cedar = format!(
        "{CEDAR}\npermit (principal in Group::\"engineers\", action == Action::\"auto_approve\", resource == Role::\"cloud/read\");\n"
    );
    let set = Replicas::start(cluster, 2, &policy, &cedar, &[]);
    let (a_pid, b_pid) = (set.replica(0).pid().unwrap(), set.replica(1).pid().unwrap());
    let mut body = ask("read", "30m");
    body.resource = "cloud".into();
    let grant = set.replica(0).client("alice").create_request(&body).await.expect("issued").grant.expect("a grant");
    let secret = |credential: &hourglass_core::api::Credential| {
        credential.env.iter().find(|v| v.name == "X_TOKEN").map(|v| v.value.clone()).expect("the hook's variable")
    };
    let on_a = set.replica(0).client("alice").credential(&grant.id).await.expect("from A");
    assert_eq!(secret(&on_a), format!("minted-by-{a_pid}"), "A hands out what its hook minted");
    let on_b = set.replica(1).client("alice").credential(&grant.id).await.expect("from B");
    assert_eq!(secret(&on_b), format!("minted-by-{b_pid}"), "B mints its own for the same grant");
    let runs = std::fs::read_to_string(&calls).expect("the hook ran");
    assert!(runs.contains(&format!("renew true {b_pid}")), "B's was a reissue: {runs}");
    let stored = set.store_sql(cluster, &format!("SELECT provider_state FROM grants WHERE id = '{}'", grant.id));
    assert!(!stored.contains("minted-by"), "no credential in the store: {stored}");
}
