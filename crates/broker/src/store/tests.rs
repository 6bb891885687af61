//! The store's own tests. Those in `each_engine!` run twice, once on a
//! SQLite file and once on a real PostgreSQL (one throwaway cluster for the
//! test binary, a database and an unprivileged owner of its own per test),
//! so that both engines keep the same promises: `cargo test store::tests::
//! postgres` runs the PostgreSQL half. The rest are one engine's own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::collections::BTreeSet;

use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult, verify_chain};
use hourglass_core::{AccessRequest, Duration, Grant, NewRequest};
use hourglass_e2e::postgres::PostgresCluster;

use super::*;

const T0: i64 = 1_800_000_000_000;

/// A store of the engine under test, and what keeps it alive.
struct Fixture {
    store: Store,
    location: StoreLocation,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = StoreLocation::sqlite(dir.path().join("hourglass.db"));
        let store = Store::open(&location, &OpenOptions::default()).await.expect("a SQLite store");
        Fixture { store, location, _dir: dir }
    }

    async fn postgres() -> Fixture {
        let database = PostgresCluster::shared().new_database();
        let location = StoreLocation::postgres(database.url("sslmode=disable"));
        let store = Store::open(&location, &OpenOptions::default()).await.expect("a PostgreSQL store");
        Fixture { store, location, _dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A second broker on the same store (PostgreSQL only: SQLite refuses it).
    async fn replica(&self, lease: StdDuration) -> Store {
        Store::open(&self.location, &OpenOptions { lease, password: None }).await.expect("a second replica")
    }
}

fn request(n: u32, requester: &str) -> AccessRequest {
    AccessRequest::file(
        RequestId::from_random(u64::from(n) + 1),
        NewRequest {
            requester: requester.into(),
            resource: "orders-db".into(),
            role: "read".into(),
            duration: Duration::from_mins(30),
            reason: format!("request {n}"),
            ticket: None,
            break_glass: false,
            renews: None,
        },
        Vec::new(),
        Duration::from_hours(1),
        Timestamp::from_unix_millis(T0),
    )
}

fn grant_for(request: &AccessRequest, n: u32, at: i64) -> GrantRecord {
    let grant = Grant::start(GrantId::from_random(u64::from(n) + 1), request, "token", Timestamp::from_unix_millis(at));
    GrantRecord { grant, provider_state: serde_json::Value::Null }
}

fn event(n: u64) -> AuditEvent {
    AuditEvent::new(
        Timestamp::from_unix_millis(T0),
        "alice@acme.example",
        AuditAction::RequestFiled,
        "req",
        AuditResult::Ok,
    )
    .detail("n", n)
}

fn published(n: u64, to: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::RequestFiled,
        at: Timestamp::from_unix_millis(T0),
        json: format!("{{\"n\":{n}}}"),
        audience: EventAudience { principals: vec![to.into()], deciders: false },
    }
}

async fn chain(store: &Store) -> Vec<StoredLink> {
    store.audit_links(0, 100_000).await.expect("the chain reads")
}

// ---------------------------------------------------------------------------
// Both engines
// ---------------------------------------------------------------------------

async fn audit_events_of_every_commit_form_one_chain_that_verifies(f: Fixture) {
    let mut returned = Vec::new();
    for n in 0..5 {
        let mut tx = f.store.begin().await.unwrap();
        tx.audit(event(2 * n)).await.unwrap();
        // Text beyond ASCII hashes as its UTF-8 bytes, whoever hashes it.
        tx.audit(event(2 * n + 1).reason("déploiement d’urgence ✓ 緊急")).await.unwrap();
        let records = tx.commit().await.unwrap();
        assert_eq!(
            records.iter().map(|r| r.event.seq).collect::<Vec<_>>(),
            vec![2 * n + 1, 2 * n + 2],
            "numbered in order"
        );
        returned.extend(records);
    }
    let links = chain(&f.store).await;
    let (count, _) = verify_chain(links.clone()).expect("the chain verifies");
    assert_eq!(count, 10, "every appended event is in the chain");
    let kept: Vec<(u64, &str, &str)> = links.iter().map(|l| (l.seq, l.prev_hash.as_str(), l.hash.as_str())).collect();
    let told: Vec<(u64, &str, &str)> =
        returned.iter().map(|r| (r.event.seq, r.prev_hash.as_str(), r.hash.as_str())).collect();
    assert_eq!(told, kept, "each commit returned the links the store keeps");
}

async fn audit_recorded_alone_meanwhile_commits_as_one_group_each_caller_its_records(f: Fixture) {
    let groups = &f.store.audit_groups;
    let first = f.store.record_audit(vec![event(0)]).await.unwrap();
    assert_eq!(first.iter().map(|r| r.event.seq).collect::<Vec<_>>(), vec![1]);
    // Ten callers while a group commits (its turn held here): they wait,
    // then commit together.
    let turn = groups.turn.lock().await;
    let callers: Vec<_> = (1..=10)
        .map(|n| {
            let store = f.store.clone();
            tokio::spawn(async move { (n, store.record_audit(vec![event(n), event(100 + n)]).await.unwrap()) })
        })
        .collect();
    while groups.waiting.lock().unwrap().len() < 10 {
        tokio::time::sleep(StdDuration::from_millis(1)).await;
    }
    drop(turn);
    let mut seqs = Vec::new();
    for caller in callers {
        let (n, records) = caller.await.unwrap();
        let texts: Vec<String> = records.iter().map(|r| r.event.canonical_after_seq()).collect();
        let own = vec![event(n).canonical_after_seq(), event(100 + n).canonical_after_seq()];
        assert_eq!(texts, own, "each caller its own records, in order");
        seqs.extend(records.iter().map(|r| r.event.seq));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=21).collect::<Vec<_>>(), "numbered once each, after the first");
    assert_eq!(groups.committed.load(std::sync::atomic::Ordering::SeqCst), 2, "the ten in one transaction");
    let (count, _) = verify_chain(chain(&f.store).await).expect("the chain verifies");
    assert_eq!(count, 21);
}

