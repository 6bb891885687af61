//! Cedar policies: parsed per file, validated against [`CEDAR_SCHEMA`],
//! checked for references to resources and roles that do not exist, and
//! sliced by resource so that a decision only evaluates the policies that
//! can apply to it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use hourglass_core::{Principal, Timestamp};
use miette::Diagnostic;

use crate::error::{LineIndex, Problem};
use crate::schema::principal_schema;
use crate::{Action, Resource};

pub(crate) struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

/// The compiled Cedar side of a policy.
pub(crate) struct CedarPolicies {
    /// One policy set per resource: its own policies plus those that apply
    /// to any resource.
    slices: HashMap<String, PolicySet>,
    /// Role and resource entities, built once per load.
    role_entities: HashMap<(String, String), [Entity; 2]>,
    /// The attributes every user entity has (the schema's).
    principal_attributes: BTreeSet<String>,
    authorizer: Authorizer,
    pub count: usize,
}

/// The outcome of one authorization: a decision, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub allowed: bool,
    /// The policies that determined the decision (file#n or their `@id`).
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (they count as not applying).
    pub errors: Vec<String>,
}

impl Authorization {
    pub fn denied(reason: impl Into<String>) -> Self {
        Authorization { allowed: false, policies: Vec::new(), errors: vec![reason.into()] }
    }
}

/// The context of an access decision. See `AccessContext` in the schema.
#[derive(Debug, Clone, Copy)]
pub struct AccessContext<'a> {
    pub requester: &'a str,
    pub duration: hourglass_core::Duration,
    pub reason: &'a str,
    pub ticket: Option<&'a str>,
    pub renewal: bool,
    pub break_glass: bool,
    pub now: Timestamp,
}

impl<'a> AccessContext<'a> {
    /// The context of a filed request, as seen at `now`.
    pub fn of_request(request: &'a hourglass_core::AccessRequest, now: Timestamp) -> Self {
        AccessContext {
            requester: &request.requester,
            duration: request.duration,
            reason: &request.reason,
            ticket: request.ticket.as_deref(),
            renewal: request.renews.is_some(),
            break_glass: request.break_glass,
            now,
        }
    }
}

pub(crate) fn schema(principal_attributes: &BTreeSet<String>) -> Result<Schema, String> {
    Schema::from_cedarschema_str(&principal_schema(principal_attributes))
        .map(|(schema, _warnings)| schema)
        .map_err(|e| e.to_string())
}

