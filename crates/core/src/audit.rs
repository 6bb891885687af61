//! The tamper-evident audit log: every step of every request and grant is an
//! event, and each event's hash covers the previous one:
//! `hash = SHA-256(prev_hash || canonical event)`.
//!
//! The canonical event is the exact JSON text stored with the hash. Verifying
//! hashes those stored bytes, so the chain does not depend on how a later
//! version of serde happens to order or escape things.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Timestamp;

/// What happened. Dotted names keep SIEM queries simple (`action:grant.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum AuditAction {
    #[serde(rename = "broker.started")]
    BrokerStarted,
    #[serde(rename = "policy.loaded")]
    PolicyLoaded,
    #[serde(rename = "policy.refused")]
    PolicyRefused,
    #[serde(rename = "request.filed")]
    RequestFiled,
    #[serde(rename = "request.refused")]
    RequestRefused,
    #[serde(rename = "request.approval_recorded")]
    ApprovalRecorded,
    #[serde(rename = "request.decision_refused")]
    DecisionRefused,
    #[serde(rename = "request.approved")]
    RequestApproved,
    #[serde(rename = "request.denied")]
    RequestDenied,
    #[serde(rename = "request.cancelled")]
    RequestCancelled,
    #[serde(rename = "request.expired")]
    RequestExpired,
    #[serde(rename = "grant.issued")]
    GrantIssued,
    #[serde(rename = "grant.issue_failed")]
    GrantIssueFailed,
    #[serde(rename = "grant.renewed")]
    GrantRenewed,
    #[serde(rename = "grant.renewal_refused")]
    RenewalRefused,
    #[serde(rename = "grant.revoked")]
    GrantRevoked,
    #[serde(rename = "grant.revoke_refused")]
    RevokeRefused,
    #[serde(rename = "grant.expired")]
    GrantExpired,
    #[serde(rename = "grant.revocation_attempt")]
    RevocationAttempt,
    #[serde(rename = "grant.credential_fetched")]
    CredentialFetched,
    /// The owner's client confirmed the credential works.
    #[serde(rename = "grant.verified")]
    GrantVerified,
    /// A session (or bearer token) ended by its holder: logged out.
    #[serde(rename = "session.ended")]
    SessionEnded,
    /// A break-glass grant reviewed after the fact (its verdict in details).
    #[serde(rename = "grant.reviewed")]
    GrantReviewed,
    /// A notification kept failing and is no longer tried (its channel
    /// gone, or a day of failures): approvers or a requester were not told.
    #[serde(rename = "notification.abandoned")]
    NotificationAbandoned,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::BrokerStarted => "broker.started",
            AuditAction::PolicyLoaded => "policy.loaded",
            AuditAction::PolicyRefused => "policy.refused",
            AuditAction::RequestFiled => "request.filed",
            AuditAction::RequestRefused => "request.refused",
            AuditAction::ApprovalRecorded => "request.approval_recorded",
            AuditAction::DecisionRefused => "request.decision_refused",
            AuditAction::RequestApproved => "request.approved",
            AuditAction::RequestDenied => "request.denied",
            AuditAction::RequestCancelled => "request.cancelled",
            AuditAction::RequestExpired => "request.expired",
            AuditAction::GrantIssued => "grant.issued",
            AuditAction::GrantIssueFailed => "grant.issue_failed",
            AuditAction::GrantRenewed => "grant.renewed",
            AuditAction::RenewalRefused => "grant.renewal_refused",
            AuditAction::GrantRevoked => "grant.revoked",
            AuditAction::RevokeRefused => "grant.revoke_refused",
            AuditAction::GrantExpired => "grant.expired",
            AuditAction::RevocationAttempt => "grant.revocation_attempt",
            AuditAction::CredentialFetched => "grant.credential_fetched",
            AuditAction::GrantVerified => "grant.verified",
            AuditAction::SessionEnded => "session.ended",
            AuditAction::NotificationAbandoned => "notification.abandoned",
            AuditAction::GrantReviewed => "grant.reviewed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Ok,
    /// Refused by policy or by the lifecycle rules.
    Refused,
    /// Attempted and failed (a provider error); retried where that applies.
    Failed,
}