async fn a_transaction_dropped_uncommitted_leaves_nothing(f: Fixture) {
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_request(&request(1, "alice@acme.example"), None).await.unwrap();
    tx.audit(event(1)).await.unwrap();
    tx.publish(published(1, "alice@acme.example"));
    drop(tx);
    // The next transaction (on PostgreSQL, maybe the same pooled connection) starts clean.
    let mut tx = f.store.begin().await.unwrap();
    tx.audit(event(2)).await.unwrap();
    tx.commit().await.unwrap();
    assert!(f.store.request(&request(1, "alice@acme.example").id).await.unwrap().is_none(), "the request is not there");
    assert_eq!(chain(&f.store).await.len(), 1, "only the committed audit event is in the chain");
    assert_eq!(f.store.last_event().await.unwrap(), 0, "no event was published");
}

async fn a_transaction_dropped_after_a_read_leaves_nothing_of_its_writes(f: Fixture) {
    let alice = request(1, "alice@acme.example");
    let mut tx = f.store.begin().await.unwrap();
    assert!(tx.request(&alice.id).await.unwrap().is_none(), "a read: the transaction has begun");
    // On PostgreSQL these wait to go out with the next statement, which never comes.
    tx.insert_request(&alice, None).await.unwrap();
    tx.take_turn("principal/alice@acme.example").await.unwrap();
    drop(tx);
    // PostgreSQL: time for the rollback, so that its connection is back in
    // the pool and serves the next transaction.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    for n in 2..=4 {
        let mut tx = f.store.begin().await.unwrap();
        tx.audit(event(n)).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert!(f.store.request(&alice.id).await.unwrap().is_none(), "the dropped write never reached the store");
    assert_eq!(chain(&f.store).await.len(), 3, "the later transactions committed");
}

async fn a_failed_write_fails_its_transaction_and_leaves_nothing(f: Fixture) {
    let alice = request(1, "alice@acme.example");
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_request(&alice, None).await.unwrap();
    tx.commit().await.unwrap();
    let bob = request(2, "bob@acme.example");
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_request(&bob, None).await.unwrap();
    // The same id again: refused, here (SQLite) or at the commit (PostgreSQL).
    let again = tx.insert_request(&alice, None).await;
    tx.audit(event(1)).await.unwrap();
    let committed = match again {
        Ok(()) => tx.commit().await,
        Err(error) => {
            drop(tx);
            Err(error)
        }
    };
    assert!(committed.is_err(), "a transaction with a failed write does not commit");
    assert!(f.store.request(&bob.id).await.unwrap().is_none(), "nothing of it is in the store");
    assert!(chain(&f.store).await.is_empty(), "nor its audit event");
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_request(&bob, None).await.unwrap();
    tx.commit().await.unwrap();
    assert!(f.store.request(&bob.id).await.unwrap().is_some(), "the store takes the next transaction");
}

async fn events_are_numbered_in_commit_order_and_read_after_a_cursor(f: Fixture) {
    for n in 1..=4 {
        let mut tx = f.store.begin().await.unwrap();
        tx.publish(published(n, "alice@acme.example"));
        tx.commit().await.unwrap();
    }
    assert_eq!(f.store.last_event().await.unwrap(), 4);
    let after_one = f.store.events_after(1, 10).await.unwrap();
    assert_eq!(after_one.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3, 4], "the events after the cursor");
    assert_eq!(after_one[0].json, "{\"n\":2}", "as published");
    assert_eq!(after_one[0].audience.principals, vec!["alice@acme.example".to_owned()]);
    assert_eq!(f.store.events_after(1, 2).await.unwrap().len(), 2, "at most as many as asked");
    assert!(f.store.events_after(4, 10).await.unwrap().is_empty(), "nothing after the last");
    assert_eq!(f.store.oldest_event().await.unwrap(), Some(1));
}

async fn requests_and_grants_round_trip_with_their_lists(f: Fixture) {
    let alice = request(1, "alice@acme.example");
    let bob = request(2, "bob@acme.example");
    let record = grant_for(&alice, 1, T0);
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_request(&alice, None).await.unwrap();
    tx.insert_request(&bob, None).await.unwrap();
    tx.insert_grant(&record).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(f.store.request(&alice.id).await.unwrap().as_ref(), Some(&alice), "stored whole");
    assert_eq!(f.store.grant(&record.grant.id).await.unwrap().as_ref(), Some(&record), "stored whole");
    assert_eq!(f.store.requests_of("alice@acme.example", 10).await.unwrap(), vec![alice.clone()]);
    assert_eq!(f.store.pending_requests(10).await.unwrap().len(), 2, "both wait");
    assert_eq!(f.store.grants(Some("alice@acme.example"), false, 10).await.unwrap().len(), 1);
    assert!(f.store.grants(Some("bob@acme.example"), true, 10).await.unwrap().is_empty());
    let mut tx = f.store.begin().await.unwrap();
    assert_eq!(tx.pending_count("alice@acme.example", Timestamp::from_unix_millis(T0)).await.unwrap(), 1);
    let clashes =
        tx.filing_clashes("alice@acme.example", "orders-db", "read", Timestamp::from_unix_millis(T0)).await.unwrap();
    assert_eq!(clashes.pending, Some(alice.id.clone()), "the same access already waits");
    assert_eq!(clashes.live.map(|live| live.grant.id), Some(record.grant.id.clone()), "and is held");
    let none =
        tx.filing_clashes("bob@acme.example", "orders-db", "write", Timestamp::from_unix_millis(T0)).await.unwrap();
    assert!(none.pending.is_none() && none.live.is_none(), "nothing clashes with other access");
    let live = tx.live_grants_on("orders-db", None, Some("alice@acme.example")).await.unwrap();
    assert_eq!(live.len(), 1, "narrowed to an owner");
    assert!(tx.live_grants_on("orders-db", Some("write"), None).await.unwrap().is_empty(), "narrowed to a role");
}

