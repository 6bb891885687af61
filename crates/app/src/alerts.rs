//! Desktop notifications: what happened that the user should hear of,
//! decided from broker events and from the local clock (expiry warnings
//! keep working while the broker is unreachable).

use hourglass_core::api::{Event, EventKind};
use hourglass_core::{Duration, Grant, GrantId, RequestId, RequestState, Timestamp, Warnings};
use serde::Serialize;

use crate::settings::NotifyKinds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    ApprovalNeeded,
    /// Someone broke glass: approvers hear of it at once.
    BreakGlass,
    Approved,
    Denied,
    /// Another approver decided a request I was asked to decide: it left my
    /// inbox, and I know why.
    DecidedByOther,
    Expiring,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[ts(optional_fields = nullable)]
pub struct Alert {
    pub kind: AlertKind,
    pub title: String,
    pub body: String,
    pub grant: Option<GrantId>,
    pub request: Option<RequestId>,
}

impl Alert {
    /// Whether the user wants this kind of notification.
    pub fn wanted(&self, notify: &NotifyKinds) -> bool {
        match self.kind {
            AlertKind::ApprovalNeeded | AlertKind::BreakGlass | AlertKind::DecidedByOther => notify.approval_needed,
            AlertKind::Approved | AlertKind::Denied => notify.decided,
            AlertKind::Expiring => notify.expiring,
            AlertKind::Revoked => notify.revoked,
        }
    }
}

/// The notification an event deserves, for the principal `me`.
pub fn from_event(event: &Event, me: &str) -> Option<Alert> {
    if let Some(request) = &event.request {
        let what = format!("{} · {} for {}", request.resource, request.role, request.duration);
        let mine = request.requester == me;
        return match event.kind {
            EventKind::RequestFiled if !mine && request.break_glass => Some(Alert {
                kind: AlertKind::BreakGlass,
                title: format!("{} broke glass", request.requester),
                body: format!("{what}: \"{}\"", request.reason),
                grant: request.grant_id.clone(),
                request: Some(request.id.clone()),
            }),
            // Filed and approved at once by policy: nothing for approvers to do.
            EventKind::RequestFiled if !mine && request.state == RequestState::Pending => Some(Alert {
                kind: AlertKind::ApprovalNeeded,
                title: format!("{} asks for access", request.requester),
                body: format!("{what}: \"{}\"", request.reason),
                grant: None,
                request: Some(request.id.clone()),
            }),
            EventKind::RequestApproved if mine && !request.auto_approved => Some(Alert {
                kind: AlertKind::Approved,
                title: "Access approved".into(),
                body: format!("{what}, approved by {}", deciders(request)),
                grant: request.grant_id.clone(),
                request: Some(request.id.clone()),
            }),
            EventKind::RequestDenied if mine => {
                let comment = request.decisions.iter().rev().find_map(|d| d.comment.clone());
                Some(Alert {
                    kind: AlertKind::Denied,
                    title: "Access denied".into(),
                    body: match comment {
                        Some(comment) => format!("{what}, denied by {}: \"{comment}\"", deciders(request)),
                        None => format!("{what}, denied by {}", deciders(request)),
                    },
                    grant: None,
                    request: Some(request.id.clone()),
                })
            }
            EventKind::RequestApproved | EventKind::RequestDenied if !mine => {
                // Only a teammate's decision: a policy's leaves nobody waiting on me.
                let decider = request.decisions.last()?.approver.as_str();
                if decider == me {
                    return None;
                }
                let verb = if event.kind == EventKind::RequestApproved { "approved" } else { "denied" };
                Some(Alert {
                    kind: AlertKind::DecidedByOther,
                    title: format!("{decider} {verb} {}'s request", request.requester),
                    body: format!("{what}: nothing left for you to decide"),
                    grant: None,
                    request: Some(request.id.clone()),
                })
            }
            _ => None,
        };
    }
    let grant = event.grant.as_ref()?;
    match event.kind {
        EventKind::GrantRevoked if grant.owner == me && grant.ended_by.as_deref() != Some(me) => Some(Alert {
            kind: AlertKind::Revoked,
            title: "Access revoked".into(),
            body: format!(
                "{} · {} was revoked by {}",
                grant.resource,
                grant.role,
                grant.ended_by.as_deref().unwrap_or("an administrator")
            ),
            grant: Some(grant.id.clone()),
            request: None,
        }),
        _ => None,
    }
}

