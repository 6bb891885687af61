//! The approval page's HTML: small, readable on a phone, no script at all;
//! every text from a request escaped; its one stylesheet allowed by hash
//! in the Content Security Policy, nothing else loaded from anywhere.

use std::sync::LazyLock;

use base64::Engine;
use hourglass_core::{AccessRequest, RequestState, Timestamp, Verdict};
use sha2::{Digest, Sha256};

const CSS: &str = "body{font:16px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}\
main{max-width:34rem;margin:0 auto;padding:1rem}h1{font-size:1.2rem;margin:.2rem 0 1rem}\
.card{background:#fff;border:1px solid #d8dce3;border-radius:10px;padding:1rem;margin-bottom:1rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem .8rem;margin:0}dt{color:#5b6272}dd{margin:0;overflow-wrap:anywhere}\
.card>p:first-child{margin-top:0}.status{font-weight:600}.good{color:#1a7f37}.bad{color:#b42318}.wait{color:#9a6700}\
label{display:block;margin:.8rem 0 .3rem}input[type=text]{width:100%;box-sizing:border-box;padding:.6rem;font:inherit;border:1px solid #b9bfca;border-radius:8px}\
.row{display:flex;gap:.6rem;margin-top:1rem}button{flex:1;padding:.8rem;font:inherit;font-weight:600;border-radius:8px;border:1px solid #b9bfca;background:#fff}\
button.approve{background:#2f55d4;color:#fff;border-color:#2f55d4}button.deny{color:#b42318}.muted{color:#5b6272;font-size:.9rem}";

/// The Content Security Policy of every page: nothing but the inline
/// stylesheet above, forms only to the broker, never in a frame.
pub static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// Text for HTML, attributes included (the dev issuer's pages use it too).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(at: Timestamp) -> String {
    let t = at.to_offset_date_time();
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

/// A whole page around `body`.
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\"><title>{} · Hourglass</title><style>{CSS}</style></head>\
         <body><main>{body}</main></body></html>",
        escape(title)
    )
}

/// A page that only says something (an error, a login to do again).
pub fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> String {
    let link = link
        .map(|(href, label)| format!("<p><a href=\"{}\">{}</a></p>", escape(href), escape(label)))
        .unwrap_or_default();
    document(title, &format!("<h1>{}</h1><div class=\"card\"><p>{}</p>{link}</div>", escape(title), escape(text)))
}

/// What the approver decides on, and what they may do about it.
pub struct RequestPage<'a> {
    pub request: &'a AccessRequest,
    /// Who is looking.
    pub viewer: &'a str,
    /// The form is shown: pending, and policy lets the viewer decide.
    pub may_decide: bool,
    /// Bound to the viewer's session (see `approve.rs`).
    pub csrf: &'a str,
    /// What just happened (a decision, a refusal).
    pub notice: Option<(&'a str, bool)>,
}

pub fn request_page(page: &RequestPage<'_>) -> String {
    let request = page.request;
    let id = escape(request.id.as_str());
    let mut facts = vec![
        ("Requester", escape(&request.requester)),
        ("Access", format!("{} · {}", escape(&request.resource), escape(&request.role))),
        ("For", format!("{} once approved", escape(&request.duration.to_string()))),
        ("Reason", escape(&request.reason)),
    ];
    if let Some(ticket) = &request.ticket {
        facts.push(("Ticket", escape(ticket)));
    }
    facts.push(("Asked", when(request.created_at)));
    if request.break_glass {
        facts.push(("Break glass", "granted at once; reviewed after".into()));
    }
    for decision in &request.decisions {
        let verdict = if decision.verdict == Verdict::Approve { "approved" } else { "denied" };
        let comment = decision.comment.as_deref().map(|c| format!(": “{}”", escape(c))).unwrap_or_default();
        facts.push(("Decided", format!("{} {verdict}{comment}", escape(&decision.approver))));
    }
    let facts: String = facts.iter().map(|(label, value)| format!("<dt>{label}</dt><dd>{value}</dd>")).collect();
    let (status, class) = match request.state {
        RequestState::Pending => (
            format!(
                "Waiting for {} more approval{}, until {}",
                request.approvals_remaining,
                if request.approvals_remaining == 1 { "" } else { "s" },
                when(request.pending_until)
            ),
            "wait",
        ),
        RequestState::Approved => ("Approved".into(), "good"),
        RequestState::Denied => ("Denied".into(), "bad"),
        RequestState::Cancelled => ("Withdrawn by the requester".into(), "bad"),
        RequestState::Expired => ("Expired undecided".into(), "bad"),
    };
    let notice = page
        .notice
        .map(|(text, good)| {
            format!(
                "<div class=\"card status {}\" role=\"status\">{}</div>",
                if good { "good" } else { "bad" },
                escape(text)
            )
        })
        .unwrap_or_default();
    let form = if page.may_decide {
        format!(
            "<form method=\"post\" action=\"/approve/{id}\" class=\"card\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"comment\">Comment (optional)</label>\
             <input type=\"text\" id=\"comment\" name=\"comment\" maxlength=\"1000\">\
             <div class=\"row\"><button class=\"deny\" name=\"verdict\" value=\"deny\">Deny</button>\
             <button class=\"approve\" name=\"verdict\" value=\"approve\">Approve</button></div>\
             <p class=\"muted\">Signed in as {viewer}.</p></form>",
            csrf = escape(page.csrf),
            viewer = escape(page.viewer)
        )
    } else {
        format!("<p class=\"muted\">Signed in as {}.</p>", escape(page.viewer))
    };
    document(
        &format!("Request {}", request.id),
        &format!(
            "<h1>{} asks for {} · {}</h1>{notice}<div class=\"card\"><p class=\"status {class}\">{}</p><dl>{facts}</dl></div>{form}",
            escape(&request.requester),
            escape(&request.resource),
            escape(&request.role),
            escape(&status)
        ),
    )
}

#[cfg(test)]
mod tests {
    use hourglass_core::{Duration, NewRequest, RequestId};

    use super::*;

    #[test]
    fn what_a_requester_wrote_is_text_on_the_page() {
        let request = AccessRequest::file(
            RequestId::from_random(1),
            NewRequest {
                requester: "alice@acme.example".into(),
                resource: "orders-api".into(),
                role: "write".into(),
                duration: Duration::from_mins(30),
                reason: "<script>alert(1)</script><form action=\"https://evil.example\">".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            vec![hourglass_core::ApprovalRule { group: "sre".into(), count: 1 }],
            Duration::from_hours(1),
            Timestamp::from_unix_millis(1_800_000_000_000),
        );
        let html = request_page(&RequestPage {
            request: &request,
            viewer: "bob@acme.example",
            may_decide: true,
            csrf: "c\"x",
            notice: None,
        });
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"), "{html}");
        assert_eq!(html.matches("<form").count(), 1, "only the page's own form");
        assert!(html.contains("value=\"c&quot;x\""), "attributes escaped too");
        assert!(CSP.starts_with("default-src 'none'; style-src 'sha256-"), "{}", *CSP);
    }
}
