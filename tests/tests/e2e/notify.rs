//! Notifications through real receivers: a local HTTP receiver plays
//! Slack's Web API, a Teams workflow and a team's webhook (signatures
//! checked with an HMAC implementation of its own); a real SMTP server
//! (aiosmtpd, STARTTLS required) receives email. Messages survive a
//! receiver that fails and a broker killed before it could send.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use hourglass_e2e::receiver::{Received, Receiver};
use hourglass_e2e::smtp::SmtpServer;
use hourglass_e2e::{DevBroker, policy_dir};
use sha2::Sha256;

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action == Action::"request", resource);
permit (principal in Group::"sre", action == Action::"approve", resource);
"#;

const WEBHOOK_SECRET: &str = "whsec_e2e_0123456789abcdef";
const SLACK_TOKEN: &str = "xoxb-e2e-secret-bot-token";

const LIMIT: Duration = Duration::from_secs(30);

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("written");
}

/// A policy whose `db/write` needs an SRE, announced on `notify`, the
/// requester told on `notify_requester`; `channels` is `[broker.channels]`.
fn policy(channels: &str, notify: &str, notify_requester: &str) -> tempfile::TempDir {
    let toml = format!(
        r#"
[defaults]
min_duration = "5s"
max_duration = "1h"
reason_required = false

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.db]
provider = "token"
workflow = "review"
notify = {notify}
notify_requester = {notify_requester}

[resources.db.roles.write]

{channels}
"#
    );
    policy_dir(&toml, CEDAR)
}

/// The secrets the HTTP channels read, beside the policy.
fn write_http_secrets(dir: &Path, receiver: &Receiver) {
    write(dir, "slack-token", SLACK_TOKEN);
    write(dir, "teams-url", &format!("{}/teams", receiver.url));
    write(dir, "webhook-secret", WEBHOOK_SECRET);
}

fn http_channels(receiver: &Receiver) -> String {
    format!(
        r#"
[broker.channels.sre-slack]
kind = "slack"
channel = "C0SRE"
token_file = "slack-token"
api_url = "{url}/api"

[broker.channels.sre-teams]
kind = "teams"
webhook_url_file = "teams-url"

[broker.channels.hook]
kind = "webhook"
url = "{url}/hook"
secret_file = "webhook-secret"
"#,
        url = receiver.url
    )
}

/// Checks `Hourglass-Signature: t=…,v1=…` over `t.body` with the secret.
fn signed(received: &Received) -> bool {
    let Some(signature) = received.header("hourglass-signature") else { return false };
    let mut parts = signature.split(',');
    let (Some(t), Some(v1)) = (parts.next().and_then(|p| p.strip_prefix("t=")), parts.next()) else { return false };
    let Some(hex) = v1.strip_prefix("v1=") else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{}", received.body).as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == hex
}

fn text(received: &Received) -> String {
    received.body.clone()
}