/// One audit event, before it is chained. `seq` is assigned by the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct AuditEvent {
    pub seq: u64,
    pub at: Timestamp,
    /// The verified principal who acted, or `hourglass` for the broker itself.
    pub actor: String,
    pub action: AuditAction,
    /// What was acted on: a request or grant id, or `policy`.
    pub target: String,
    /// The principal whose access this is about (the requester or grant
    /// owner), so that a person's history is one query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub result: AuditResult,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[cfg_attr(feature = "ts", ts(type = "Record<string, unknown>"))]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// An event as stored and exported: the event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct AuditRecord {
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// How every canonical text starts, before the event's number: `seq` is
/// the struct's first field.
pub const CANONICAL_SEQ_PREFIX: &str = r#"{"seq":"#;

/// The previous hash of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

impl AuditEvent {
    pub fn new(at: Timestamp, actor: &str, action: AuditAction, target: &str, result: AuditResult) -> Self {
        AuditEvent {
            seq: 0,
            at,
            actor: actor.to_owned(),
            action,
            target: target.to_owned(),
            subject: None,
            reason: None,
            result,
            details: serde_json::Map::new(),
        }
    }

    pub fn subject(mut self, subject: &str) -> Self {
        self.subject = Some(subject.to_owned());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The canonical text after its number: the canonical text is
    /// [`CANONICAL_SEQ_PREFIX`], the number, then this, so that a store can
    /// number and hash an event where it takes the number (PostgreSQL's
    /// `hourglass_append` does).
    pub fn canonical_after_seq(&self) -> String {
        let canonical = self.canonical();
        let digits = canonical
            .get(CANONICAL_SEQ_PREFIX.len()..)
            .map_or(0, |rest| rest.bytes().take_while(u8::is_ascii_digit).count());
        canonical.get(CANONICAL_SEQ_PREFIX.len() + digits..).unwrap_or_default().to_owned()
    }

    /// The canonical text hashed into the chain.
    pub fn canonical(&self) -> String {
        // Serializing a struct of strings, numbers and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `SHA-256(prev_hash || canonical)`.
pub fn chain_hash(prev_hash: &[u8; 32], canonical: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    text
}

pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

/// One stored link of the chain, as read back for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub seq: u64,
    pub canonical: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at event {seq}: {problem}")]
pub struct BrokenLink {
    pub seq: u64,
    pub problem: String,
}

/// Walks the chain in order from the first event. Returns the number of
/// events and the head hash, or the first link that does not hold.
pub fn verify_chain(links: impl IntoIterator<Item = StoredLink>) -> Result<(u64, [u8; 32]), BrokenLink> {
    let mut verifier = ChainVerifier::default();
    for link in links {
        verifier.push(&link)?;
    }
    Ok(verifier.head())
}

/// Checks a chain link by link, in order from the first event, holding
/// only the last hash: a log of any length verifies in constant memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev: [u8; 32],
    expected_seq: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { prev: GENESIS_HASH, expected_seq: 1 }
    }
}

impl ChainVerifier {
    /// Checks the next link; the first that does not hold is the error.
    pub fn push(&mut self, link: &StoredLink) -> Result<(), BrokenLink> {
        let broken = |problem: String| BrokenLink { seq: link.seq, problem };
        let expected_seq = self.expected_seq;
        if link.seq != expected_seq {
            return Err(BrokenLink {
                seq: expected_seq,
                problem: format!("event {expected_seq} is missing (next stored event is {})", link.seq),
            });
        }
        if link.prev_hash != to_hex(&self.prev) {
            return Err(broken("its previous hash does not match the event before it".into()));
        }
        let event: AuditEvent = serde_json::from_str(&link.canonical)
            .map_err(|error| broken(format!("its stored event is not valid: {error}")))?;
        if event.seq != link.seq {
            return Err(broken(format!("its stored event claims sequence number {}", event.seq)));
        }
        let hash = chain_hash(&self.prev, &link.canonical);
        if link.hash != to_hex(&hash) {
            return Err(broken("its content does not match its hash (altered after it was written)".into()));
        }
        self.prev = hash;
        self.expected_seq += 1;
        Ok(())
    }

