//! The refusals every operation of a kind can answer, written into the
//! OpenAPI document once rather than in each handler's annotation: a token
//! is checked and a rate limit counted on every authenticated operation, a
//! body is read and bounded wherever there is one, an id is parsed wherever
//! the path has one. schemathesis found these answers undocumented
//! (`openapi_schemathesis_finds_no_5xx_or_schema_violation`); an operation
//! added later gets them without anyone remembering to.
//!
//! An operation's own description of a status, where it has one, is kept.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Response, ResponseBuilder};

/// Adds the common refusals to every operation of `openapi`.
pub(super) fn document(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            document_operation(operation);
        }
    }
}

fn document_operation(operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|security| !security.is_empty());
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_path_id = parameters.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_query = parameters.iter().any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: fn() -> Response| {
        responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(response()));
    };
    if has_body || has_path_id || has_query {
        add("400", || {
            refusal("malformed input: a body, id or query parameter that cannot be read (`invalid_request`)")
        });
    }
    if authenticated {
        add("401", || {
            refusal("no bearer token, or one refused: expired, untrusted issuer, another audience, bad signature")
        });
    }
    if has_path_id {
        add("404", || refusal("no such request or grant (`not_found`)"));
    }
    if has_body {
        add("413", || refusal("the body is larger than 64 KiB (`payload_too_large`)"));
    }
    if authenticated {
        add("429", rate_limited);
    }
}

fn refusal(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ApiError"))))
        .build()
}

fn rate_limited() -> Response {
    let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).build();
    ResponseBuilder::new()
        .description("too many calls by this principal (`rate_limited`), or a limit reached (`limit_reached`)")
        .content("application/json", Content::new(Some(Ref::from_schema_name("ApiError"))))
        .header("Retry-After", Header::new(seconds))
        .build()
}
