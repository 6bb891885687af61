//! Notifications where people are: a request announced to its approvers
//! on the channels policy names (Slack, Microsoft Teams, email, a signed
//! webhook), that announcement followed to the decision (updated in place
//! where the channel can, answered where it cannot), and the requester told
//! of the decision, of the grant's end drawing near and of its end.
//!
//! What to send is decided here, from the change being committed
//! ([`for_request`], [`for_grant`]: pure), and written into the outbox in
//! the same commit (`WriteTx::enqueue`); `outbox.rs` sends it later, from
//! any replica, at least once. Nothing is sent from memory, so a restart
//! or a failover loses nothing.

pub mod channels;
mod email;
mod http;
pub mod outbox;
mod render;
pub mod settings;

use hourglass_core::api::EventKind;
use hourglass_core::countdown::Warnings;
use hourglass_core::{AccessRequest, Duration, Grant, RequestState, Timestamp};
use hourglass_policy::Role;
use serde::{Deserialize, Serialize};

use crate::store::NewNotice;

/// Whom a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Whoever may decide the request: a team's channel, a list's address.
    Approvers,
    /// The person who asked (their own address; a webhook routes it).
    Requester,
}

/// What happened, as receivers of the webhook see it in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    #[serde(rename = "request.filed")]
    Filed,
    /// An approval was counted; more are needed.
    #[serde(rename = "request.updated")]
    Progress,
    #[serde(rename = "request.approved")]
    Approved,
    #[serde(rename = "request.denied")]
    Denied,
    #[serde(rename = "request.cancelled")]
    Cancelled,
    #[serde(rename = "request.expired")]
    Expired,
    /// The grant ends soon (the first warning before its deadline).
    #[serde(rename = "grant.expiring")]
    Expiring,
    #[serde(rename = "grant.revoked")]
    Revoked,
    #[serde(rename = "grant.expired")]
    Ended,
    /// A break-glass grant still waits for its review.
    #[serde(rename = "grant.review_reminder")]
    ReviewReminder,
    /// A break-glass grant was reviewed.
    #[serde(rename = "grant.reviewed")]
    Reviewed,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Filed => "request.filed",
            NoticeKind::Progress => "request.updated",
            NoticeKind::Approved => "request.approved",
            NoticeKind::Denied => "request.denied",
            NoticeKind::Cancelled => "request.cancelled",
            NoticeKind::Expired => "request.expired",
            NoticeKind::Expiring => "grant.expiring",
            NoticeKind::Revoked => "grant.revoked",
            NoticeKind::Ended => "grant.expired",
            NoticeKind::ReviewReminder => "grant.review_reminder",
            NoticeKind::Reviewed => "grant.reviewed",
        }
    }

    /// Whether it starts a topic's thread (later messages update or answer it).
    pub fn starts_thread(self) -> bool {
        self == NoticeKind::Filed
    }
}

/// A notification as the outbox keeps it: rendered for its channel when sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(rename = "type")]
    pub kind: NoticeKind,
    pub audience: Audience,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AccessRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// The notifications a request's change sends, by the policy of its role.
pub fn for_request(role: &Role, request: &AccessRequest, kind: EventKind, now: Timestamp) -> Vec<NewNotice> {
    // Approved at once by policy: nobody was asked, nobody waits to hear.
    // A break-glass grant is announced, for its review.
    let asked = !request.auto_approved || request.break_glass;
    let (to_approvers, to_requester) = match kind {
        EventKind::RequestFiled if request.state == RequestState::Pending || request.break_glass => {
            (Some(NoticeKind::Filed), None)
        }
        EventKind::RequestUpdated => (Some(NoticeKind::Progress), None),
        EventKind::RequestApproved if asked => (Some(NoticeKind::Approved), Some(NoticeKind::Approved)),
        EventKind::RequestDenied => (Some(NoticeKind::Denied), Some(NoticeKind::Denied)),
        // The requester cancelled it (or their grant ended under it).
        EventKind::RequestCancelled if asked => (Some(NoticeKind::Cancelled), None),
        EventKind::RequestExpired => (Some(NoticeKind::Expired), Some(NoticeKind::Expired)),
        _ => (None, None),
    };
    let mut notices = Vec::new();
    let notice = |kind, audience| Notice { kind, audience, at: now, request: Some(request.clone()), grant: None };
    if let Some(kind) = to_approvers {
        let topic = topic(Audience::Approvers, request.id.as_str());
        notices.extend(outgoing(&role.notify, &topic, now, now, &notice(kind, Audience::Approvers)));
        // Break-glass access is reviewed after the fact: approvers are
        // reminded a day and three days on, unless it was reviewed by then.
        if kind == NoticeKind::Filed && request.break_glass {
            for later in REVIEW_REMINDERS {
                let reminder = notice(NoticeKind::ReviewReminder, Audience::Approvers);
                notices.extend(outgoing(&role.notify, &topic, now, now.plus(later), &reminder));
            }
        }
    }
    if let Some(kind) = to_requester {
        let topic = topic(Audience::Requester, request.id.as_str());
        notices.extend(outgoing(&role.notify_requester, &topic, now, now, &notice(kind, Audience::Requester)));
    }
    notices
}

