//! A notice in each channel's form: Slack's Block Kit, a Teams Adaptive
//! Card, an email's subject and text, the webhook's JSON. Pure; what a
//! requester wrote (a reason, a comment) is escaped for each format, so it
//! reads as text and never as a link or a mention.

use hourglass_core::{AccessRequest, Grant, RequestState, Timestamp, Verdict};
use serde_json::{Value, json};

use super::{Audience, Notice, NoticeKind};

/// How a notice reads: one model for every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// One line: who asks for what, or what happened to my access.
    pub title: String,
    /// Where it stands now: waiting, approved by whom, ended.
    pub status: String,
    pub tone: Tone,
    /// Label and text, in order.
    pub facts: Vec<(&'static str, String)>,
    /// What to do about it, if anything.
    pub hint: Option<String>,
    /// The approval page of the request, for approvers (when the broker
    /// serves one).
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Waiting,
    Good,
    Bad,
    Neutral,
}

impl Tone {
    fn emoji(self) -> &'static str {
        match self {
            Tone::Waiting => ":hourglass_flowing_sand:",
            Tone::Good => ":white_check_mark:",
            Tone::Bad => ":no_entry:",
            Tone::Neutral => ":information_source:",
        }
    }

    fn card_color(self) -> &'static str {
        match self {
            Tone::Waiting => "warning",
            Tone::Good => "good",
            Tone::Bad => "attention",
            Tone::Neutral => "default",
        }
    }
}