impl CedarPolicies {
    pub(crate) fn compile(
        sources: &[Source<'_>],
        resources: &BTreeMap<String, Resource>,
        principal_attributes: &BTreeSet<String>,
        problems: &mut Vec<Problem>,
    ) -> Option<CedarPolicies> {
        let schema = match schema(principal_attributes) {
            Ok(schema) => schema,
            Err(error) => {
                problems.push(Problem { file: "<schema>".into(), line: None, column: None, message: error });
                return None;
            }
        };
        let validator = Validator::new(schema);
        let mut all = Vec::new();
        let mut named: HashMap<String, String> = HashMap::new();
        let before = problems.len();

        for source in sources {
            let lines = LineIndex::new(source.text);
            if let Some((offset, message)) = crate::cedar_limits::too_deep(source.text) {
                let (line, column) = lines.locate(offset);
                problems.push(Problem {
                    file: source.file.to_owned(),
                    line: Some(line),
                    column: Some(column),
                    message,
                });
                continue;
            }
            let parsed = match PolicySet::from_str(source.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    for error in errors.iter() {
                        problems.push(located(source.file, &lines, error, error.to_string()));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(Problem {
                    file: source.file.to_owned(),
                    line: None,
                    column: None,
                    message: "policy templates (?principal, ?resource) are not supported; write static policies".into(),
                });
            }
            let mut file_set = PolicySet::new();
            // Keep the order of the file so that `file#n` means the n-th policy in it.
            let mut policies: Vec<_> = parsed.policies().cloned().collect();
            policies.sort_by_key(|policy| policy_index(policy.id()));
            for (index, policy) in policies.into_iter().enumerate() {
                let id = match policy.annotation("id") {
                    Some(custom) => custom.to_owned(),
                    None => format!("{}#{index}", source.file),
                };
                if let Some(other) = named.insert(id.clone(), source.file.to_owned()) {
                    problems.push(Problem {
                        file: source.file.to_owned(),
                        line: None,
                        column: None,
                        message: format!("policy id \"{id}\" is used twice (also in {other})"),
                    });
                    continue;
                }
                // The parser keeps each policy's exact text: find it to report lines.
                let line = source.text.find(&policy.to_string()).map(|offset| lines.locate(offset).0);
                let policy = policy.new_id(PolicyId::new(&id));
                check_references(&policy, resources, source.file, line, problems);
                if let Err(error) = file_set.add(policy.clone()) {
                    problems.push(Problem {
                        file: source.file.to_owned(),
                        line: None,
                        column: None,
                        message: error.to_string(),
                    });
                    continue;
                }
                all.push(policy);
            }
            let validation = validator.validate(&file_set, ValidationMode::Strict);
            for error in validation.validation_errors() {
                problems.push(located(source.file, &lines, error, error.to_string()));
            }
        }
        if problems.len() > before {
            return None;
        }

        let mut slices: HashMap<String, PolicySet> =
            resources.keys().map(|name| (name.clone(), PolicySet::new())).collect();
        for policy in &all {
            let targets: Vec<String> = match resource_scope(policy) {
                Some(resource) => vec![resource],
                None => resources.keys().cloned().collect(),
            };
            for target in targets {
                if let Some(slice) = slices.get_mut(&target) {
                    // Ids are unique across files (checked above), so adding cannot clash.
                    let _ = slice.add(policy.clone());
                }
            }
        }
        let role_entities = resources
            .values()
            .flat_map(|resource| {
                resource
                    .roles
                    .keys()
                    .map(move |role| ((resource.name.clone(), role.clone()), role_entities(resource, role)))
            })
            .collect();
        Some(CedarPolicies {
            slices,
            role_entities,
            principal_attributes: principal_attributes.clone(),
            authorizer: Authorizer::new(),
            count: all.len(),
        })
    }

    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &str,
        role: &str,
        context: Context,
    ) -> Authorization {
        let [decision] = self.authorize_each(principal, [action], resource, role, context);
        decision
    }

    /// Decides several actions of one principal on one role in one context,
    /// building the entities once.
    pub(crate) fn authorize_each<const N: usize>(
        &self,
        principal: &Principal,
        actions: [Action; N],
        resource: &str,
        role: &str,
        context: Context,
    ) -> [Authorization; N] {
        let (Some(slice), Some([role_entity, resource_entity])) =
            (self.slices.get(resource), self.role_entities.get(&(resource.to_owned(), role.to_owned())))
        else {
            return actions.map(|_| Authorization::denied(format!("unknown resource or role {resource}/{role}")));
        };
        let user = user_entity(principal, &self.principal_attributes);
        let user_uid = user.uid();
        let entities = match Entities::from_entities([user, role_entity.clone(), resource_entity.clone()], None) {
            Ok(entities) => entities,
            Err(error) => return actions.map(|_| Authorization::denied(error.to_string())),
        };
        actions.map(|action| {
            match Request::new(user_uid.clone(), action_uid(action), role_entity.uid(), context.clone(), None) {
                Ok(request) => {
                    let response = self.authorizer.is_authorized(&request, slice, &entities);
                    Authorization {
                        allowed: response.decision() == Decision::Allow,
                        policies: response.diagnostics().reason().map(ToString::to_string).collect(),
                        errors: response.diagnostics().errors().map(ToString::to_string).collect(),
                    }
                }
                Err(error) => Authorization::denied(error.to_string()),
            }
        })
    }
}

pub(crate) fn access_context(context: &AccessContext<'_>) -> Result<Context, String> {
    let at = context.now.to_offset_date_time();
    let seconds = i64::try_from(context.duration.as_secs()).unwrap_or(i64::MAX);
    Context::from_pairs([
        ("requester".to_owned(), RestrictedExpression::new_string(context.requester.to_owned())),
        ("duration_seconds".to_owned(), RestrictedExpression::new_long(seconds)),
        ("reason".to_owned(), RestrictedExpression::new_string(context.reason.to_owned())),
        ("ticket".to_owned(), RestrictedExpression::new_string(context.ticket.unwrap_or_default().to_owned())),
        ("has_ticket".to_owned(), RestrictedExpression::new_bool(context.ticket.is_some_and(|t| !t.trim().is_empty()))),
        ("renewal".to_owned(), RestrictedExpression::new_bool(context.renewal)),
        ("break_glass".to_owned(), RestrictedExpression::new_bool(context.break_glass)),
        ("utc_hour".to_owned(), RestrictedExpression::new_long(i64::from(at.hour()))),
        ("utc_weekday".to_owned(), RestrictedExpression::new_long(i64::from(at.weekday().number_from_monday()))),
    ])
    .map_err(|e| e.to_string())
}

pub(crate) fn owner_context(owner: &str) -> Result<Context, String> {
    Context::from_pairs([("owner".to_owned(), RestrictedExpression::new_string(owner.to_owned()))])
        .map_err(|e| e.to_string())
}

/// The schema's entity types, parsed once: `EntityTypeName::from_str` runs
/// Cedar's parser, which cost more than the rest of building a decision's
/// request.
struct EntityTypes {
    user: EntityTypeName,
    group: EntityTypeName,
    action: EntityTypeName,
    role: EntityTypeName,
    resource: EntityTypeName,
}

static TYPES: LazyLock<EntityTypes> = LazyLock::new(|| EntityTypes {
    user: entity_type("User"),
    group: entity_type("Group"),
    action: entity_type("Action"),
    role: entity_type("Role"),
    resource: entity_type("Resource"),
});

fn entity_type(name: &str) -> EntityTypeName {
    // INVARIANT: the type names are the schema's, which are valid identifiers.
    EntityTypeName::from_str(name).unwrap_or_else(|_| unreachable_type())
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

#[allow(clippy::panic)]
fn unreachable_type() -> EntityTypeName {
    panic!("schema entity type names are valid Cedar identifiers")
}

fn action_uid(action: Action) -> EntityUid {
    uid(&TYPES.action, action.as_str())
}

/// The principal as a Cedar user: in its groups, with each schema
/// attribute its token's value or empty.
fn user_entity(principal: &Principal, attributes: &BTreeSet<String>) -> Entity {
    let parents: HashSet<EntityUid> = principal.groups.iter().map(|group| uid(&TYPES.group, group)).collect();
    let user = uid(&TYPES.user, &principal.id);
    let values: HashMap<String, RestrictedExpression> = attributes
        .iter()
        .map(|name| {
            let value = principal.attributes.get(name).cloned().unwrap_or_default();
            (name.clone(), RestrictedExpression::new_string(value))
        })
        .collect();
    // Attribute values are string literals, which always evaluate.
    Entity::new(user.clone(), values, parents.clone()).unwrap_or_else(|_| Entity::new_no_attrs(user, parents))
}

fn role_entities(resource: &Resource, role: &str) -> [Entity; 2] {
    let labels =
        || RestrictedExpression::new_set(resource.labels.iter().map(|l| RestrictedExpression::new_string(l.clone())));
    let provider = || RestrictedExpression::new_string(resource.provider.clone());
    let resource_uid = uid(&TYPES.resource, &resource.name);
    let role_attrs = HashMap::from([
        ("name".to_owned(), RestrictedExpression::new_string(role.to_owned())),
        ("resource_name".to_owned(), RestrictedExpression::new_string(resource.name.clone())),
        ("provider".to_owned(), provider()),
        ("labels".to_owned(), labels()),
    ]);
    let resource_attrs = HashMap::from([("provider".to_owned(), provider()), ("labels".to_owned(), labels())]);
    let role_uid = uid(&TYPES.role, &role_id(&resource.name, role));
    // Attribute values are literals, which always evaluate.
    let role_entity = Entity::new(role_uid.clone(), role_attrs, HashSet::from([resource_uid.clone()]))
        .unwrap_or_else(|_| Entity::new_no_attrs(role_uid, HashSet::new()));
    let resource_entity = Entity::new(resource_uid.clone(), resource_attrs, HashSet::new())
        .unwrap_or_else(|_| Entity::new_no_attrs(resource_uid, HashSet::new()));
    [role_entity, resource_entity]
}

/// `Role::"orders-db/read"`: roles are named within their resource.
pub fn role_id(resource: &str, role: &str) -> String {
    format!("{resource}/{role}")
}

/// `policy0`, `policy1`, … as assigned by the parser, in file order.
fn policy_index(id: &PolicyId) -> usize {
    id.to_string().trim_start_matches("policy").parse().unwrap_or(usize::MAX)
}

/// The one resource a policy's scope limits it to, if any.
fn resource_scope(policy: &cedar_policy::Policy) -> Option<String> {
    use cedar_policy::ResourceConstraint;
    let entity = match policy.resource_constraint() {
        ResourceConstraint::Eq(entity) | ResourceConstraint::In(entity) | ResourceConstraint::IsIn(_, entity) => entity,
        ResourceConstraint::Any | ResourceConstraint::Is(_) => return None,
    };
    let id = entity.id().unescaped().to_owned();
    match entity.type_name().to_string().as_str() {
        "Resource" => Some(id),
        "Role" => id.split_once('/').map(|(resource, _)| resource.to_owned()),
        _ => None,
    }
}

/// Every `Resource::"…"` and `Role::"…"` a policy mentions must exist:
/// otherwise a typo would silently grant nothing (or, in a forbid, forbid
/// nothing).
fn check_references(
    policy: &cedar_policy::Policy,
    resources: &BTreeMap<String, Resource>,
    file: &str,
    line: Option<usize>,
    problems: &mut Vec<Problem>,
) {
    let Ok(json) = policy.to_json() else { return };
    let mut mentioned = BTreeSet::new();
    collect_entities(&json, &mut mentioned);
    for (type_name, id) in mentioned {
        let known = match type_name.as_str() {
            "Resource" => resources.contains_key(&id),
            "Role" => id
                .split_once('/')
                .and_then(|(resource, role)| resources.get(resource).map(|r| r.roles.contains_key(role)))
                .unwrap_or(false),
            _ => true,
        };
        if !known {
            let message = if type_name == "Role" {
                format!("Role::\"{id}\" is not a role in hourglass.toml (roles are written Role::\"resource/role\")")
            } else {
                format!("Resource::\"{id}\" is not a resource in hourglass.toml")
            };
            problems.push(Problem { file: file.to_owned(), line, column: None, message });
        }
    }
}

fn collect_entities(value: &serde_json::Value, out: &mut BTreeSet<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(type_name)), Some(serde_json::Value::String(id))) =
                (map.get("type"), map.get("id"))
            {
                out.insert((type_name.clone(), id.clone()));
            }
            map.values().for_each(|v| collect_entities(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_entities(v, out)),
        _ => {}
    }
}

fn located(file: &str, lines: &LineIndex, diagnostic: &dyn Diagnostic, message: String) -> Problem {
    let offset = diagnostic.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
    let (line, column) = match offset {
        Some(offset) => {
            let (line, column) = lines.locate(offset);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let message = match diagnostic.help() {
        Some(help) => format!("{message} ({help})"),
        None => message,
    };
    Problem { file: file.to_owned(), line, column, message }
}