async fn due_work_is_found_at_its_time_and_not_before(f: Fixture) {
    let alice = request(1, "alice@acme.example");
    let mut record = grant_for(&alice, 1, T0);
    record.grant.activate(true, Timestamp::from_unix_millis(T0));
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_request(&alice, None).await.unwrap();
    tx.insert_grant(&record).await.unwrap();
    tx.commit().await.unwrap();
    let deadline = record.grant.expires_at;
    let (next, _) = f.store.next_work(StdDuration::from_millis(250)).await.unwrap();
    assert_eq!(next, Some(deadline.min(alice.pending_until)), "the scheduler wakes at the first deadline");
    let mut tx = f.store.begin().await.unwrap();
    assert!(tx.due_grants(deadline.plus_millis(-1), 10).await.unwrap().is_empty(), "not before its deadline");
    let mut due = tx.due_grants(deadline, 10).await.unwrap();
    assert_eq!(due.len(), 1, "due at its deadline");
    assert!(!due[0].renewal_pending, "nobody asked to renew it");
    let mut due: Vec<GrantRecord> = due.drain(..).map(|due| due.record).collect();
    assert!(due[0].grant.expire_if_due(deadline));
    tx.update_grant(&due[0], Claim::Take).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = f.store.begin().await.unwrap();
    assert!(
        tx.due_revocations(deadline, 10).await.unwrap().is_empty(),
        "claimed by this replica: not due for it again"
    );
    assert_eq!(tx.claimed_grants(&[record.grant.id.clone()]).await.unwrap().len(), 1, "held by this replica");
    tx.update_grant(&due[0], Claim::Release).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = f.store.begin().await.unwrap();
    assert_eq!(tx.due_revocations(deadline, 10).await.unwrap().len(), 1, "released: due again");
    assert!(tx.claimed_grants(&[record.grant.id.clone()]).await.unwrap().is_empty(), "no longer held");
}

async fn a_due_grant_says_whether_a_renewal_of_it_is_pending(f: Fixture) {
    let (alice, bob) = (request(1, "alice@acme.example"), request(2, "bob@acme.example"));
    let mut records = Vec::new();
    let mut tx = f.store.begin().await.unwrap();
    for (n, filed) in [(1, &alice), (2, &bob)] {
        let mut record = grant_for(filed, n, T0);
        record.grant.activate(true, Timestamp::from_unix_millis(T0));
        tx.insert_request(filed, None).await.unwrap();
        tx.insert_grant(&record).await.unwrap();
        records.push(record);
    }
    let mut renewal = request(3, "alice@acme.example");
    renewal.renews = Some(records[0].grant.id.clone());
    assert!(renewal.is_pending());
    tx.insert_request(&renewal, None).await.unwrap();
    tx.commit().await.unwrap();
    let deadline = records[0].grant.expires_at.max(records[1].grant.expires_at);
    let mut tx = f.store.begin().await.unwrap();
    let due = tx.due_grants(deadline, 10).await.unwrap();
    let pending: Vec<(GrantId, bool)> =
        due.iter().map(|due| (due.record.grant.id.clone(), due.renewal_pending)).collect();
    assert_eq!(pending.len(), 2, "both due");
    for (record, expected) in records.iter().zip([true, false]) {
        assert!(pending.contains(&(record.grant.id.clone(), expected)), "{pending:?}");
    }
    let withdrawn = tx.pending_renewals(&[records[0].grant.id.clone(), records[1].grant.id.clone()]).await.unwrap();
    assert_eq!(withdrawn.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![renewal.id.clone()], "read together");
}

async fn a_grant_being_issued_is_claimed_by_the_replica_issuing_it(f: Fixture) {
    let alice = request(1, "alice@acme.example");
    let record = grant_for(&alice, 1, T0);
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_grant(&record).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = f.store.begin().await.unwrap();
    tx.grant(&record.grant.id).await.unwrap();
    assert!(tx.holds_claim(&record.grant.id).await.unwrap(), "the issuer holds it");
    assert!(
        tx.interrupted_issues(Timestamp::from_unix_millis(T0), 10).await.unwrap().is_empty(),
        "an issue in progress is nobody else's"
    );
}