/// Times as people read them in an email or a card: minutes, UTC.
pub fn human_time(at: Timestamp) -> String {
    let t = at.to_offset_date_time();
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

pub fn summarize(notice: &Notice) -> Summary {
    match (&notice.request, &notice.grant) {
        (Some(request), grant) => summarize_request(notice.kind, notice.audience, request, grant.as_ref()),
        (None, Some(grant)) => summarize_grant(notice.kind, grant),
        (None, None) => Summary {
            title: notice.kind.as_str().to_owned(),
            status: String::new(),
            tone: Tone::Neutral,
            facts: Vec::new(),
            hint: None,
            link: None,
        },
    }
}

fn access(resource: &str, role: &str) -> String {
    format!("{resource}/{role}")
}

fn summarize_request(kind: NoticeKind, audience: Audience, request: &AccessRequest, grant: Option<&Grant>) -> Summary {
    let what = access(&request.resource, &request.role);
    let renewal = if request.renews.is_some() { " (renewal)" } else { "" };
    let title = match audience {
        Audience::Approvers if request.break_glass => {
            format!("{} broke glass: {what} for {}{renewal}", request.requester, request.duration)
        }
        Audience::Approvers => format!("{} asks for {what} for {}{renewal}", request.requester, request.duration),
        Audience::Requester => format!("Your request for {what}{renewal}"),
    };
    let decided_by = |verdict: Verdict| {
        let names: Vec<&str> =
            request.decisions.iter().filter(|d| d.verdict == verdict).map(|d| d.approver.as_str()).collect();
        names.join(", ")
    };
    let review = grant.and_then(|grant| grant.review.as_ref());
    let (status, tone) = match (kind, request.state) {
        (NoticeKind::Reviewed, _) => match review {
            Some(review) => (
                format!("Break glass reviewed by {}: {}", review.reviewer, review.verdict.as_str()),
                if review.verdict == hourglass_core::review::ReviewVerdict::Justified { Tone::Good } else { Tone::Bad },
            ),
            None => ("Break glass reviewed".to_owned(), Tone::Neutral),
        },
        (NoticeKind::ReviewReminder, _) => ("Break glass still waits for its review".to_owned(), Tone::Bad),
        (NoticeKind::Filed | NoticeKind::Progress, RequestState::Pending) => {
            let approved = decided_by(Verdict::Approve);
            let needed = request.approvals_remaining;
            let more = if needed == 1 { "1 more approval".to_owned() } else { format!("{needed} more approvals") };
            let status = if approved.is_empty() {
                format!("Waiting for {more}, until {}", human_time(request.pending_until))
            } else {
                format!("Approved by {approved}; waiting for {more}, until {}", human_time(request.pending_until))
            };
            (status, Tone::Waiting)
        }
        (NoticeKind::Filed, _) if request.break_glass => {
            ("Granted at once under break glass: needs review".to_owned(), Tone::Bad)
        }
        (_, RequestState::Approved) if request.auto_approved => ("Approved by policy".to_owned(), Tone::Good),
        (_, RequestState::Approved) => (format!("Approved by {}", decided_by(Verdict::Approve)), Tone::Good),
        (_, RequestState::Denied) => (format!("Denied by {}", decided_by(Verdict::Deny)), Tone::Bad),
        (_, RequestState::Cancelled) => ("Withdrawn".to_owned(), Tone::Neutral),
        (_, RequestState::Expired) => ("Expired undecided".to_owned(), Tone::Neutral),
        (_, RequestState::Pending) => ("Waiting".to_owned(), Tone::Waiting),
    };
    let mut facts = vec![
        ("Requester", request.requester.clone()),
        ("Access", what),
        ("For", request.duration.to_string()),
        ("Reason", request.reason.clone()),
    ];
    if let Some(ticket) = &request.ticket {
        facts.push(("Ticket", ticket.clone()));
    }
    for decision in request.decisions.iter().filter(|d| d.comment.as_deref().is_some_and(|c| !c.trim().is_empty())) {
        facts.push(("Comment", format!("{}: {}", decision.approver, decision.comment.as_deref().unwrap_or_default())));
    }
    if let Some(review) = review {
        facts.push(("Review", format!("{}: {}", review.reviewer, review.comment)));
    }
    facts.push(("Request", request.id.to_string()));
    let hint = match (kind, audience) {
        (NoticeKind::Filed | NoticeKind::Progress, Audience::Approvers) if request.state == RequestState::Pending => {
            Some(format!("Decide in the Hourglass app, or: hourglass approve {}", request.id))
        }
        (NoticeKind::Filed | NoticeKind::ReviewReminder, Audience::Approvers) if request.break_glass => {
            request.grant_id.as_ref().map(|grant| {
                format!(
                    "Review it in the Hourglass app, or: hourglass review {grant} --verdict justified --comment WHY"
                )
            })
        }
        (NoticeKind::Approved, Audience::Requester) => {
            Some(format!("Your access lasts {} from now; the Hourglass app shows it.", request.duration))
        }
        _ => None,
    };
    Summary { title, status, tone, facts, hint, link: None }
}

fn summarize_grant(kind: NoticeKind, grant: &Grant) -> Summary {
    let what = access(&grant.resource, &grant.role);
    let (title, status, tone, hint) = match kind {
        NoticeKind::Expiring => (
            format!("Your access to {what} ends at {}", human_time(grant.expires_at)),
            "Ending soon".to_owned(),
            Tone::Waiting,
            Some(format!("Renew it from the Hourglass app, or: hourglass renew {}", grant.id)),
        ),
        NoticeKind::Revoked => {
            let by = grant.ended_by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default();
            (format!("Your access to {what} was revoked{by}"), "Revoked".to_owned(), Tone::Bad, None)
        }
        _ => (format!("Your access to {what} has ended"), "Ended".to_owned(), Tone::Neutral, None),
    };
    let mut facts = vec![("Access", what), ("Grant", grant.id.to_string())];
    if let Some(reason) = &grant.end_reason {
        facts.push(("Why", reason.clone()));
    }
    Summary { title, status, tone, facts, hint, link: None }
}

/// Slack's mrkdwn: `&`, `<` and `>` escaped, so that no text becomes a
/// link, a mention or a channel-wide ping.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Slack message: Block Kit, with `text` for notifications.
pub fn slack(summary: &Summary) -> Value {
    let fields: Vec<Value> = summary
        .facts
        .iter()
        .take(10) // Block Kit's limit per section
        .map(|(label, text)| json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", slack_escape(&clip(text, 1900))) }))
        .collect();
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": clip(&summary.title, 150), "emoji": false } }),
        json!({ "type": "section", "fields": fields }),
        json!({ "type": "context", "elements": [
            { "type": "mrkdwn", "text": format!("{} {}", summary.tone.emoji(), slack_escape(&summary.status)) }
        ] }),
    ];
    if let Some(link) = &summary.link {
        blocks.push(json!({ "type": "actions", "elements": [{
            "type": "button",
            "text": { "type": "plain_text", "text": "Review and decide" },
            "url": link,
            "style": "primary",
        }] }));
    }
    if let Some(hint) = &summary.hint {
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": slack_escape(hint) }] }));
    }
    json!({
        "text": slack_escape(&format!("{}: {}", summary.title, summary.status)),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// Adaptive Cards read Markdown in text: its marks are escaped.
pub fn card_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '`' | '~' | '>' | '<' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Teams message: an Adaptive Card (1.4) in a message, as a Teams
/// workflow's webhook takes it.
pub fn teams(summary: &Summary) -> Value {
    let facts: Vec<Value> = summary
        .facts
        .iter()
        .map(|(label, text)| json!({ "title": label, "value": card_escape(&clip(text, 1900)) }))
        .collect();
    let mut body = vec![
        json!({ "type": "TextBlock", "text": card_escape(&summary.title), "weight": "Bolder", "size": "Medium", "wrap": true }),
        json!({ "type": "TextBlock", "text": card_escape(&summary.status), "color": summary.tone.card_color(), "wrap": true }),
        json!({ "type": "FactSet", "facts": facts }),
    ];
    if let Some(hint) = &summary.hint {
        body.push(json!({ "type": "TextBlock", "text": card_escape(hint), "isSubtle": true, "wrap": true }));
    }
    let actions: Vec<Value> = summary
        .link
        .iter()
        .map(|link| json!({ "type": "Action.OpenUrl", "title": "Review and decide", "url": link }))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            },
        }],
    })
}

