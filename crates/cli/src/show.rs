//! Everything `hourglass` prints: text for people, or with `--json` the
//! broker's objects as they are (each carries `id` and `state`).

use hourglass_client::SessionInfo;
use hourglass_core::api::{Catalog, GrantList, RenewOutcome, RequestList, RequestOutcome, ReviewItem, WhoAmI};
use hourglass_core::audit::AuditRecord;
use hourglass_core::{AccessRequest, ApprovalRule, Grant, GrantState, RequestState, RevocationStatus, Timestamp};
use serde::Serialize;
use serde_json::Value;

pub struct Output {
    pub json: bool,
    offset: time::UtcOffset,
}

impl Output {
    pub fn new(json: bool, offset: time::UtcOffset) -> Self {
        Output { json, offset }
    }

    pub fn json_value<T: Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("hourglass: cannot print JSON: {error}"),
        }
    }

    pub fn error(&self, error: &anyhow::Error) {
        if self.json {
            let body = match error.downcast_ref::<hourglass_client::Error>() {
                Some(hourglass_client::Error::Api(api)) => {
                    serde_json::json!({ "code": api.code, "message": api.message })
                }
                _ => serde_json::json!({ "code": "client_error", "message": format!("{error:#}") }),
            };
            eprintln!("{body}");
        } else {
            eprintln!("hourglass: {error:#}");
        }
    }

    /// A side remark that must not pollute JSON on stdout.
    pub fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    /// Local wall-clock time of an instant: `14:32:10`, with the date when not today.
    fn clock(&self, at: Timestamp) -> String {
        let local = at.to_offset_date_time().to_offset(self.offset);
        let today = hourglass_client::clock::local_now().to_offset_date_time().to_offset(self.offset).date();
        let time = format!("{:02}:{:02}:{:02}", local.hour(), local.minute(), local.second());
        if local.date() == today { time } else { format!("{} {time}", local.date()) }
    }

    /// The principal the broker sees, and where the session comes from.
    pub fn whoami(&self, me: &WhoAmI, session: &SessionInfo) {
        if self.json {
            let mut value = serde_json::to_value(&me.principal).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("session".into(), serde_json::to_value(session).unwrap_or(Value::Null));
            }
            return self.json_value(&value);
        }
        let principal = &me.principal;
        match &principal.name {
            Some(name) => println!("{} ({name})", principal.id),
            None => println!("{}", principal.id),
        }
        let groups: Vec<&str> = principal.groups.iter().map(String::as_str).collect();
        println!("groups: {}", if groups.is_empty() { "none".to_owned() } else { groups.join(", ") });
        let until =
            session.expires_at.map_or_else(|| "no stated expiry".to_owned(), |at| format!("until {}", self.clock(at)));
        println!("session: {until}, from the {}", session.source);
        if let Some(idp) = &session.idp {
            println!("identity provider: {idp}");
        }
    }

    /// After `hourglass login`: who, until when, and where the session is kept.
    pub fn logged_in(&self, me: &WhoAmI, session: &SessionInfo, issuer: &str, in_keyring: bool) {
        let until = session.expires_at.map_or_else(String::new, |at| format!(" until {}", self.clock(at)));
        let kept = if in_keyring {
            "kept in the OS keyring and renewed silently"
        } else {
            "not stored anywhere: it lives only in the shell that evaluates the export"
        };
        let groups: Vec<&str> = me.principal.groups.iter().map(String::as_str).collect();
        eprintln!(
            "Logged in as {} ({}) through {issuer}; session{until}, {kept}.",
            me.principal.id,
            if groups.is_empty() { "no groups".to_owned() } else { groups.join(", ") }
        );
    }

    pub fn catalog(&self, catalog: &Catalog) {
        if self.json {
            return self.json_value(&catalog.resources);
        }
        for resource in &catalog.resources {
            println!("{}  {}  [{}]", resource.name, resource.description, resource.provider);
            for role in &resource.roles {
                let approval = if !role.may_request {
                    "not requestable by you".to_owned()
                } else if role.auto_approve {
                    "approved at once".to_owned()
                } else {
                    format!("needs {}", approvals(&role.approvals))
                };
                let mut needs = Vec::new();
                if role.ticket_required {
                    needs.push("ticket");
                }
                if !role.reason_required {
                    needs.push("no reason needed");
                }
                let extra = if needs.is_empty() { String::new() } else { format!("; {}", needs.join(", ")) };
                println!(
                    "  {:<10} {}–{} (default {})  {approval}{extra}",
                    role.name, role.min_duration, role.max_duration, role.default_duration
                );
                if !role.description.is_empty() {
                    println!("  {:<10} {}", "", role.description);
                }
            }
        }
    }

    /// A filed or decided request, with its grant when there is one.
    pub fn outcome(&self, outcome: &RequestOutcome, waiting: bool) {
        if self.json {
            if waiting {
                return; // --wait prints the final object only
            }
            let mut value = serde_json::to_value(&outcome.request).unwrap_or(Value::Null);
            if let (Value::Object(map), Some(grant)) = (&mut value, &outcome.grant) {
                map.insert("grant".into(), serde_json::to_value(grant).unwrap_or(Value::Null));
            }
            return self.json_value(&value);
        }
        let request = &outcome.request;
        println!("{}", self.request_line(request));
        if waiting {
            eprintln!("waiting for a decision… (Ctrl-C stops waiting; the request stays pending)");
        }
        if let Some(grant) = &outcome.grant {
            self.grant_detail(grant);
        }
    }

    pub fn progress(&self, request: &AccessRequest) {
        if let Some(decision) = request.decisions.last() {
            eprintln!("{} approved; {} more approval(s) needed", decision.approver, request.approvals_remaining);
        }
    }

    fn request_line(&self, request: &AccessRequest) -> String {
        let what = format!("{}/{} for {}", request.resource, request.role, request.duration);
        let kind = if request.renews.is_some() { "renewal " } else { "" };
        match request.state {
            RequestState::Pending => format!(
                "{kind}{} pending: {what}, waiting for {} (expires at {} if undecided)",
                request.id,
                remaining(request),
                self.clock(request.pending_until)
            ),
            RequestState::Approved => {
                let by = if request.break_glass {
                    "under break-glass (flagged for review)".to_owned()
                } else if request.auto_approved {
                    "automatically by policy".to_owned()
                } else {
                    format!("by {}", deciders(request))
                };
                format!("{kind}{} approved {by}: {what}", request.id)
            }
            RequestState::Denied => {
                let comment = request
                    .decisions
                    .iter()
                    .find(|d| d.verdict == hourglass_core::Verdict::Deny)
                    .and_then(|d| d.comment.as_deref())
                    .map(|c| format!(": \"{c}\""))
                    .unwrap_or_default();
                format!("{kind}{} denied by {}{comment}", request.id, deciders(request))
            }
            RequestState::Cancelled => format!("{kind}{} cancelled: {what}", request.id),
            RequestState::Expired => format!("{kind}{} expired undecided: {what}", request.id),
        }
    }

    fn grant_detail(&self, grant: &Grant) {
        match grant.state {
            GrantState::Active => {
                let ready = if grant.ready_at.is_some() { "ready" } else { "not yet confirmed working" };
                println!(
                    "{} active ({ready}): {}/{} until {}",
                    grant.id,
                    grant.resource,
                    grant.role,
                    self.clock(grant.expires_at)
                );
                println!("  use it:  eval \"$(hourglass env {})\"", grant.id);
            }
            state => println!("{} {state}: {}/{}", grant.id, grant.resource, grant.role),
        }
    }

    pub fn request(&self, request: &AccessRequest) {
        if self.json {
            return self.json_value(request);
        }
        println!("{}", self.request_line(request));
    }

    /// Break-glass grants waiting for my review.
    pub fn reviews(&self, items: &[ReviewItem]) {
        if self.json {
            return self.json_value(&items);
        }
        if items.is_empty() {
            println!("No break-glass access waits for your review.");
            return;
        }
        println!("Break-glass access waiting for your review:");
        for ReviewItem { grant, request } in items {
            println!(
                "  {}  {}  {}/{} from {} to {}  \"{}\"",
                grant.id,
                grant.owner,
                grant.resource,
                grant.role,
                self.clock(grant.issued_at),
                self.clock(grant.expires_at),
                request.reason
            );
        }
        println!("  hourglass review GRANT --verdict justified|unjustified --comment WHY");
    }

    /// A review recorded.
    pub fn reviewed(&self, grant: &Grant) {
        if self.json {
            return self.json_value(grant);
        }
        if let Some(review) = &grant.review {
            println!(
                "{}: reviewed {} ({}/{} of {})",
                grant.id,
                review.verdict.as_str(),
                grant.resource,
                grant.role,
                grant.owner
            );
        }
    }

    pub fn requests(&self, list: &RequestList) {
        if self.json {
            return self.json_value(&serde_json::json!({ "mine": list.mine, "awaiting_me": list.awaiting_me }));
        }
        if !list.awaiting_me.is_empty() {
            println!("Waiting for your decision:");
            for request in &list.awaiting_me {
                let glass = if request.break_glass { " [break-glass]" } else { "" };
                println!(
                    "  {}  {}  {}/{} for {}{glass}  \"{}\"  (expires {})",
                    request.id,
                    request.requester,
                    request.resource,
                    request.role,
                    request.duration,
                    request.reason,
                    self.clock(request.pending_until)
                );
            }
            println!("  hourglass approve ID [--comment TEXT]  |  hourglass deny ID [--comment TEXT]");
            println!();
        }
        if list.mine.is_empty() {
            println!("You have filed no requests.");
            return;
        }
        println!("Your requests:");
        for request in &list.mine {
            println!("  {}", self.request_line(request));
        }
    }

    pub fn grants(&self, list: &GrantList) {
        if self.json {
            return self.json_value(&list.grants);
        }
        if list.grants.is_empty() {
            println!("No live grants. Ask for access with `hourglass request`.");
            return;
        }
        println!("{:<14}  {:<28}  {:<8}  {:<9}  LEFT", "GRANT", "ACCESS", "STATE", "UNTIL");
        for grant in &list.grants {
            let left = if grant.state.is_live() {
                list.server_time.until(grant.expires_at).to_string()
            } else {
                String::new()
            };
            let mut flags = String::new();
            if grant.needs_review {
                flags.push_str("  [break-glass]");
            }
            if grant.revocation_pending() {
                flags.push_str("  [revocation pending]");
            }
            println!(
                "{:<14}  {:<28}  {:<8}  {:<9}  {left}{flags}",
                grant.id,
                format!("{}/{}", grant.resource, grant.role),
                grant.state.as_str(),
                self.clock(grant.expires_at),
            );
        }
    }

    pub fn renewal(&self, renewed: &RenewOutcome) {
        if self.json {
            let mut value = serde_json::to_value(&renewed.grant).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("renewal".into(), serde_json::to_value(&renewed.request).unwrap_or(Value::Null));
            }
            return self.json_value(&value);
        }
        let grant = &renewed.grant;
        if renewed.request.state == RequestState::Pending {
            println!("{}", self.request_line(&renewed.request));
            println!("{} keeps its deadline {} until then", grant.id, self.clock(grant.expires_at));
        } else {
            println!("{} renewed: {}/{} until {}", grant.id, grant.resource, grant.role, self.clock(grant.expires_at));
        }
    }

    pub fn revoked(&self, grant: &Grant) {
        if self.json {
            return self.json_value(grant);
        }
        match &grant.revocation {
            Some(revocation) if revocation.status == RevocationStatus::Done => {
                println!("{} revoked: {}/{}; its credential is removed", grant.id, grant.resource, grant.role);
            }
            Some(revocation) => println!(
                "{} revoked: {}/{}; removing its credential failed ({}), retrying in the background",
                grant.id,
                grant.resource,
                grant.role,
                revocation.last_error.as_deref().unwrap_or("no answer")
            ),
            None => println!("{} revoked", grant.id),
        }
    }

    pub fn revoked_all(&self, grants: &[Grant]) {
        if self.json {
            return self.json_value(&grants);
        }
        if grants.is_empty() {
            println!("no live grant matched: nothing to revoke");
        }
        for grant in grants {
            self.revoked(grant);
        }
    }

    pub fn history(&self, records: &[AuditRecord]) {
        if self.json {
            return self.json_value(&records);
        }
        for record in records.iter().rev() {
            let event = &record.event;
            let what = match (event.details.get("resource"), event.details.get("role")) {
                (Some(Value::String(resource)), Some(Value::String(role))) => format!("{resource}/{role}"),
                (Some(Value::String(resource)), _) => resource.clone(),
                _ => String::new(),
            };
            let reason = event.reason.as_deref().map(|r| format!("  \"{r}\"")).unwrap_or_default();
            println!(
                "{}  {:<26} {:<16} {:<24} by {}{reason}",
                self.clock(event.at),
                event.action.as_str(),
                event.target,
                what,
                event.actor
            );
        }
    }
}

fn approvals(rules: &[ApprovalRule]) -> String {
    rules.iter().map(|rule| format!("{} from {}", rule.count, rule.group)).collect::<Vec<_>>().join(" + ")
}

fn remaining(request: &AccessRequest) -> String {
    let count = request.approvals_remaining;
    let noun = if count == 1 { "approval" } else { "approvals" };
    match request.approvals_required.as_slice() {
        [only] => format!("{count} {noun} from {}", only.group),
        rules => format!("{count} {noun} ({})", approvals(rules)),
    }
}

fn deciders(request: &AccessRequest) -> String {
    request.decisions.iter().map(|d| d.approver.as_str()).collect::<Vec<_>>().join(", ")
}