/// When approvers are reminded of a break-glass grant not yet reviewed.
const REVIEW_REMINDERS: [Duration; 2] = [Duration::from_hours(24), Duration::from_hours(72)];

/// The notifications a review sends: the approvers' thread of the request
/// says who reviewed it and how.
pub fn for_review(role: &Role, request: &AccessRequest, grant: &Grant, now: Timestamp) -> Vec<NewNotice> {
    let notice = Notice {
        kind: NoticeKind::Reviewed,
        audience: Audience::Approvers,
        at: now,
        request: Some(request.clone()),
        grant: Some(grant.clone()),
    };
    outgoing(&role.notify, &topic(Audience::Approvers, request.id.as_str()), now, now, &notice)
}

/// The notifications a grant's change sends its owner: the reminder
/// before its deadline when it is issued or renewed (one that no longer
/// applies when it falls due is skipped then), and its end.
pub fn for_grant(role: &Role, grant: &Grant, kind: EventKind, now: Timestamp) -> Vec<NewNotice> {
    let topic = topic(Audience::Requester, grant.request_id.as_str());
    let notice =
        |kind| Notice { kind, audience: Audience::Requester, at: now, request: None, grant: Some(grant.clone()) };
    match kind {
        EventKind::GrantIssued | EventKind::GrantRenewed => {
            let Some(before) = Warnings::default().soon() else { return Vec::new() };
            let due = grant.expires_at.minus(before);
            if due <= now {
                return Vec::new();
            }
            outgoing(&role.notify_requester, &topic, now, due, &notice(NoticeKind::Expiring))
        }
        EventKind::GrantRevoked => outgoing(&role.notify_requester, &topic, now, now, &notice(NoticeKind::Revoked)),
        EventKind::GrantExpired => outgoing(&role.notify_requester, &topic, now, now, &notice(NoticeKind::Ended)),
        _ => Vec::new(),
    }
}

/// A thread per request and audience, on each channel.
fn topic(audience: Audience, request: &str) -> String {
    match audience {
        Audience::Approvers => format!("approvers:{request}"),
        Audience::Requester => format!("requester:{request}"),
    }
}

fn outgoing(channels: &[String], topic: &str, now: Timestamp, due: Timestamp, notice: &Notice) -> Vec<NewNotice> {
    if channels.is_empty() {
        return Vec::new();
    }
    // Serializing domain types of strings, numbers and maps cannot fail.
    let json = serde_json::to_string(notice).unwrap_or_default();
    channels
        .iter()
        .map(|channel| NewNotice {
            id: new_notice_id(),
            channel: channel.clone(),
            topic: topic.to_owned(),
            created_at: now,
            due_at: due,
            notice: json.clone(),
        })
        .collect()
}