async fn principals_and_history_read_by_actor_and_subject(f: Fixture) {
    let mut tx = f.store.begin().await.unwrap();
    tx.audit(event(1).subject("bob@acme.example")).await.unwrap();
    tx.audit(
        AuditEvent::new(
            Timestamp::from_unix_millis(T0),
            "carol@acme.example",
            AuditAction::GrantRevoked,
            "g",
            AuditResult::Ok,
        )
        .subject("dave@acme.example"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let alice = f.store.history("alice@acme.example", 10).await.unwrap();
    assert_eq!(alice.len(), 1, "what alice did");
    let bob = f.store.history("bob@acme.example", 10).await.unwrap();
    assert_eq!(bob.len(), 1, "what was done about bob");
    assert!(f.store.history("erin@acme.example", 10).await.unwrap().is_empty());
}

fn notice(id: &str, topic: &str, due: i64) -> NewNotice {
    NewNotice {
        id: id.into(),
        channel: "sre-slack".into(),
        topic: topic.into(),
        created_at: Timestamp::from_unix_millis(T0),
        due_at: Timestamp::from_unix_millis(due),
        notice: format!("{{\"id\":\"{id}\"}}"),
    }
}

/// Claims what is due at `at`: (id, seq) in order.
async fn claim(store: &Store, at: i64) -> Vec<(String, i64)> {
    let mut tx = store.begin().await.unwrap();
    let claimed = tx.claim_notices(Timestamp::from_unix_millis(at), 10).await.unwrap();
    tx.commit().await.unwrap();
    claimed.into_iter().map(|notice| (notice.id, notice.seq)).collect()
}

fn ids(claimed: &[(String, i64)]) -> Vec<&str> {
    claimed.iter().map(|(id, _)| id.as_str()).collect()
}

async fn finish(store: &Store, claimed: &[(String, i64)], id: &str, at: i64, outcome: NoticeOutcome) -> bool {
    let seq = claimed.iter().find(|(claimed, _)| claimed == id).map(|(_, seq)| *seq).unwrap();
    let mut tx = store.begin().await.unwrap();
    let done = tx.notice_done(seq, Timestamp::from_unix_millis(at), &outcome).await.unwrap();
    tx.commit().await.unwrap();
    done
}

async fn notices_commit_with_their_transaction_and_go_out_in_topic_order(f: Fixture) {
    let mut tx = f.store.begin().await.unwrap();
    tx.enqueue(notice("n1", "approvers:req1", T0));
    drop(tx);
    assert!(claim(&f.store, T0).await.is_empty(), "a transaction dropped enqueues nothing");

    let mut tx = f.store.begin().await.unwrap();
    tx.enqueue(notice("announce", "approvers:req1", T0));
    tx.enqueue(notice("other", "approvers:req2", T0));
    tx.enqueue(notice("reminder", "requester:req1", T0 + 60_000));
    tx.commit().await.unwrap();
    let mut tx = f.store.begin().await.unwrap();
    tx.enqueue(notice("update", "approvers:req1", T0));
    tx.commit().await.unwrap();

    let first = claim(&f.store, T0).await;
    assert_eq!(ids(&first), ["announce", "other"], "the update waits for its announcement; the reminder for its time");
    assert!(claim(&f.store, T0).await.is_empty(), "held while this replica sends them");
    let retry = NoticeOutcome::Retry { next: Timestamp::from_unix_millis(T0 + 1_000), error: "503".into() };
    assert!(finish(&f.store, &first, "announce", T0, retry).await);
    assert!(claim(&f.store, T0 + 500).await.is_empty(), "backing off, and the update still behind it");
    let again = claim(&f.store, T0 + 1_000).await;
    assert_eq!(ids(&again), ["announce"]);
    let sent = NoticeOutcome::Sent { reference: Some("C1/1700.0001".into()) };
    assert!(finish(&f.store, &again, "announce", T0 + 1_000, sent).await);
    assert_eq!(f.store.notice_thread("sre-slack", "approvers:req1").await.unwrap().as_deref(), Some("C1/1700.0001"));
    assert_eq!(f.store.notice_thread("sre-slack", "approvers:req2").await.unwrap(), None);
    let update = claim(&f.store, T0 + 1_000).await;
    assert_eq!(ids(&update), ["update"], "now the update goes");
    assert!(finish(&f.store, &first, "other", T0 + 1_000, NoticeOutcome::Sent { reference: None }).await);
    let abandoned = NoticeOutcome::Abandoned { error: "gone".into() };
    assert!(finish(&f.store, &update, "update", T0 + 1_000, abandoned).await);
    assert_eq!(f.store.next_notice_due().await.unwrap(), Some(Timestamp::from_unix_millis(T0 + 60_000)));
    let reminder = claim(&f.store, T0 + 60_000).await;
    assert_eq!(ids(&reminder), ["reminder"]);
    let skipped = NoticeOutcome::Skipped { why: "renewed".into() };
    assert!(finish(&f.store, &reminder, "reminder", T0 + 60_000, skipped).await);
    assert_eq!(f.store.next_notice_due().await.unwrap(), None, "nothing left to send");
    assert!(claim(&f.store, T0 + 120_000).await.is_empty());
    f.store.prune_notices(Timestamp::from_unix_millis(T0 + 60_001)).await.unwrap();
    assert_eq!(f.store.notice_thread("sre-slack", "approvers:req1").await.unwrap(), None, "pruned when done");
}

async fn break_glass_grants_await_review_until_reviewed(f: Fixture) {
    let mut glass = request(1, "dave@acme.example");
    glass.break_glass = true;
    let mut record = grant_for(&glass, 1, T0);
    let plain = grant_for(&request(2, "alice@acme.example"), 2, T0);
    let mut tx = f.store.begin().await.unwrap();
    tx.insert_grant(&record).await.unwrap();
    tx.insert_grant(&plain).await.unwrap();
    tx.commit().await.unwrap();
    let waiting = f.store.grants_awaiting_review(10).await.unwrap();
    assert_eq!(waiting.iter().map(|r| r.grant.id.clone()).collect::<Vec<_>>(), [record.grant.id.clone()]);
    let review = hourglass_core::review::Review {
        reviewer: "bob@acme.example".into(),
        verdict: hourglass_core::review::ReviewVerdict::Justified,
        comment: "outage".into(),
        at: Timestamp::from_unix_millis(T0),
    };
    record.grant.record_review(review).unwrap();
    let mut tx = f.store.begin().await.unwrap();
    tx.update_grant(&record, Claim::Keep).await.unwrap();
    tx.commit().await.unwrap();
    assert!(f.store.grants_awaiting_review(10).await.unwrap().is_empty(), "reviewed: no longer waiting");
}

/// Runs each test on both engines: `store::tests::sqlite::NAME` and
/// `store::tests::postgres::NAME`.
macro_rules! each_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Fixture::sqlite().await).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Fixture::postgres().await).await })*
        }
    };
}

