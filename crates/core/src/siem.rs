//! The audit log in a SIEM's own schema (`hourglassd audit export
//! --format`). OCSF is the one to pick: a vendor-neutral schema with a
//! class for exactly what a grant is (IAM "User Access Management": assign
//! and revoke privileges), ingested as it is by AWS Security Lake, Splunk,
//! Google SecOps and others. ECS is offered beside it for Elastic, which
//! reads its own schema best. Both keep the record's number and hashes, so
//! a record in the SIEM can still be checked against the chain.

use serde_json::{Value, json};

use crate::audit::{AuditAction, AuditRecord, AuditResult};

/// The OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// OCSF "User Access Management" (IAM): privileges assigned or revoked.
const USER_ACCESS_MANAGEMENT: u32 = 3005;
/// OCSF "API Activity" (Application Activity): everything else the broker did.
const API_ACTIVITY: u32 = 6003;

/// The OCSF class and activity of an action.
fn ocsf_class(action: AuditAction) -> (u32, u32, &'static str) {
    use AuditAction::*;
    match action {
        GrantIssued | GrantRenewed => (USER_ACCESS_MANAGEMENT, 1, "Assign Privileges"),
        GrantRevoked | GrantExpired => (USER_ACCESS_MANAGEMENT, 2, "Revoke Privileges"),
        RequestFiled | RequestRefused => (API_ACTIVITY, 1, "Create"),
        CredentialFetched | GrantVerified => (API_ACTIVITY, 2, "Read"),
        ApprovalRecorded
        | DecisionRefused
        | RequestApproved
        | RequestDenied
        | RequestCancelled
        | RequestExpired
        | GrantIssueFailed
        | RenewalRefused
        | RevokeRefused
        | RevocationAttempt
        | PolicyLoaded
        | PolicyRefused
        | NotificationAbandoned
        | GrantReviewed => (API_ACTIVITY, 3, "Update"),
        SessionEnded => (API_ACTIVITY, 4, "Delete"),
        BrokerStarted => (API_ACTIVITY, 99, "Other"),
    }
}

/// One audit record as an OCSF event.
pub fn ocsf(record: &AuditRecord, product_version: &str) -> Value {
    let event = &record.event;
    let (class_uid, activity_id, activity) = ocsf_class(event.action);
    let category_uid = class_uid / 1000;
    let (status_id, status) = match event.result {
        AuditResult::Ok => (1, "Success"),
        AuditResult::Refused | AuditResult::Failed => (2, "Failure"),
    };
    let mut out = json!({
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "time": event.at.unix_millis(),
        "severity_id": if status_id == 1 { 1 } else { 3 },
        "status_id": status_id,
        "status": status,
        "message": event.action.as_str(),
        "actor": { "user": { "name": event.actor } },
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.seq.to_string(),
            "log_name": "hourglass-audit",
            "product": { "name": "Hourglass", "vendor_name": "Hourglass", "version": product_version },
        },
        "unmapped": {
            "action": event.action.as_str(),
            "target": event.target,
            "details": event.details,
            "prev_hash": record.prev_hash,
            "hash": record.hash,
        },
    });
    if let Some(reason) = &event.reason {
        out["status_detail"] = json!(reason);
    }
    let resource = event.details.get("resource").and_then(Value::as_str);
    let role = event.details.get("role").and_then(Value::as_str);
    if class_uid == USER_ACCESS_MANAGEMENT {
        out["user"] = json!({ "name": event.subject.as_deref().unwrap_or(&event.actor) });
        out["privileges"] = json!([role.unwrap_or_default()]);
        out["resource"] = json!({ "name": resource.unwrap_or_default(), "uid": event.target });
    } else {
        out["api"] = json!({ "operation": event.action.as_str() });
        if let Some(subject) = &event.subject {
            out["resources"] = json!([{ "uid": event.target, "name": resource, "owner": { "name": subject } }]);
        }
    }
    out
}

