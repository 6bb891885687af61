//! The event stream: who hears what, when.

use super::*;

#[tokio::test]
async fn events_reach_requester_and_every_approver() {
    let h = Harness::new().await;
    let mut bob = h.subscribe("bob").await;
    let mut erin = h.subscribe("erin").await;
    let mut alice = h.subscribe("alice").await;
    let mut dave = h.subscribe("dave").await;
    for stream in [&mut bob, &mut erin, &mut alice, &mut dave] {
        let hello = stream.expect("hello", "every stream starts with hello").await;
        assert_eq!(at(&hello["at"]), h.now(), "hello carries the broker's clock");
    }

    let id = request_id(&h.file("alice", write_orders("30m")).await);
    for stream in [&mut bob, &mut erin] {
        let filed = stream.expect("request.filed", "approvers hear of a request they may decide").await;
        assert_eq!(filed["request"]["id"], id.as_str(), "about alice's request");
    }
    alice.expect("request.filed", "the requester hears of her own request").await;

    let grant_id = grant_id(&h.decide_ok("bob", &id, "approve").await);
    let approved = bob.expect("request.approved", "the approver hears of the approval").await;
    assert_eq!(approved["request"]["id"], id.as_str(), "bob's event is about alice's request");
    let approved = erin.expect("request.approved", "other approvers are told, so it leaves their list").await;
    assert_eq!(approved["request"]["decisions"][0]["approver"], "bob@acme.example", "erin learns bob decided");
    alice.expect("request.approved", "the requester hears of the approval").await;
    let issued = alice.expect("grant.issued", "the requester hears her grant is ready").await;
    assert_eq!(issued["grant"]["id"], grant_id.as_str(), "about her new grant");

    // dave may not decide orders-api/write: the next event he sees must be
    // about his own request, proving nothing about alice's reached him.
    let own = request_id(&h.file("dave", read_orders("10m")).await);
    let (kind, data) = dave.next().await;
    assert_eq!(
        (kind.as_str(), data["request"]["id"].as_str()),
        ("request.approved", Some(own.as_str())),
        "dave hears only of his own request: {data}"
    );
}

#[tokio::test]
async fn events_a_stream_reopened_with_last_event_id_gets_what_it_missed_once() {
    let h = Harness::new().await;
    let mut bob = h.subscribe("bob").await;
    bob.expect("hello", "first frame").await;
    let first = request_id(&h.file("alice", write_orders("30m")).await);
    bob.expect("request.filed", "bob may decide alice's request").await;
    let seen = bob.last_id.clone().expect("events carry their number as the SSE id");
    drop(bob);

    // While bob's stream is down (his laptop asleep, his replica gone):
    let second = request_id(&h.file("dave", write_orders("30m")).await);
    let (status, _) = h.post("alice", &format!("/v1/requests/{first}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK);

    let mut bob = h.subscribe_after("bob", Some(&seen)).await;
    bob.expect("hello", "first frame").await;
    let missed = bob.expect("request.filed", "what he missed comes first, in order").await;
    assert_eq!(missed["request"]["id"], second.as_str());
    let after_second = bob.last_id.clone().expect("an id");
    let cancelled = bob.expect("request.cancelled", "then the cancellation").await;
    assert_eq!(cancelled["request"]["id"], first.as_str());
    assert!(
        after_second.parse::<u64>().unwrap() > seen.parse::<u64>().unwrap(),
        "ids increase: {seen} then {after_second}"
    );
    // Then the live stream, with nothing sent twice.
    let third = request_id(&h.file("erin", write_orders("10m")).await);
    let (kind, data) = bob.next().await;
    assert_eq!(
        (kind.as_str(), data["request"]["id"].as_str()),
        ("request.filed", Some(third.as_str())),
        "the next event is the new one: nothing of what he missed is sent twice"
    );

    // A client further behind than what the broker keeps is told to resync.
    h.broker.store().prune(h.now().plus_millis(3_600_000), StdDuration::from_secs(3600)).await.expect("pruned");
    let mut late = h.subscribe_after("bob", Some(&seen)).await;
    late.expect("hello", "first frame").await;
    late.expect("resync", "the events after its id are gone: reload the lists").await;
}