each_engine!(
    audit_events_of_every_commit_form_one_chain_that_verifies,
    audit_recorded_alone_meanwhile_commits_as_one_group_each_caller_its_records,
    a_transaction_dropped_uncommitted_leaves_nothing,
    a_transaction_dropped_after_a_read_leaves_nothing_of_its_writes,
    a_failed_write_fails_its_transaction_and_leaves_nothing,
    events_are_numbered_in_commit_order_and_read_after_a_cursor,
    requests_and_grants_round_trip_with_their_lists,
    due_work_is_found_at_its_time_and_not_before,
    a_due_grant_says_whether_a_renewal_of_it_is_pending,
    a_grant_being_issued_is_claimed_by_the_replica_issuing_it,
    principals_and_history_read_by_actor_and_subject,
    notices_commit_with_their_transaction_and_go_out_in_topic_order,
    break_glass_grants_await_review_until_reviewed,
);

// ---------------------------------------------------------------------------
// PostgreSQL: several replicas on one store
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_from_two_replicas_at_once_form_one_chain_and_one_event_order() {
    let f = Fixture::postgres().await;
    let other = f.replica(DEFAULT_LEASE).await;
    let mut tasks = Vec::new();
    for (r, store) in [f.store.clone(), other.clone()].into_iter().enumerate() {
        for n in 0..20u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.audit(event(n)).await.unwrap();
                tx.publish(published(n, &format!("replica{r}")));
                tx.commit().await.unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (count, _) = verify_chain(chain(&f.store).await).expect("one chain across replicas verifies");
    assert_eq!(count, 40, "every append of both replicas is in it");
    let events = f.store.events_after(0, 100).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "numbered without gap or repeat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_split_due_work_instead_of_waiting_on_each_other() {
    let f = Fixture::postgres().await;
    let other = f.replica(DEFAULT_LEASE).await;
    let mut tx = f.store.begin().await.unwrap();
    for n in 0..10 {
        let request = request(n, &format!("user{n}@acme.example"));
        let mut record = grant_for(&request, n, T0);
        record.grant.activate(true, Timestamp::from_unix_millis(T0));
        tx.insert_grant(&record).await.unwrap();
    }
    tx.commit().await.unwrap();
    let late = Timestamp::from_unix_millis(T0 + 3_600_000);
    let mut first = f.store.begin().await.unwrap();
    let mine = first.due_grants(late, 6).await.unwrap();
    // The first replica holds six rows locked; the second gets the others at once.
    let mut second = other.begin().await.unwrap();
    let theirs = tokio::time::timeout(StdDuration::from_secs(5), second.due_grants(late, 10))
        .await
        .expect("not blocked by the rows another replica is taking")
        .unwrap();
    let mine: BTreeSet<_> = mine.iter().map(|due| due.record.grant.id.clone()).collect();
    let theirs: BTreeSet<_> = theirs.iter().map(|due| due.record.grant.id.clone()).collect();
    assert_eq!(mine.len(), 6);
    assert_eq!(theirs.len(), 4, "the rest");
    assert!(mine.is_disjoint(&theirs), "no grant is taken by both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lapsed_lease_is_not_renewed_and_its_claims_are_taken_over() {
    let f = Fixture::postgres().await;
    let short = f.replica(StdDuration::from_millis(600)).await;
    let request = request(1, "alice@acme.example");
    let record = grant_for(&request, 1, T0);
    let mut tx = short.begin().await.unwrap();
    tx.insert_grant(&record).await.unwrap();
    tx.commit().await.unwrap();
    let now = Timestamp::from_unix_millis(T0);
    let mut tx = f.store.begin().await.unwrap();
    assert!(tx.interrupted_issues(now, 10).await.unwrap().is_empty(), "the issuer's lease holds");
    drop(tx);
    assert!(short.may_act(), "within its lease");
    // No renewal: as if the replica were paused.
    tokio::time::sleep(StdDuration::from_millis(900)).await;
    assert!(!short.may_act(), "past its lease it acts on nothing it claimed");
    let mut tx = f.store.begin().await.unwrap();
    let taken = tx.interrupted_issues(now, 10).await.unwrap();
    assert_eq!(taken.len(), 1, "the lapsed claim is anyone's");
    tx.update_grant(&taken[0], Claim::Take).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = short.begin().await.unwrap();
    tx.grant(&record.grant.id).await.unwrap();
    assert!(!tx.holds_claim(&record.grant.id).await.unwrap(), "the paused replica no longer holds it");
    drop(tx);
    let old_id = short.replica_id();
    assert!(!short.renew_lease().await.unwrap(), "a lapsed lease is not renewed");
    assert_ne!(short.replica_id(), old_id, "it carries on as a new replica");
    assert!(short.may_act(), "with a lease of its own again");
}

/// The replica that sets a deadline keeps it: the others look a grace
/// later, so that three replicas do not all wake and race for each
/// deadline; at the deadline itself once the keeper is gone (its lease
/// lapsed, or its row pruned). Moving the deadline (a renewal) makes the
/// replica that moved it the keeper; other writes leave the keeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deadline_another_live_replica_keeps_is_looked_at_a_grace_later_and_at_once_when_it_is_gone() {
    let f = Fixture::postgres().await;
    let grace = StdDuration::from_millis(250);
    // Leases that outlast the test, but for `short`'s.
    let keeper = f.replica(StdDuration::from_secs(60)).await;
    let other = f.replica(StdDuration::from_secs(60)).await;
    let short = f.replica(StdDuration::from_millis(600)).await;
    let (mine, _) = other.next_work(grace).await.unwrap();
    assert_eq!(mine, None, "nothing to do yet");

    let alice = request(1, "alice@acme.example");
    let mut record = grant_for(&alice, 1, T0);
    record.grant.activate(true, Timestamp::from_unix_millis(T0));
    let deadline = record.grant.expires_at;
    let mut tx = keeper.begin().await.unwrap();
    tx.insert_grant(&record).await.unwrap();
    tx.commit().await.unwrap();
    let next = |store: &Store| {
        let store = store.clone();
        async move { store.next_work(grace).await.unwrap().0 }
    };
    assert_eq!(next(&keeper).await, Some(deadline), "its keeper looks at the deadline");
    assert_eq!(next(&other).await, Some(deadline.plus_millis(250)), "another live replica, a grace later");

    // Another replica records something that leaves the deadline: the keeper stays.
    let mut tx = other.begin().await.unwrap();
    tx.update_grant(&record, Claim::Keep).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next(&keeper).await, Some(deadline), "the keeper still keeps it");
    // It renews the grant: the deadline and the grant are its own now.
    let renewed = deadline.plus_millis(60_000);
    record.grant.expires_at = renewed;
    let mut tx = other.begin().await.unwrap();
    tx.update_grant(&record, Claim::Keep).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next(&other).await, Some(renewed), "the replica that moved the deadline keeps it");
    assert_eq!(next(&keeper).await, Some(renewed.plus_millis(250)), "the former keeper, a grace later");

    // A keeper whose lease lapses (it died, or was paused) keeps nothing.
    let bob = request(2, "bob@acme.example");
    let mut orphan = grant_for(&bob, 2, T0 - 1000);
    orphan.grant.activate(true, Timestamp::from_unix_millis(T0 - 1000));
    let mut tx = short.begin().await.unwrap();
    tx.insert_grant(&orphan).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next(&other).await, Some(orphan.grant.expires_at.plus_millis(250)), "kept while its lease holds");
    tokio::time::sleep(StdDuration::from_millis(900)).await;
    assert_eq!(next(&other).await, Some(orphan.grant.expires_at), "its keeper gone: at the deadline");
    assert_eq!(next(&keeper).await, Some(orphan.grant.expires_at), "for every replica");
    // Pruned, the keeper's row is gone but its grants stay everybody's.
    other.prune(Timestamp::from_unix_millis(0), StdDuration::ZERO).await.unwrap();
    assert_eq!(next(&keeper).await, Some(orphan.grant.expires_at), "its keeper pruned: still at the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_never_claim_the_same_notice_and_take_over_a_lapsed_ones() {
    let f = Fixture::postgres().await;
    let short = f.replica(StdDuration::from_millis(600)).await;
    let mut tx = f.store.begin().await.unwrap();
    for n in 0..20 {
        tx.enqueue(notice(&format!("n{n}"), &format!("approvers:req{n}"), T0));
    }
    tx.commit().await.unwrap();
    let mut mine = f.store.begin().await.unwrap();
    let first = mine.claim_notices(Timestamp::from_unix_millis(T0), 12).await.unwrap();
    // The first replica holds twelve rows locked; the other gets the rest at once.
    let theirs = tokio::time::timeout(StdDuration::from_secs(5), claim(&short, T0)).await.expect("not blocked");
    mine.commit().await.unwrap();
    let first: BTreeSet<String> = first.into_iter().map(|notice| notice.id).collect();
    let theirs_ids: BTreeSet<String> = theirs.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!((first.len(), theirs_ids.len()), (12, 8));
    assert!(first.is_disjoint(&theirs_ids), "no notice is claimed by both");
    assert!(claim(&f.store, T0).await.is_empty(), "the other's claims hold");
    // The short-lease replica stops renewing: its notices are anyone's.
    tokio::time::sleep(StdDuration::from_millis(900)).await;
    let taken: BTreeSet<String> = claim(&f.store, T0).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(taken, theirs_ids, "a lapsed replica's notices are taken over");
    let (id, _) = &theirs[0];
    let stale = NoticeOutcome::Sent { reference: None };
    assert!(!finish(&short, &theirs, id, T0, stale).await, "the lapsed replica records nothing it no longer holds");
}