/// `text` for a notification daemon that renders markup in bodies (the
/// `body-markup` capability): `&`, `<` and `>` as entities, so that what a
/// requester typed (a reason, a comment) shows as typed and never as a link
/// or an image. Summaries are plain text by the specification.
pub fn escape_markup(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn deciders(request: &hourglass_core::AccessRequest) -> String {
    let names: Vec<&str> = request.decisions.iter().map(|d| d.approver.as_str()).collect();
    if names.is_empty() { "policy".into() } else { names.join(", ") }
}

/// The expiry warnings whose moment (deadline minus a warning time) fell in
/// `(since, now]`, the broker's clock: each warning fires once, whenever
/// the clock is checked.
pub fn expiry_warnings(grants: &[Grant], warnings: &Warnings, since: Timestamp, now: Timestamp) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for grant in grants.iter().filter(|g| g.state.is_live()) {
        // Only the nearest threshold crossed: after a sleep, one warning, not three.
        let crossed = warnings
            .moments(grant.expires_at)
            .filter(|(_, moment)| since < *moment && *moment <= now)
            .map(|(before, _)| before)
            .min();
        if let Some(before) = crossed {
            alerts.push(Alert {
                kind: AlertKind::Expiring,
                title: format!("{} · {} expires in {}", grant.resource, grant.role, spoken(before)),
                body: "Renew it to keep working, or let it end.".into(),
                grant: Some(grant.id.clone()),
                request: None,
            });
        }
    }
    alerts
}

/// The next moment after `now` (the broker's clock) at which an expiry
/// warning is due, if any: the app sleeps until then instead of checking
/// the clock every second.
pub fn next_warning_at(grants: &[Grant], warnings: &Warnings, now: Timestamp) -> Option<Timestamp> {
    grants
        .iter()
        .filter(|g| g.state.is_live())
        .flat_map(|grant| warnings.moments(grant.expires_at).map(|(_, moment)| moment))
        .filter(|moment| *moment > now)
        .min()
}