#[test]
fn notifications_announce_a_request_in_slack_teams_and_a_signed_webhook_and_follow_its_decision() {
    let receiver = Receiver::start();
    let policy = policy(&http_channels(&receiver), r#"["sre-slack", "sre-teams", "hook"]"#, r#"["hook"]"#);
    write_http_secrets(policy.path(), &receiver);
    let broker = DevBroker::start_with_policy(policy.path(), &[]);

    let filed = broker
        .json("alice", &["request", "db", "--role", "write", "--for", "10m", "--reason", "<!channel> fix *orders*"]);
    let request_id = filed["id"].as_str().expect("an id").to_owned();

    // Slack: posted by the bot into its channel, the requester's text inert.
    let posted = receiver.wait_for("/api/chat.postMessage", 1, LIMIT);
    assert_eq!(posted[0].header("authorization"), Some(format!("Bearer {SLACK_TOKEN}").as_str()));
    let message = posted[0].json();
    assert_eq!(message["channel"], "C0SRE");
    assert!(text(&posted[0]).contains("alice@acme.example asks for db/write for 10m"), "{message}");
    assert!(text(&posted[0]).contains("&lt;!channel&gt;") && !text(&posted[0]).contains("<!channel>"), "{message}");
    assert!(text(&posted[0]).contains(&format!("hourglass approve {request_id}")), "how to decide: {message}");
    // Teams: an Adaptive Card.
    let cards = receiver.wait_for("/teams", 1, LIMIT);
    let card = &cards[0].json()["attachments"][0];
    assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    // The webhook: signed, with its idempotency key, the request whole.
    let hooks = receiver.wait_for("/hook", 1, LIMIT);
    assert!(signed(&hooks[0]), "the signature verifies: {:?}", hooks[0].headers);
    let hook = hooks[0].json();
    assert_eq!(hooks[0].header("idempotency-key"), hook["id"].as_str());
    assert_eq!((hook["type"].as_str(), hook["audience"].as_str()), (Some("request.filed"), Some("approvers")));
    assert_eq!(hook["request"]["id"], request_id.as_str());

    // The receiver is down for three attempts when bob decides: the
    // decision still arrives, once per message id.
    receiver.fail_next(3);
    broker.json("bob", &["approve", &request_id, "--comment", "go ahead"]);
    let updated = receiver.wait_for("/api/chat.update", 1, LIMIT);
    let update = updated[0].json();
    assert_eq!(update["ts"], "1800000000.000001", "the ts Slack gave the announcement");
    assert_eq!(update["channel"], "C0SRE", "the announcement itself is updated");
    assert!(text(&updated[0]).contains("Approved by bob@acme.example"), "{update}");
    let cards = receiver.wait_for("/teams", 2, LIMIT);
    assert!(text(&cards[1]).contains("Approved by bob@acme.example"), "a follow-up card: {}", cards[1].body);
    let hooks = receiver.wait_for("/hook", 3, LIMIT);
    let kinds: Vec<(String, String)> = hooks[1..]
        .iter()
        .map(|h| {
            (
                h.json()["type"].as_str().unwrap_or_default().into(),
                h.json()["audience"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    assert!(kinds.contains(&("request.approved".into(), "approvers".into())), "{kinds:?}");
    assert!(kinds.contains(&("request.approved".into(), "requester".into())), "the requester is told: {kinds:?}");
    assert!(hooks.iter().all(signed));
    let refused = receiver.received().into_iter().filter(|r| r.status == 503).count();
    assert_eq!(refused, 3, "three attempts were refused, then tried again");
    let mut keys: Vec<String> =
        receiver.accepted("/hook").iter().filter_map(|h| h.header("idempotency-key").map(str::to_owned)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "each message accepted once");
    // Operators see it: attempts by channel kind and outcome (counted once
    // the receiver's answer is back, a moment after it was received).
    let totals = || {
        let metrics = broker.get("/metrics");
        let counted = |outcome: &str| -> u64 {
            ["slack", "teams", "webhook"]
                .iter()
                .filter_map(|kind| {
                    let wanted = format!("hourglass_notifications_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} ");
                    metrics
                        .lines()
                        .find_map(|line| line.strip_prefix(&wanted))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .sum()
        };
        (counted("sent"), counted("retry"))
    };
    let counted = hourglass_e2e::eventually(LIMIT, || Some(totals()).filter(|totals| *totals == (7, 3)));
    assert_eq!(counted, Some((7, 3)), "seven messages sent, three attempts retried: {:?}", totals());

    // dave turns the webhook off for himself: approvers still hear of his
    // request's decision, he is not told on it.
    let channels = |method: &str, body: Option<&str>| {
        let (status, answer) = broker.http(method, "/v1/me/notifications", Some(broker.token("dave")), body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        serde_json::from_slice::<serde_json::Value>(&answer).expect("JSON")
    };
    assert_eq!(channels("GET", None), serde_json::json!([{ "name": "hook", "kind": "webhook", "enabled": true }]));
    let muted = channels("PUT", Some(r#"{"muted": ["hook"]}"#));
    assert_eq!(muted[0]["enabled"], false, "{muted}");
    let second = broker.json("dave", &["request", "db", "--role", "write", "--for", "10m", "--reason", "again"]);
    let second = second["id"].as_str().expect("an id").to_owned();
    broker.json("bob", &["deny", &second, "--comment", "not now"]);
    let about = |hook: &Received, audience: &str| {
        let body = hook.json();
        body["request"]["id"] == second.as_str() && body["type"] == "request.denied" && body["audience"] == audience
    };
    hourglass_e2e::eventually(LIMIT, || receiver.accepted("/hook").iter().any(|h| about(h, "approvers")).then_some(()))
        .expect("the approvers hear of the decision");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!receiver.accepted("/hook").iter().any(|h| about(h, "requester")), "dave turned it off");
}

#[test]
fn notifications_written_before_a_crash_are_sent_after_the_restart() {
    let receiver = Receiver::start();
    let policy = policy(&http_channels(&receiver), r#"["hook"]"#, "[]");
    write_http_secrets(policy.path(), &receiver);
    let data = tempfile::tempdir().expect("data dir");
    let mut broker = DevBroker::start_at(data.path(), policy.path(), &[]);

    // The receiver is down; the broker dies (SIGKILL) with the message unsent.
    receiver.fail_next(1_000);
    let filed = broker.json("alice", &["request", "db", "--role", "write", "--for", "10m", "--reason", "restart"]);
    let request_id = filed["id"].as_str().expect("an id").to_owned();
    hourglass_e2e::eventually(LIMIT, || (!receiver.received().is_empty()).then_some(())).expect("an attempt");
    broker.kill();
    receiver.fail_next(0);
    broker.restart();
    let hooks = receiver.wait_for("/hook", 1, Duration::from_secs(60));
    assert_eq!(hooks[0].json()["request"]["id"], request_id.as_str(), "sent by the restarted broker");
    assert!(signed(&hooks[0]));
}

#[test]
fn email_notifications_reach_approvers_and_the_requester_over_starttls_in_one_thread() {
    let smtp = SmtpServer::start();
    let toml_channels = format!(
        r#"
[broker.channels.mail]
kind = "email"
smtp = "{address}"
ca_file = "{ca}"
from = "Hourglass <hourglass@acme.example>"
to = ["sre@acme.example"]
"#,
        address = smtp.address,
        ca = smtp.ca_file.display()
    );
    let policy = policy(&toml_channels, r#"["mail"]"#, r#"["mail"]"#);
    let broker = DevBroker::start_with_policy(policy.path(), &[]);

    let filed = broker.json("alice", &["request", "db", "--role", "write", "--for", "10m", "--reason", "rotate keys"]);
    let request_id = filed["id"].as_str().expect("an id").to_owned();
    let mails = smtp.wait_for(1, LIMIT);
    let announced = &mails[0];
    assert_eq!(announced.header("to"), Some("sre@acme.example"));
    assert_eq!(announced.header("subject"), Some("[Hourglass] alice@acme.example asks for db/write for 10m"));
    assert!(announced.body.contains("rotate keys") && announced.body.contains(&request_id), "{}", announced.body);
    let first_id = announced.header("message-id").expect("a Message-ID").to_owned();

    broker.json("bob", &["deny", &request_id, "--comment", "not today"]);
    let mails = smtp.wait_for(3, LIMIT);
    let answer = mails[1..].iter().find(|m| m.header("to") == Some("sre@acme.example")).expect("the approvers' update");
    assert_eq!(answer.header("in-reply-to"), Some(first_id.as_str()), "threaded under the announcement");
    assert!(answer.header("subject").is_some_and(|s| s.starts_with("Re: [Hourglass]")));
    assert!(answer.body.contains("Denied by bob@acme.example") && answer.body.contains("not today"), "{}", answer.body);
    let told = mails[1..].iter().find(|m| m.header("to") == Some("alice@acme.example")).expect("the requester's email");
    assert_eq!(told.header("subject"), Some("[Hourglass] Your request for db/write"));
    assert!(told.body.contains("Denied by bob@acme.example"), "{}", told.body);
    assert_eq!(mails.len(), 3, "one announcement, one update, one word to the requester");
}