/// 128 random bits: the idempotency key a receiver deduplicates by.
fn new_notice_id() -> String {
    format!("ntf_{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use hourglass_core::{GrantId, NewRequest, RequestId};

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn role(notify: &[&str], notify_requester: &[&str]) -> Role {
        let toml = format!(
            "[workflows.w]\napprovals = [{{ group = \"sre\", count = 1 }}]\n[resources.db]\nprovider = \"token\"\n\
             workflow = \"w\"\nnotify = {notify:?}\nnotify_requester = {notify_requester:?}\n[resources.db.roles.read]\n"
        );
        let cedar = "permit(principal, action == Action::\"request\", resource);";
        let policy = hourglass_policy::Policy::from_sources(vec![
            ("hourglass.toml".into(), toml),
            ("a.cedar".into(), cedar.into()),
        ])
        .unwrap();
        policy.role("db", "read").unwrap().clone()
    }

    fn request() -> AccessRequest {
        AccessRequest::file(
            RequestId::from_random(7),
            NewRequest {
                requester: "alice@acme.example".into(),
                resource: "db".into(),
                role: "read".into(),
                duration: Duration::from_mins(30),
                reason: "incident 42".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            Vec::new(),
            Duration::from_hours(1),
            NOW,
        )
    }

    fn kinds(notices: &[NewNotice]) -> Vec<(String, String, NoticeKind)> {
        notices
            .iter()
            .map(|n| {
                let notice: Notice = serde_json::from_str(&n.notice).unwrap();
                (n.channel.clone(), n.topic.clone(), notice.kind)
            })
            .collect()
    }

    #[test]
    fn a_filed_request_is_announced_to_approvers_and_its_decision_to_both() {
        let role = role(&["sre-slack", "audit-hook"], &["mail"]);
        let request = request();
        let filed = for_request(&role, &request, EventKind::RequestFiled, NOW);
        let approvers = format!("approvers:{}", request.id);
        assert_eq!(
            kinds(&filed),
            [
                ("sre-slack".into(), approvers.clone(), NoticeKind::Filed),
                ("audit-hook".into(), approvers.clone(), NoticeKind::Filed)
            ]
        );
        assert_ne!(filed[0].id, filed[1].id, "each message its own idempotency key");
        let denied = for_request(&role, &request, EventKind::RequestDenied, NOW);
        assert_eq!(kinds(&denied).len(), 3, "both approver channels updated, the requester told");
        assert_eq!(kinds(&denied)[2], ("mail".into(), format!("requester:{}", request.id), NoticeKind::Denied));
    }

    #[test]
    fn access_approved_at_once_by_policy_is_announced_to_nobody() {
        let role = role(&["sre-slack"], &["mail"]);
        let mut request = request();
        request.auto_approved = true;
        request.state = RequestState::Approved;
        assert!(for_request(&role, &request, EventKind::RequestFiled, NOW).is_empty());
        assert!(for_request(&role, &request, EventKind::RequestApproved, NOW).is_empty());
        request.break_glass = true;
        let filed = for_request(&role, &request, EventKind::RequestFiled, NOW);
        let sent: Vec<(NoticeKind, Timestamp)> =
            filed.iter().map(|n| (serde_json::from_str::<Notice>(&n.notice).unwrap().kind, n.due_at)).collect();
        assert_eq!(
            sent,
            [
                (NoticeKind::Filed, NOW),
                (NoticeKind::ReviewReminder, NOW.plus(Duration::from_hours(24))),
                (NoticeKind::ReviewReminder, NOW.plus(Duration::from_hours(72)))
            ],
            "break glass is announced, and its review reminded of"
        );
    }

    #[test]
    fn a_grant_reminds_its_owner_before_its_deadline_and_says_when_it_ended() {
        let mail = role(&[], &["mail"]);
        let mut grant = Grant::start(GrantId::from_random(1), &request(), "token", NOW);
        grant.activate(true, NOW);
        let issued = for_grant(&mail, &grant, EventKind::GrantIssued, NOW);
        assert_eq!(issued.len(), 1);
        assert_eq!(issued[0].due_at, grant.expires_at.minus(Duration::from_mins(10)), "the first warning's moment");
        let revoked = for_grant(&mail, &grant, EventKind::GrantRevoked, NOW);
        assert_eq!(kinds(&revoked)[0].2, NoticeKind::Revoked);
        assert_eq!(revoked[0].due_at, NOW);
        let nearly_over = NOW.plus(Duration::from_mins(25));
        assert!(for_grant(&mail, &grant, EventKind::GrantRenewed, nearly_over).is_empty(), "too late to remind");
        assert!(
            for_grant(&role(&["x"], &[]), &grant, EventKind::GrantRevoked, NOW).is_empty(),
            "no channel, no notice"
        );
    }
}
