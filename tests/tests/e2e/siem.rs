//! The audit log streamed as it grows: to a real rsyslog over TLS (RFC
//! 5424 in RFC 5425 framing) and to an HTTP Event Collector (the test's
//! receiver), in OCSF, checked field by field against `hourglassd audit
//! export`; the cursor in the store carries the stream over a restart with
//! nothing lost and nothing sent twice.

use std::path::Path;
use std::time::Duration;

use hourglass_e2e::receiver::Receiver;
use hourglass_e2e::rsyslog::Rsyslog;
use hourglass_e2e::{DevBroker, Run, bin};
use serde_json::Value;

const HEC_TOKEN: &str = "hec-e2e-0123456789";
const LIMIT: Duration = Duration::from_secs(30);

/// The demo policy, streaming to `rsyslog` and the HEC at `receiver`.
fn policy(dir: &Path, rsyslog: &Rsyslog, receiver: &Receiver) {
    hourglass_e2e::copy_demo_policy(dir, |toml| toml);
    std::fs::write(dir.join("hec-token"), HEC_TOKEN).expect("the token");
    let toml = std::fs::read_to_string(dir.join("hourglass.toml")).expect("hourglass.toml");
    let siem = format!(
        r#"
[broker.siem.soc]
kind = "syslog"
address = "{address}"
ca_file = "{ca}"

[broker.siem.splunk]
kind = "hec"
url = "{url}/services/collector/event"
token_file = "hec-token"
"#,
        address = rsyslog.address,
        ca = rsyslog.ca_file.display(),
        url = receiver.url
    );
    std::fs::write(dir.join("hourglass.toml"), toml + &siem).expect("hourglass.toml");
}

/// `hourglassd audit export --format ocsf`: the whole log, one event a line.
fn exported(data: &Path) -> Vec<Value> {
    let run = Run::from(
        std::process::Command::new(bin("hourglassd"))
            .args(["audit", "export", "--data-dir", data.to_str().expect("a path"), "--format", "ocsf"])
            .output()
            .expect("runs"),
    );
    assert!(run.ok, "export: {}", run.stderr);
    run.stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

/// The record number in a message's structured data.
fn seq_of(structured_data: &str) -> u64 {
    let start = structured_data.find("seq=\"").expect("seq in the structured data") + 5;
    let end = structured_data[start..].find('"').expect("closed") + start;
    structured_data[start..end].parse().expect("a number")
}

#[test]
fn siem_stream_reaches_rsyslog_over_tls_and_a_hec_field_by_field_and_resumes_after_a_restart() {
    let rsyslog = Rsyslog::start();
    let receiver = Receiver::start();
    let config = tempfile::tempdir().expect("a policy directory");
    policy(config.path(), &rsyslog, &receiver);
    let data = tempfile::tempdir().expect("a data directory");
    let mut broker = DevBroker::start_at(data.path(), config.path(), &[]);

    broker.json("alice", &["request", "orders-api", "--role", "read", "--for", "10m", "--reason", "reports"]);
    let issued = rsyslog.wait_for(LIMIT, |messages| messages.iter().find(|m| m.msgid == "grant.issued").cloned());
    let event: Value = serde_json::from_str(&issued.text).expect("the message is JSON");
    assert_eq!((event["class_uid"].as_u64(), event["activity_name"].as_str()), (Some(3005), Some("Assign Privileges")));
    assert_eq!(event["user"]["name"], "alice@acme.example", "{event}");
    assert_eq!(event["resource"]["name"], "orders-api", "{event}");
    assert_eq!(event["privileges"][0], "read", "{event}");
    assert!(issued.structured_data.starts_with("[hourglass@32473 seq=\""), "{}", issued.structured_data);

    // Every record, in order, each as `audit export` writes it.
    let before_restart = rsyslog.wait_for(LIMIT, |messages| {
        let all = exported(data.path());
        (messages.len() >= all.len()).then(|| (messages.to_vec(), all))
    });
    let (messages, all) = before_restart;
    for (message, event) in messages.iter().zip(&all) {
        let streamed: Value = serde_json::from_str(&message.text).expect("JSON");
        assert_eq!(&streamed, event, "the stream and the export agree");
        assert_eq!(message.msgid, event["unmapped"]["action"].as_str().expect("an action"));
        assert_eq!(seq_of(&message.structured_data).to_string(), event["metadata"]["uid"].as_str().expect("uid"));
    }
    // The HEC got the same events, with the token.
    let hec = receiver.wait_for("/services/collector/event", 1, LIMIT);
    assert_eq!(hec[0].header("authorization"), Some(format!("Splunk {HEC_TOKEN}").as_str()));
    let first: Value = serde_json::from_str(hec[0].body.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["sourcetype"], "hourglass:ocsf");
    assert_eq!(first["event"], all[0], "{first}");

    // Killed while idle (its cursor stored), restarted, more happens.
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();
    broker.json("alice", &["request", "staging-api", "--role", "deploy", "--for", "10m", "--reason", "after"]);
    let after = rsyslog.wait_for(LIMIT, |messages| {
        let all = exported(data.path());
        (messages.len() >= all.len() && messages.iter().filter(|m| m.msgid == "grant.issued").count() == 2)
            .then(|| messages.to_vec())
    });
    let seqs: Vec<u64> = after.iter().map(|m| seq_of(&m.structured_data)).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every record once, in order, across the restart");
    let hec_seqs: Vec<String> = receiver
        .accepted("/services/collector/event")
        .iter()
        .flat_map(|r| r.body.lines().map(str::to_owned).collect::<Vec<_>>())
        .map(|line| {
            serde_json::from_str::<Value>(&line).expect("JSON")["event"]["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let hec_expected: Vec<String> = (1..=hec_seqs.len()).map(|n| n.to_string()).collect();
    assert_eq!(hec_seqs, hec_expected, "the HEC too");
}