/// libpq ignores sslmode over a Unix-domain socket (no TLS there), and so
/// does the store: even `require` connects to a TLS-only server's socket.
/// Fails with TLS attempted over the socket ("\"\" is not a server name").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_sslmode_is_ignored_over_a_unix_socket_as_libpq_does() {
    let cluster = PostgresCluster::shared_tls();
    let database = cluster.new_database();
    for mode in ["prefer", "require"] {
        let dsn = format!(
            "host={} port={} user={} password={} dbname={} sslmode={mode}",
            cluster.socket_dir().display(),
            database.port,
            database.owner,
            database.password,
            database.name
        );
        let store = Store::open(&StoreLocation::postgres(dsn), &OpenOptions::default()).await;
        assert!(
            store.is_ok(),
            "sslmode={mode} over a Unix socket: {}",
            store.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}

/// A new deployment's connections plan their statements on an empty store,
/// and PostgreSQL keeps such a plan (generic, after five runs) until the
/// tables' statistics change. A filing's clash check and the scheduler's
/// look for interrupted issues must read only the grants they are about
/// under that plan too, not every live grant: fails with the lookups on
/// `grants_live` (by deadline) of schema version 7. So must the scheduler's
/// next look when other replicas keep every deadline: fails if it finds
/// this replica's own by filtering the grants in deadline order. And an
/// expiry's look for the renewals pending on the grants it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lookups_planned_on_an_empty_store_read_only_their_grants_once_it_grew() {
    let f = Fixture::postgres().await;
    let Engine::Postgres(engine) = &f.store.engine else { unreachable!() };
    let connection = engine.get().await.unwrap();
    let client = &connection.client;
    // Every grant is kept by another replica, alive: this one's next look
    // at a deadline must not read them all to find none of its own.
    let other = f.replica(StdDuration::from_secs(60)).await;
    let next_work_args = format!("('{}', 250)", f.store.replica_id());
    let lookups = [
        ("live_grant", q::LIVE_GRANT.postgres, "('nobody@acme.example', 'orders-db', 'read', 0)"),
        ("interrupted", q::INTERRUPTED_ISSUES.postgres, "(0, 100)"),
        ("due_grants", q::DUE_GRANTS.postgres, "(0, 1000)"),
        ("due_kinds", q::DUE_KINDS.postgres, "(0)"),
        ("next_work", q::NEXT_WORK.postgres, next_work_args.as_str()),
        ("renewals", q::PENDING_RENEWALS.postgres, "('[\"g1\", \"g2\"]')"),
    ];
    for (name, sql, args) in lookups {
        client.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap();
        for _ in 0..6 {
            client.batch_execute(&format!("EXECUTE {name}{args}")).await.unwrap();
        }
    }
    client
        .batch_execute(&format!(
            "INSERT INTO grants (id, request_id, owner, resource, role, state, expires_at, provider_state, doc, keeper)
             SELECT 'g' || n, 'r' || n, 'user' || n || '@acme.example', 'orders-db', 'read', 'active', {T0} + n, '{{}}', '{{}}',
                    '{}'
             FROM generate_series(1, 5000) AS n;
             INSERT INTO requests (id, requester, resource, role, state, renews, created_at, pending_until, doc)
             SELECT 'r' || n, 'user' || n || '@acme.example', 'orders-db', 'read', 'approved',
                    CASE WHEN n % 2 = 0 THEN 'g' || n END, {T0}, {T0} + n, '{{}}'
             FROM generate_series(1, 5000) AS n",
            other.replica_id()
        ))
        .await
        .unwrap();
    for (name, _, args) in lookups {
        let messages =
            client.simple_query(&format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}{args}")).await.unwrap();
        let text = messages
            .iter()
            .find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            })
            .unwrap();
        let plan: serde_json::Value = serde_json::from_str(text).unwrap();
        let read = rows_read(&plan[0]["Plan"]);
        assert!(read < 10, "{name} read {read} rows of 5000 to find none: {plan:#}");
    }
}