    /// The number of events checked and the head hash.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.expected_seq - 1, self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(count: u64) -> Vec<StoredLink> {
        let mut prev = GENESIS_HASH;
        (1..=count)
            .map(|seq| {
                let mut event = AuditEvent::new(
                    Timestamp::from_unix_millis(1_800_000_000_000 + seq as i64),
                    "alice@acme.example",
                    AuditAction::RequestFiled,
                    "req-0000000001",
                    AuditResult::Ok,
                )
                .reason("incident 42")
                .detail("role", "read");
                event.seq = seq;
                let canonical = event.canonical();
                let hash = chain_hash(&prev, &canonical);
                let link = StoredLink { seq, canonical, prev_hash: to_hex(&prev), hash: to_hex(&hash) };
                prev = hash;
                link
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let links = chain(5);
        let head = links[4].hash.clone();
        let (count, hash) = verify_chain(links).expect("intact");
        assert_eq!((count, to_hex(&hash)), (5, head));
        assert_eq!(verify_chain(Vec::new()), Ok((0, GENESIS_HASH)), "empty chain verifies");
    }

    #[test]
    fn audit_tampering_names_the_first_broken_link() {
        let mut altered = chain(5);
        altered[2].canonical = altered[2].canonical.replace("incident 42", "incident 43");
        assert_eq!(verify_chain(altered).map_err(|e| e.seq), Err(3), "altered content");

        let mut deleted = chain(5);
        deleted.remove(1);
        let error = verify_chain(deleted).expect_err("deleted");
        assert_eq!(error.seq, 2, "{error}");
        assert!(error.problem.contains("missing"), "{error}");

        let mut rehashed = chain(5);
        // An attacker who rewrites one event and its own hash still breaks the next link.
        rehashed[1].canonical = rehashed[1].canonical.replace("alice", "mallory");
        let prev = from_hex(&rehashed[1].prev_hash).expect("hex");
        rehashed[1].hash = to_hex(&chain_hash(&prev, &rehashed[1].canonical));
        assert_eq!(verify_chain(rehashed).map_err(|e| e.seq), Err(3), "rehash detected at the next link");
    }

    #[test]
    fn hex_round_trips() {
        let bytes = chain_hash(&GENESIS_HASH, "x");
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn canonical_text_is_its_number_between_the_prefix_and_the_tail() {
        let mut event = AuditEvent::new(
            Timestamp::from_unix_millis(0),
            "alice@acme.example",
            AuditAction::RequestFiled,
            "req-1",
            AuditResult::Ok,
        )
        .detail("role", "read");
        let tail = event.canonical_after_seq();
        for seq in [0, 7, 1_234_567_890] {
            event.seq = seq;
            assert_eq!(event.canonical(), format!("{CANONICAL_SEQ_PREFIX}{seq}{tail}"));
            assert_eq!(event.canonical_after_seq(), tail, "the tail does not depend on the number");
        }
    }

    #[test]
    fn canonical_events_omit_empty_fields() {
        let event = AuditEvent::new(
            Timestamp::from_unix_millis(0),
            "hourglass",
            AuditAction::BrokerStarted,
            "broker",
            AuditResult::Ok,
        );
        assert_eq!(
            event.canonical(),
            r#"{"seq":0,"at":"1970-01-01T00:00:00.000Z","actor":"hourglass","action":"broker.started","target":"broker","result":"ok"}"#
        );
    }
}
