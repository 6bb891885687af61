//! Policy as code: `hourglass.toml` says what can be requested and how it is
//! approved; Cedar policies say who may request, approve, auto-approve, break
//! glass, and act on others' grants.
//!
//! Loading validates everything and reports every problem with its file and
//! line; a loaded [`Policy`] is immutable and answers decisions without I/O
//! and without reading the clock (`now` is passed in).

mod cedar;
mod cedar_limits;
mod error;
mod schema;
mod toml_model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hourglass_core::approval::is_eligible_approver;
use hourglass_core::authentication::FreshAuthentication;
use hourglass_core::{AccessRequest, ApprovalRule, Duration, LifetimeLimits, Principal, Timestamp};
use sha2::{Digest, Sha256};

pub use cedar::{AccessContext, Authorization, role_id};
pub use error::{Error, Problem, Result};
pub use schema::{CEDAR_SCHEMA, principal_schema};

use crate::cedar::{CedarPolicies, Source};
use crate::error::LineIndex;
use crate::toml_model::{Bounds, FileModel};

/// The policy file every policy directory has.
pub const POLICY_FILE: &str = "hourglass.toml";

/// What a principal can be allowed to do, as named in Cedar (`Action::"approve"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Request,
    AutoApprove,
    BreakGlass,
    Approve,
    /// Revoke somebody else's grant.
    Revoke,
    /// See somebody else's grants and history.
    View,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::AutoApprove => "auto_approve",
            Action::BreakGlass => "break_glass",
            Action::Approve => "approve",
            Action::Revoke => "revoke",
            Action::View => "view",
        }
    }
}

/// A validated policy. Cheap to share behind an `Arc`; replaced whole on reload.
pub struct Policy {
    pub resources: BTreeMap<String, Resource>,
    pub workflows: BTreeMap<String, Workflow>,
    /// The `[broker]` table, for `hourglassd` to read.
    pub broker_settings: toml::Table,
    /// SHA-256 over every file: which policy made a decision.
    pub digest: String,
    /// Things that load but are probably not what was meant.
    pub warnings: Vec<Problem>,
    pub cedar_policy_count: usize,
    cedar: CedarPolicies,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: String,
    pub approvals: Vec<ApprovalRule>,
    /// Channels this workflow's approvers hear of requests on.
    pub notify: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub description: String,
    pub provider: String,
    pub labels: Vec<String>,
    pub settings: toml::Table,
    pub roles: BTreeMap<String, Role>,
    /// Where the resource is declared, for errors about its settings.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub workflow: String,
    pub approvals: Vec<ApprovalRule>,
    pub pending_timeout: Duration,
    pub limits: LifetimeLimits,
    pub default_duration: Duration,
    pub reason_required: bool,
    pub ticket_required: bool,
    /// Channels that announce a request for this role to its approvers:
    /// the role's `notify` (layered role > resource > `[defaults]`) and
    /// its workflow's, each once.
    pub notify: Vec<String>,
    /// Channels that tell the requester how their request and grant went.
    pub notify_requester: Vec<String>,
    /// How recently, and how, an approver must have logged in to decide.
    pub fresh_authentication: FreshAuthentication,
    pub settings: toml::Table,
    pub line: usize,
}

/// A resource or role that is not in the policy: no access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("unknown resource \"{name}\" (known: {known})")]
    Resource { name: String, known: String },
    #[error("resource \"{resource}\" has no role \"{role}\" (it offers: {known})")]
    Role { resource: String, role: String, known: String },
}

impl Policy {
    /// Reads `hourglass.toml` and every `*.cedar` file under `dir`.
    pub fn load_dir(dir: &Path) -> Result<Policy> {
        Policy::from_sources(read_sources(dir)?)
    }

    /// Builds a policy from `(path relative to the directory, text)` pairs.
    pub fn from_sources(sources: Vec<(String, String)>) -> Result<Policy> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let digest = digest(&sources);
        let Some((_, toml_text)) = sources.iter().find(|(name, _)| name == POLICY_FILE) else {
            return Err(Error::Invalid(vec![Problem {
                file: POLICY_FILE.into(),
                line: None,
                column: None,
                message: "missing: a policy directory needs hourglass.toml (no policy, no access)".into(),
            }]));
        };
        let model = parse_toml(toml_text)?;
        let lines = LineIndex::new(toml_text);
        let workflows = build_workflows(&model, &lines, &mut problems);
        let resources = build_resources(&model, &workflows, &lines, &mut problems);