/// `10 minutes`, `2 minutes`, `30 seconds`.
fn spoken(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s % 3600 == 0 && s >= 3600 => plural(s / 3600, "hour"),
        s if s % 60 == 0 && s >= 60 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

#[cfg(test)]
mod tests {
    use hourglass_core::api::{Event, EventKind};
    use hourglass_core::{Decision, RequestState, Verdict};

    use super::*;
    use crate::testing::{grant, request};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    #[test]
    fn markup_in_what_people_typed_is_shown_as_typed() {
        let reason = r#"hotfix <a href="https://evil.example/">see</a> & <img src=x>"#;
        assert_eq!(
            escape_markup(reason),
            "hotfix &lt;a href=&quot;https://evil.example/&quot;&gt;see&lt;/a&gt; &amp; &lt;img src=x&gt;"
        );
        assert_eq!(escape_markup("plain text · 30m"), "plain text · 30m", "text without markup is unchanged");
    }

    fn event(kind: EventKind, request: Option<hourglass_core::AccessRequest>, grant: Option<Grant>) -> Event {
        Event { kind, at: NOW, request, grant, session: None }
    }

    fn sre_decision(approver: &str, verdict: Verdict, comment: Option<&str>) -> Decision {
        Decision {
            approver: approver.into(),
            approver_groups: vec!["sre".into()],
            verdict,
            comment: comment.map(Into::into),
            at: NOW,
        }
    }

    #[test]
    fn approvers_hear_of_new_requests_and_break_glass() {
        let filed = event(EventKind::RequestFiled, Some(request("dave@acme.example")), None);
        let alert = from_event(&filed, "bob@acme.example").expect("an approver is told");
        assert_eq!(alert.kind, AlertKind::ApprovalNeeded);
        assert_eq!(alert.title, "dave@acme.example asks for access");
        assert!(from_event(&filed, "dave@acme.example").is_none(), "nobody is told of their own request");
        let mut glass = request("dave@acme.example");
        glass.break_glass = true;
        let alert = from_event(&event(EventKind::RequestFiled, Some(glass), None), "bob@acme.example").expect("told");
        assert_eq!(alert.kind, AlertKind::BreakGlass);
    }

    #[test]
    fn requesters_hear_of_decisions_with_the_comment() {
        let mut denied = request("alice@acme.example");
        denied.state = RequestState::Denied;
        denied.decisions.push(sre_decision("bob@acme.example", Verdict::Deny, Some("use read")));
        let alert =
            from_event(&event(EventKind::RequestDenied, Some(denied), None), "alice@acme.example").expect("told");
        assert_eq!(alert.kind, AlertKind::Denied);
        assert!(alert.body.ends_with("denied by bob@acme.example: \"use read\""), "{}", alert.body);
        let mut auto = request("alice@acme.example");
        auto.auto_approved = true;
        assert!(
            from_event(&event(EventKind::RequestApproved, Some(auto), None), "alice@acme.example").is_none(),
            "an instant approval needs no notification: the user is looking at it"
        );
    }

    #[test]
    fn other_approvers_hear_when_a_teammate_decided() {
        let mut approved = request("dave@acme.example");
        approved.state = RequestState::Approved;
        approved.decisions.push(sre_decision("erin@acme.example", Verdict::Approve, None));
        let approved = event(EventKind::RequestApproved, Some(approved), None);
        let alert = from_event(&approved, "bob@acme.example").expect("bob, also asked, is told");
        assert_eq!(alert.kind, AlertKind::DecidedByOther);
        assert_eq!(alert.title, "erin@acme.example approved dave@acme.example's request");
        assert!(from_event(&approved, "erin@acme.example").is_none(), "the decider knows");

        let mut auto = request("dave@acme.example");
        auto.state = RequestState::Approved;
        auto.auto_approved = true;
        assert!(from_event(&event(EventKind::RequestApproved, Some(auto.clone()), None), "bob@acme.example").is_none());
        assert!(
            from_event(&event(EventKind::RequestFiled, Some(auto), None), "bob@acme.example").is_none(),
            "a request policy approved at once asks nothing of approvers"
        );
    }

    #[test]
    fn owners_hear_of_revocation_by_others_only() {
        let mut revoked = grant("orders-api", NOW);
        revoked.ended_by = Some("carol@acme.example".into());
        let alert = from_event(&event(EventKind::GrantRevoked, None, Some(revoked.clone())), "alice@acme.example");
        assert_eq!(alert.map(|a| a.body), Some("orders-api · read was revoked by carol@acme.example".into()));
        revoked.ended_by = Some("alice@acme.example".into());
        assert!(from_event(&event(EventKind::GrantRevoked, None, Some(revoked)), "alice@acme.example").is_none());
    }

    #[test]
    fn each_expiry_warning_fires_once_at_its_moment() {
        let grants = vec![grant("orders-api", NOW.plus(Duration::from_mins(10)))];
        let warnings = Warnings::default();
        let at = |secs: i64| NOW.plus_millis(secs * 1000);
        let fired = expiry_warnings(&grants, &warnings, at(-1), at(0));
        assert_eq!(fired.len(), 1, "10 minutes before");
        assert_eq!(fired[0].title, "orders-api · read expires in 10 minutes");
        assert!(expiry_warnings(&grants, &warnings, at(0), at(1)).is_empty(), "not again a second later");
        let two = expiry_warnings(&grants, &warnings, at(479), at(480));
        assert_eq!(two.map_titles(), ["orders-api · read expires in 2 minutes"]);
        let slept = expiry_warnings(&grants, &warnings, at(-60), at(500));
        assert_eq!(slept.map_titles(), ["orders-api · read expires in 2 minutes"], "after a sleep, only the nearest");
    }

    #[test]
    fn next_warning_is_the_nearest_moment_still_ahead() {
        let grants = vec![
            grant("orders-api", NOW.plus(Duration::from_mins(10))),
            grant("billing-api", NOW.plus(Duration::from_mins(30))),
        ];
        let warnings = Warnings::default();
        let at = |secs: i64| NOW.plus_millis(secs * 1000);
        assert_eq!(next_warning_at(&grants, &warnings, at(-5)), Some(at(0)), "orders-api's 10-minute warning");
        assert_eq!(next_warning_at(&grants, &warnings, at(0)), Some(at(480)), "a moment passed is not next");
        assert_eq!(next_warning_at(&grants, &warnings, at(480)), Some(at(1200)), "billing-api's");
        assert_eq!(next_warning_at(&grants, &warnings, at(1680)), None, "every warning given");
        assert_eq!(next_warning_at(&[], &warnings, at(0)), None, "no grants, nothing to wake for");
    }

    trait Titles {
        fn map_titles(&self) -> Vec<String>;
    }

    impl Titles for Vec<Alert> {
        fn map_titles(&self) -> Vec<String> {
            self.iter().map(|a| a.title.clone()).collect()
        }
    }
}