/// Grants and requests a plan's nodes read (produced or filtered out),
/// summed over the tree.
fn rows_read(node: &serde_json::Value) -> u64 {
    let reads_grants = matches!(node["Relation Name"].as_str(), Some("grants" | "requests"));
    let own = ["Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"]
        .iter()
        .filter(|_| reads_grants)
        .filter_map(|key| node[*key].as_u64())
        .sum::<u64>();
    own + node["Plans"].as_array().map_or(0, |plans| plans.iter().map(rows_read).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_the_store_honours_sslmode_against_a_tls_only_server() {
    let cluster = PostgresCluster::shared_tls();
    let database = cluster.new_database();
    let ca = cluster.tls_ca().expect("a TLS cluster").display().to_string();
    let open = |query: String| {
        let location = StoreLocation::postgres(database.url(&query));
        async move { Store::open(&location, &OpenOptions::default()).await }
    };
    // verify-full: the chain to the server's CA, and its name (127.0.0.1).
    let store = open(format!("sslmode=verify-full&sslrootcert={ca}")).await.expect("verify-full with the server's CA");
    let Engine::Postgres(engine) = &store.engine else { unreachable!() };
    let connection = engine.get().await.expect("a connection");
    let row = connection.client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await;
    assert!(row.expect("pg_stat_ssl").get::<_, bool>(0), "the store's connections are TLS");
    drop(connection);
    // require: encrypted, the certificate taken as it is (libpq's meaning).
    open("sslmode=require".into()).await.expect("require encrypts without checking the certificate");
    // Plain text is refused by this server; a CA that did not sign its
    // certificate is refused by the broker.
    let plain = open("sslmode=disable".into()).await.err().expect("refused").to_string();
    assert!(plain.contains("pg_hba.conf") || plain.contains("no encryption"), "the server refuses plain text: {plain}");
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = other.path().join("other.pem");
    hourglass_e2e::ca::TestCa::new("Not the server's CA").write(&other_ca);
    let wrong = open(format!("sslmode=verify-full&sslrootcert={}", other_ca.display())).await.err().expect("refused");
    let wrong = wrong.to_string();
    assert!(wrong.contains("certificate") || wrong.contains("UnknownIssuer"), "an unknown CA is refused: {wrong}");
    assert!(!wrong.contains(&database.password), "never the password: {wrong}");
}

// ---------------------------------------------------------------------------
// SQLite: one broker per file
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_a_second_broker_on_the_same_file_is_refused_naming_the_first() {
    let f = Fixture::sqlite().await;
    let error = Store::open(&f.location, &OpenOptions::default()).await.err().expect("refused").to_string();
    assert!(error.contains("in use by another hourglassd"), "{error}");
    assert!(error.contains(&format!("pid {}", std::process::id())), "names the holder: {error}");
    assert!(error.contains("PostgreSQL"), "says how to run several: {error}");
    // Read-only opens (audit verify while a broker runs) are not refused.
    Store::open_read_only(&f.location, &OpenOptions::default()).await.expect("read-only open");
    let StoreLocation::Sqlite(path) = f.location.clone() else { unreachable!() };
    drop(f.store);
    Store::open_sqlite(&path).await.expect("free again once the first is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_are_acknowledged_after_a_flush_they_share() {
    let f = Fixture::sqlite().await;
    let Engine::Sqlite(engine) = &f.store.engine else { unreachable!() };
    let durability = engine.durability().expect("a writable store");
    let syncs_before = durability.syncs();
    let committed_before = durability.committed.load(std::sync::atomic::Ordering::Acquire);
    // A flush in progress: commits may go to the WAL meanwhile, but none
    // is acknowledged until a flush after it.
    let flushing = durability.turn.lock().await;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..8 {
        let (store, done_tx) = (f.store.clone(), done_tx.clone());
        tokio::spawn(async move {
            let mut tx = store.begin().await.expect("begin");
            tx.audit(event(i)).await.expect("append");
            tx.commit().await.expect("commit");
            done_tx.send(()).expect("report");
        });
    }
    drop(done_tx);
    while durability.committed.load(std::sync::atomic::Ordering::Acquire) < committed_before + 8 {
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    assert!(done.try_recv().is_err(), "a commit was acknowledged before any flush covered it");
    drop(flushing);
    let mut acknowledged = 0;
    while done.recv().await.is_some() {
        acknowledged += 1;
    }
    assert_eq!(acknowledged, 8);
    assert_eq!(durability.syncs() - syncs_before, 1, "the eight commits waiting shared one fsync");
    assert_eq!(f.store.audit_records(0, 100).await.expect("audit").len(), 8, "all eight are in the chain");
}

#[tokio::test]
async fn sqlite_a_version_1_store_is_migrated_in_place_with_its_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hourglass.db");
    let head = {
        // A version-1 store with one chained event, as an old broker left it.
        let store = Store::open_sqlite(&path).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.audit(event(1)).await.unwrap();
        let head = tx.commit().await.unwrap().pop().unwrap().hash;
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "DROP TABLE chain; DROP TABLE events; DROP TABLE replicas; DROP INDEX grants_claimed;
                 DROP TABLE signing_keys; DROP TABLE documents; DROP TABLE outbox;
                 DROP INDEX audit_by_actor; DROP INDEX requests_renewing;
                 DROP INDEX grants_awaiting_review; ALTER TABLE grants DROP COLUMN awaiting_review;
                 DROP INDEX grants_live_by_access; DROP INDEX grants_issuing; DROP INDEX grants_revocation_due;
                 CREATE INDEX grants_revocation_due ON grants (revocation_due) WHERE revocation_due IS NOT NULL;
                 ALTER TABLE grants DROP COLUMN claimed_by; ALTER TABLE grants DROP COLUMN keeper;
                 ALTER TABLE requests DROP COLUMN client_material;
                 UPDATE meta SET value = '1' WHERE key = 'schema_version';",
            )
            .unwrap();
        head
    };
    let store = Store::open_sqlite(&path).await.expect("opens and migrates");
    let mut tx = store.begin().await.unwrap();
    tx.audit(event(2)).await.unwrap();
    let appended = tx.commit().await.unwrap();
    assert_eq!(appended[0].event.seq, 2, "the chain carries on from the old head");
    assert_eq!(appended[0].prev_hash, head, "linked to the old head");
    verify_chain(chain(&store).await).expect("the migrated chain verifies");
    drop(store);
    Store::open_sqlite(&path).await.expect("opening again applies nothing twice");
}

#[tokio::test]
async fn sqlite_a_store_from_a_newer_broker_is_refused() {
    let f = Fixture::sqlite().await;
    let Engine::Sqlite(engine) = &f.store.engine else { unreachable!() };
    let writer = engine.writer().expect("writable");
    writer.lock().await.execute_batch("UPDATE meta SET value = '99' WHERE key = 'schema_version'").expect("bump");
    drop(writer);
    let StoreLocation::Sqlite(path) = f.location.clone() else { unreachable!() };
    drop(f.store);
    let error = Store::open_sqlite(&path).await.err().expect("refused").to_string();
    assert!(error.contains("understands versions up to"), "{error}");
}

/// One schema for both engines: the same tables with the same columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_have_the_same_columns_on_both_engines() {
    let sqlite = Fixture::sqlite().await;
    let postgres = Fixture::postgres().await;
    let Engine::Sqlite(engine) = &sqlite.store.engine else { unreachable!() };
    let connection = engine.reader().await;
    let mut statement = connection
        .prepare(
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
             WHERE m.type = 'table' ORDER BY 1, 2",
        )
        .unwrap();
    let on_sqlite: BTreeSet<(String, String)> =
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(|row| row.unwrap()).collect();
    drop(statement);
    drop(connection);
    let Engine::Postgres(engine) = &postgres.store.engine else { unreachable!() };
    let connection = engine.get().await.unwrap();
    let rows = connection
        .client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema()",
            &[],
        )
        .await
        .unwrap();
    let on_postgres: BTreeSet<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert!(on_sqlite.len() > 20, "the schema was read: {on_sqlite:?}");
    assert_eq!(on_sqlite, on_postgres, "the same tables and columns");
}