/// One audit record as an Elastic Common Schema document.
pub fn ecs(record: &AuditRecord) -> Value {
    let event = &record.event;
    use AuditAction::*;
    let kind = match event.action {
        GrantIssued | GrantRenewed => "allowed",
        GrantRevoked | GrantExpired | SessionEnded => "end",
        RequestFiled => "creation",
        CredentialFetched | GrantVerified => "access",
        BrokerStarted => "start",
        _ => "change",
    };
    let types: Vec<&str> = match event.result {
        AuditResult::Refused => vec![kind, "denied"],
        _ => vec![kind],
    };
    let outcome = match event.result {
        AuditResult::Ok => "success",
        AuditResult::Refused | AuditResult::Failed => "failure",
    };
    let category = match event.action {
        PolicyLoaded | PolicyRefused => "configuration",
        BrokerStarted => "process",
        _ => "iam",
    };
    let mut related = vec![event.actor.clone()];
    related.extend(event.subject.iter().filter(|subject| **subject != event.actor).cloned());
    json!({
        "@timestamp": event.at.to_string(),
        "ecs": { "version": "8.11.0" },
        "message": event.reason.as_deref().unwrap_or(event.action.as_str()),
        "event": {
            "kind": "event",
            "category": [category],
            "type": types,
            "action": event.action.as_str(),
            "outcome": outcome,
            "sequence": event.seq,
            "reason": event.reason,
            "provider": "hourglass",
            "dataset": "hourglass.audit",
        },
        "user": {
            "name": event.actor,
            "target": { "name": event.subject },
        },
        "related": { "user": related },
        "hourglass": {
            "target": event.target,
            "details": event.details,
            "prev_hash": record.prev_hash,
            "hash": record.hash,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use crate::audit::AuditEvent;

    fn record(action: AuditAction, result: AuditResult) -> AuditRecord {
        let mut event = AuditEvent::new(
            Timestamp::from_unix_millis(1_795_000_000_000),
            "bob@acme.example",
            action,
            "grt-1",
            result,
        )
        .subject("alice@acme.example")
        .detail("resource", "orders-db")
        .detail("role", "read");
        event.seq = 42;
        AuditRecord { event, prev_hash: "aa".into(), hash: "bb".into() }
    }

    #[test]
    fn a_grant_issued_is_an_ocsf_privilege_assignment_to_its_owner() {
        let out = ocsf(&record(AuditAction::GrantIssued, AuditResult::Ok), "0.1.0");
        assert_eq!(
            (out["class_uid"].as_u64(), out["activity_id"].as_u64(), out["type_uid"].as_u64()),
            (Some(3005), Some(1), Some(300_501))
        );
        assert_eq!(out["category_uid"], 3);
        assert_eq!(out["user"]["name"], "alice@acme.example", "the grant's owner");
        assert_eq!(out["actor"]["user"]["name"], "bob@acme.example", "who acted");
        assert_eq!(out["privileges"], json!(["read"]));
        assert_eq!(out["resource"]["name"], "orders-db");
        assert_eq!(out["metadata"]["uid"], "42");
        assert_eq!(out["unmapped"]["hash"], "bb", "the chain's hash travels along");
        let revoked = ocsf(&record(AuditAction::GrantExpired, AuditResult::Ok), "0.1.0");
        assert_eq!(revoked["type_uid"], 300_502, "an expiry revokes privileges");
    }

    #[test]
    fn a_refusal_is_a_failure_in_both_schemas() {
        let refused = record(AuditAction::CredentialFetched, AuditResult::Refused);
        let out = ocsf(&refused, "0.1.0");
        assert_eq!(
            (out["class_uid"].as_u64(), out["status_id"].as_u64(), out["severity_id"].as_u64()),
            (Some(6003), Some(2), Some(3))
        );
        let doc = ecs(&refused);
        assert_eq!(doc["event"]["outcome"], "failure");
        assert_eq!(doc["event"]["type"], json!(["access", "denied"]));
        assert_eq!(doc["event"]["sequence"], 42);
        assert_eq!(doc["related"]["user"], json!(["bob@acme.example", "alice@acme.example"]));
        assert_eq!(doc["@timestamp"], "2026-11-18T11:06:40.000Z");
    }
}