/// An email's subject: the title, on one line; an update answers the
/// announcement (`Re:`), so that mail clients thread them.
pub fn email_subject(summary: &Summary, answers: bool) -> String {
    let one_line: String = summary.title.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let subject = format!("[Hourglass] {}", clip(&one_line, 200));
    if answers { format!("Re: {subject}") } else { subject }
}

/// An email's text: plain, nothing to escape.
pub fn email_text(summary: &Summary) -> String {
    let mut text = format!("{}\n\n{}\n\n", summary.title, summary.status);
    let width = summary.facts.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in &summary.facts {
        text.push_str(&format!("{label:<width$}  {value}\n"));
    }
    if let Some(link) = &summary.link {
        text.push_str(&format!("\nReview and decide: {link}\n"));
    }
    if let Some(hint) = &summary.hint {
        text.push_str(&format!("\n{hint}\n"));
    }
    text.push_str("\n-- \nHourglass: just-in-time access\n");
    text
}

/// The webhook's body: the notice whole, with its id, topic and the
/// approval page's link when there is one.
pub fn webhook(id: &str, topic: &str, notice: &Notice, link: Option<&str>) -> String {
    let mut body = serde_json::to_value(notice).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut body {
        fields.insert("id".into(), Value::String(id.to_owned()));
        fields.insert("topic".into(), Value::String(topic.to_owned()));
        if let Some(link) = link {
            fields.insert("approve_url".into(), Value::String(link.to_owned()));
        }
    }
    body.to_string()
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use hourglass_core::{Decision, Duration, NewRequest, RequestId};

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn request(reason: &str) -> AccessRequest {
        AccessRequest::file(
            RequestId::from_random(9),
            NewRequest {
                requester: "alice@acme.example".into(),
                resource: "orders-db".into(),
                role: "write".into(),
                duration: Duration::from_mins(30),
                reason: reason.into(),
                ticket: Some("INC-42".into()),
                break_glass: false,
                renews: None,
            },
            vec![hourglass_core::ApprovalRule { group: "sre".into(), count: 1 }],
            Duration::from_hours(1),
            NOW,
        )
    }

    fn notice(kind: NoticeKind, audience: Audience, request: AccessRequest) -> Notice {
        Notice { kind, audience, at: NOW, request: Some(request), grant: None }
    }

    #[test]
    fn an_announcement_says_who_asks_for_what_and_how_to_decide() {
        let summary = summarize(&notice(NoticeKind::Filed, Audience::Approvers, request("deploy hotfix")));
        assert_eq!(summary.title, "alice@acme.example asks for orders-db/write for 30m");
        assert!(
            summary.status.starts_with("Waiting for 1 more approval, until 2027-01-15 09:00 UTC"),
            "{}",
            summary.status
        );
        assert!(summary.facts.contains(&("Ticket", "INC-42".into())));
        assert!(summary.hint.as_deref().unwrap().contains("hourglass approve req-"));
    }

    #[test]
    fn a_decision_says_who_decided_and_their_comment() {
        let mut decided = request("deploy");
        decided.state = RequestState::Denied;
        decided.decisions.push(Decision {
            approver: "bob@acme.example".into(),
            approver_groups: vec!["sre".into()],
            verdict: Verdict::Deny,
            comment: Some("not during the freeze".into()),
            at: NOW,
        });
        let summary = summarize(&notice(NoticeKind::Denied, Audience::Requester, decided));
        assert_eq!(summary.title, "Your request for orders-db/write");
        assert_eq!(summary.status, "Denied by bob@acme.example");
        assert_eq!(summary.tone, Tone::Bad);
        assert!(summary.facts.contains(&("Comment", "bob@acme.example: not during the freeze".into())));
    }

    #[test]
    fn requester_text_is_inert_in_every_format() {
        let hostile =
            "<!channel> see <https://evil.example|docs> **now** [x](https://evil.example)\r\nBcc: x@evil.example";
        let summary = summarize(&notice(NoticeKind::Filed, Audience::Approvers, request(hostile)));
        let slack = slack(&summary).to_string();
        assert!(!slack.contains("<!channel>") && !slack.contains("<https://evil"), "{slack}");
        assert!(slack.contains("&lt;!channel&gt;"), "shown as text: {slack}");
        let card = teams(&summary).to_string();
        assert!(card.contains(r"\\[x\\]\\(https://evil.example\\)"), "no link in the card: {card}");
        let mut titled = summary.clone();
        titled.title = "a\r\nBcc: x@evil.example".into();
        assert!(!email_subject(&titled, false).contains('\n'), "one header line");
        assert!(email_subject(&titled, true).starts_with("Re: [Hourglass] "));
    }

    #[test]
    fn the_webhook_body_is_the_notice_with_its_id_and_topic() {
        let body =
            webhook("ntf_1", "approvers:req_1", &notice(NoticeKind::Filed, Audience::Approvers, request("r")), None);
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["id"], "ntf_1");
        assert_eq!(value["type"], "request.filed");
        assert_eq!(value["audience"], "approvers");
        assert_eq!(value["request"]["reason"], "r");
    }
}