        let cedar_sources: Vec<Source<'_>> = sources
            .iter()
            .filter(|(name, _)| name.ends_with(".cedar"))
            .map(|(file, text)| Source { file, text })
            .collect();
        if cedar_sources.is_empty() {
            warnings.push(Problem {
                file: "*.cedar".into(),
                line: None,
                column: None,
                message: "no Cedar policies: nobody may request anything".into(),
            });
        }
        let attributes = principal_attributes(model.broker.as_ref(), &mut problems);
        let cedar = CedarPolicies::compile(&cedar_sources, &resources, &attributes, &mut problems);
        match cedar {
            Some(cedar) if problems.is_empty() => Ok(Policy {
                resources,
                workflows,
                broker_settings: model.broker.unwrap_or_default(),
                digest,
                warnings,
                cedar_policy_count: cedar.count,
                cedar,
            }),
            _ => Err(Error::Invalid(problems)),
        }
    }

    pub fn resource(&self, name: &str) -> std::result::Result<&Resource, Unknown> {
        self.resources.get(name).ok_or_else(|| Unknown::Resource {
            name: name.to_owned(),
            known: self.resources.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn role(&self, resource: &str, role: &str) -> std::result::Result<&Role, Unknown> {
        let found = self.resource(resource)?;
        found.roles.get(role).ok_or_else(|| Unknown::Role {
            resource: resource.to_owned(),
            role: role.to_owned(),
            known: found.roles.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// Decides `request`, `auto_approve`, `break_glass` or `approve`.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &str,
        role: &str,
        context: &AccessContext<'_>,
    ) -> Authorization {
        let [decision] = self.authorize_each(principal, [action], resource, role, context);
        decision
    }

    /// [`Policy::authorize`] for several actions at once (a request and its
    /// automatic approval): the principal's entities are built once.
    pub fn authorize_each<const N: usize>(
        &self,
        principal: &Principal,
        actions: [Action; N],
        resource: &str,
        role: &str,
        context: &AccessContext<'_>,
    ) -> [Authorization; N] {
        match cedar::access_context(context) {
            Ok(context) => self.cedar.authorize_each(principal, actions, resource, role, context),
            Err(error) => actions.map(|_| Authorization::denied(error.clone())),
        }
    }

    /// Decides `revoke` or `view` on a grant owned by `owner`. Owners act on
    /// their own grants without asking policy.
    pub fn authorize_on_grant(
        &self,
        principal: &Principal,
        action: Action,
        resource: &str,
        role: &str,
        owner: &str,
    ) -> Authorization {
        if principal.id == owner {
            return Authorization { allowed: true, policies: vec!["owner".into()], errors: Vec::new() };
        }
        match cedar::owner_context(owner) {
            Ok(context) => self.cedar.authorize(principal, action, resource, role, context),
            Err(error) => Authorization::denied(error),
        }
    }

    /// Whether `principal` may decide `request` now: not its requester, in a
    /// group the role's workflow draws approvers from, and allowed to approve
    /// by Cedar. The one rule behind the approver's inbox, the event stream
    /// and the decision itself.
    pub fn may_decide(&self, principal: &Principal, request: &AccessRequest, now: Timestamp) -> bool {
        if principal.id == request.requester {
            return false;
        }
        let Ok(role) = self.role(&request.resource, &request.role) else { return false };
        if !is_eligible_approver(&role.approvals, principal.groups.iter().map(String::as_str)) {
            return false;
        }
        let context = AccessContext::of_request(request, now);
        self.authorize(principal, Action::Approve, &request.resource, &request.role, &context).allowed
    }
}

fn parse_toml(text: &str) -> Result<FileModel> {
    toml::from_str(text).map_err(|error| {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = LineIndex::new(text).locate(span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Error::Invalid(vec![Problem {
            file: POLICY_FILE.into(),
            line,
            column,
            message: error.message().trim_end().to_owned(),
        }])
    })
}

fn problem_at(lines: &LineIndex, offset: usize, message: String) -> Problem {
    let (line, _) = lines.locate(offset);
    Problem { file: POLICY_FILE.into(), line: Some(line), column: None, message }
}

/// Resource, role and workflow names end up in Cedar ids, environment
/// variable names and database role names: keep them plain.
fn check_name(kind: &str, name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{kind} name \"{name}\" must be 1-48 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// The claims `[[broker.issuers]]` expose to policies (`attributes =
/// ["repository"]`): every user's attributes in the Cedar schema. Read
/// here, from the `[broker]` table the broker reads the rest of, because
/// policies are validated against them.
fn principal_attributes(broker: Option<&toml::Table>, problems: &mut Vec<Problem>) -> BTreeSet<String> {
    let issuers = broker.and_then(|broker| broker.get("issuers")).and_then(toml::Value::as_array);
    let names = issuers.into_iter().flatten().filter_map(|issuer| issuer.get("attributes")?.as_array()).flatten();
    let mut attributes = BTreeSet::new();
    for name in names {
        let name = name.as_str().unwrap_or_default();
        let readable = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if readable {
            attributes.insert(name.to_owned());
        } else {
            problems.push(Problem {
                file: POLICY_FILE.into(),
                line: None,
                column: None,
                message: format!(
                    "[[broker.issuers]] attributes: {name:?} is not a name a policy can read as principal.NAME \
                     (letters, digits and _, not starting with a digit)"
                ),
            });
        }
    }
    attributes
}

fn build_workflows(model: &FileModel, lines: &LineIndex, problems: &mut Vec<Problem>) -> BTreeMap<String, Workflow> {
    let mut workflows = BTreeMap::new();
    for (name, spanned) in &model.workflows {
        let at = spanned.span().start;
        let workflow = spanned.get_ref();
        if let Err(message) = check_name("workflow", name) {
            problems.push(problem_at(lines, at, message));
            continue;
        }
        if workflow.approvals.iter().all(|rule| rule.count == 0) {
            problems.push(problem_at(
                lines,
                at,
                format!("workflow \"{name}\" needs at least one approval (use an auto_approve Cedar policy for access without one)"),
            ));
        }
        for rule in &workflow.approvals {
            if rule.group.trim().is_empty() {
                problems.push(problem_at(
                    lines,
                    at,
                    format!("workflow \"{name}\" has an approval rule with an empty group"),
                ));
            }
        }
        workflows.insert(
            name.clone(),
            Workflow {
                name: name.clone(),
                description: workflow.description.clone(),
                approvals: workflow.approvals.clone(),
                notify: workflow.notify.clone(),
            },
        );
    }
    workflows
}

/// Built-in settings under `[defaults]`.
fn builtin_bounds() -> Bounds {
    Bounds {
        workflow: None,
        min_duration: Some(Duration::from_mins(1)),
        max_duration: Some(Duration::from_hours(1)),
        default_duration: None,
        max_total: None,
        renewals_without_approval: Some(1),
        pending_timeout: None,
        reason_required: Some(true),
        ticket_required: Some(false),
        notify: None,
        notify_requester: None,
        approval_max_auth_age: None,
        approval_auth_methods: None,
    }
}

fn build_resources(
    model: &FileModel,
    workflows: &BTreeMap<String, Workflow>,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Resource> {
    let defaults = model.defaults.or(&builtin_bounds());
    let mut resources = BTreeMap::new();
    for (name, spanned) in &model.resources {
        let at = spanned.span().start;
        let resource = spanned.get_ref();
        if let Err(message) = check_name("resource", name) {
            problems.push(problem_at(lines, at, message));
            continue;
        }
        if resource.provider.trim().is_empty() {
            problems.push(problem_at(
                lines,
                at,
                format!("resource \"{name}\" needs a provider (e.g. provider = \"token\")"),
            ));
        }
        if resource.roles.is_empty() {
            problems.push(problem_at(lines, at, format!("resource \"{name}\" offers no roles")));
        }
        let resource_bounds = resource.bounds().or(&defaults);
        let mut roles = BTreeMap::new();
        for (role_name, spanned_role) in &resource.roles {
            let role_at = spanned_role.span().start;
            let role_model = spanned_role.get_ref();
            let here = format!("role \"{name}/{role_name}\"");
            if let Err(message) = check_name("role", role_name) {
                problems.push(problem_at(lines, role_at, message));
                continue;
            }
            match resolve_role(&role_model.bounds().or(&resource_bounds), model, workflows) {
                Ok(resolved) => {
                    roles.insert(
                        role_name.clone(),
                        Role {
                            name: role_name.clone(),
                            description: role_model.description.clone().unwrap_or_default(),
                            settings: role_model.settings.clone().unwrap_or_default(),
                            line: lines.locate(role_at).0,
                            ..resolved
                        },
                    );
                }
                Err(message) => problems.push(problem_at(lines, role_at, format!("{here}: {message}"))),
            }
        }
        resources.insert(
            name.clone(),
            Resource {
                name: name.clone(),
                description: resource.description.clone().unwrap_or_default(),
                provider: resource.provider.clone(),
                labels: resource.labels.clone().unwrap_or_default(),
                settings: resource.settings.clone().unwrap_or_default(),
                roles,
                line: lines.locate(at).0,
            },
        );
    }
    resources
}

fn resolve_role(
    bounds: &Bounds,
    model: &FileModel,
    workflows: &BTreeMap<String, Workflow>,
) -> std::result::Result<Role, String> {
    let Some(workflow_name) = bounds.workflow.clone() else {
        return Err("no workflow: set `workflow = \"...\"` on the role, its resource or [defaults]".into());
    };
    let Some(workflow) = workflows.get(&workflow_name) else {
        let known = workflows.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(format!("names unknown workflow \"{workflow_name}\" (defined: {known})"));
    };
    let workflow_timeout = model.workflows.get(&workflow_name).and_then(|w| w.get_ref().pending_timeout);
    // INVARIANT: builtin_bounds() sets every field read with unwrap_or here.
    let min_duration = bounds.min_duration.unwrap_or(Duration::from_mins(1));
    let max_duration = bounds.max_duration.unwrap_or(Duration::from_hours(1));
    let default_duration = bounds.default_duration.unwrap_or_else(|| max_duration.min(Duration::from_hours(1)));
    let max_total = bounds.max_total.unwrap_or_else(|| max_duration.max(Duration::from_hours(8)));
    let pending_timeout = bounds.pending_timeout.or(workflow_timeout).unwrap_or(Duration::from_hours(1));
    if min_duration.is_zero() {
        return Err("min_duration must be at least 1s".into());
    }
    if min_duration > max_duration {
        return Err(format!("min_duration {min_duration} is longer than max_duration {max_duration}"));
    }
    if default_duration < min_duration || default_duration > max_duration {
        return Err(format!("default_duration {default_duration} is outside {min_duration}..{max_duration}"));
    }
    if max_total < max_duration {
        return Err(format!("max_total {max_total} is shorter than max_duration {max_duration}"));
    }
    if pending_timeout.is_zero() {
        return Err("pending_timeout must be at least 1s".into());
    }
    let mut notify = bounds.notify.clone().unwrap_or_default();
    notify.extend(workflow.notify.iter().cloned());
    let notify_requester = bounds.notify_requester.clone().unwrap_or_default();
    if let Some(bad) = notify.iter().chain(&notify_requester).find(|name| check_name("channel", name).is_err()) {
        return Err(check_name("channel", bad).err().unwrap_or_default());
    }
    let mut seen = BTreeSet::new();
    notify.retain(|name| seen.insert(name.clone()));
    if bounds.approval_max_auth_age.is_some_and(|age| age.is_zero()) {
        return Err("approval_max_auth_age must be at least 1s (a login cannot be younger than the click)".into());
    }
    Ok(Role {
        name: String::new(),
        description: String::new(),
        workflow: workflow_name,
        approvals: workflow.approvals.clone(),
        pending_timeout,
        limits: LifetimeLimits {
            min_duration,
            max_duration,
            max_total,
            renewals_without_approval: bounds.renewals_without_approval.unwrap_or(1),
        },
        default_duration,
        reason_required: bounds.reason_required.unwrap_or(true),
        ticket_required: bounds.ticket_required.unwrap_or(false),
        notify,
        notify_requester,
        fresh_authentication: FreshAuthentication {
            max_age: bounds.approval_max_auth_age,
            methods: bounds.approval_auth_methods.clone().unwrap_or_default(),
        },
        settings: toml::Table::new(),
        line: 0,
    })
}

fn digest(sources: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = sources.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (name, text) in sorted {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hourglass_core::audit::to_hex(&hasher.finalize())
}

/// `hourglass.toml` and every `*.cedar` below `dir` (hidden entries skipped),
/// as `(relative path, text)`, sorted by path.
pub fn read_sources(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut sources = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|source| Error::Io { path: current.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io { path: current.clone(), source })?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
            if relative == POLICY_FILE || name.ends_with(".cedar") {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
                sources.push((relative, text));
            }
        }
    }
    sources.sort();
    Ok(sources)
}
