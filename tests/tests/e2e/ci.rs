//! A CI pipeline as a principal, end to end: its OIDC token (from a real
//! provider, npm oidc-provider, as GitHub Actions would sign one) exchanged
//! for a broker session, its access approved by policy for its repository
//! only, and the credential used at the resource server; pipelines of other
//! repositories and organisations signed by the same issuer get less.

use std::collections::BTreeMap;
use std::process::Command;

use hourglass_e2e::oidc::OidcProvider;
use hourglass_e2e::{DevBroker, Run, bin};
use serde_json::{Value, json};

/// The issuer trusted for pipelines of the `acme` organisation only, its
/// repositories' pipelines in group `pipelines`, their repository readable
/// by policy; a deploy API whose role is approved by an SRE, or at once for
/// the `acme/deploy` repository.
fn pipeline_policy(dir: &std::path::Path, issuer: &str) {
    let toml = format!(
        r#"[broker]
data_dir = "data"

[[broker.issuers]]
issuer = "{issuer}"
audience = "hourglass"
kind = "machine"
id_claim = "sub"
namespace = "ci"
require = {{ repository_owner = "acme", ref = ["refs/heads/main", "refs/tags/v*"] }}
groups_from = [
    {{ claim = "repository", value = "acme/*", group = "pipelines" }},
    {{ claim = "repository", value = "acme/deploy", group = "sre" }},
]
attributes = ["repository"]

[workflows.sre-review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.deploy-api]
provider = "token"
workflow = "sre-review"
settings = {{ audience = "https://deploy.acme.example", env_prefix = "DEPLOY_API" }}

[resources.deploy-api.roles.deploy]
"#
    );
    let cedar = r#"
@id("pipelines-may-request")
permit (principal in Group::"pipelines", action == Action::"request", resource);

@id("the-deploy-repository-deploys-at-once")
permit (principal in Group::"pipelines", action == Action::"auto_approve", resource == Role::"deploy-api/deploy")
when { principal.repository == "acme/deploy" };

@id("sre-approve")
permit (principal in Group::"sre", action == Action::"approve", resource);
"#;
    std::fs::write(dir.join("hourglass.toml"), toml).expect("hourglass.toml");
    std::fs::write(dir.join("pipelines.cedar"), cedar).expect("pipelines.cedar");
}

/// `POST /v1/auth/token`: the RFC 8693 exchange of `token`; status and body.
fn exchange(broker: &DevBroker, token: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ];
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/auth/token", broker.url))
        .form(&form)
        .send()
        .expect("the broker answers");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// `hourglass ARGS --json` with `session` as the pipeline's token.
fn run_as_pipeline(broker: &DevBroker, session: &str, args: &[&str]) -> Run {
    let mut command = Command::new(bin("hourglass"));
    command.args(args).arg("--json").env("HOURGLASS_TOKEN", session);
    broker.point_at(&mut command);
    Run::from(command.output().expect("hourglass runs"))
}

/// [`run_as_pipeline`], which must succeed: its JSON.
fn as_pipeline(broker: &DevBroker, session: &str, args: &[&str]) -> Value {
    let run = run_as_pipeline(broker, session, args);
    assert!(run.ok, "hourglass {args:?} failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", run.stdout))
}

#[test]
fn ci_pipeline_of_the_named_repository_is_approved_by_policy_and_other_repositories_are_not() {
    let idp = OidcProvider::start();
    let config = tempfile::tempdir().expect("a policy directory");
    pipeline_policy(config.path(), &idp.issuer);
    let broker = DevBroker::serve(config.path(), BTreeMap::new());

    // acme/deploy's pipeline: its token is exchanged for a session whose
    // principal is in the issuer's namespace, with its repository.
    let (status, session) = exchange(&broker, &idp.pipeline_token("ci-acme-deploy"));
    assert_eq!(status, 200, "the pipeline's token is exchanged: {session}");
    let deploy = session["access_token"].as_str().expect("a session").to_owned();
    let me = as_pipeline(&broker, &deploy, &["whoami"]);
    assert_eq!(me["id"], "ci:ci-acme-deploy", "namespaced by its issuer: {me}");
    assert_eq!(me["groups"], json!(["pipelines", "sre"]), "its groups come from its repository claim: {me}");
    assert_eq!(me["attributes"], json!({ "repository": "acme/deploy" }), "{me}");

    // Its request is approved at once by the policy naming its repository,
    // and the credential it gets is one the deploy API accepts.
    let filed = as_pipeline(
        &broker,
        &deploy,
        &["request", "deploy-api", "--role", "deploy", "--for", "10m", "--reason", "release 1.4"],
    );
    assert_eq!(filed["state"], "approved", "auto-approved for acme/deploy: {filed}");
    let grant = filed["grant"]["id"].as_str().or(filed["grant_id"].as_str()).expect("a grant").to_owned();
    let mut exec = Command::new(bin("hourglass"));
    exec.args(["exec", &grant, "--", "sh", "-c", "printf %s \"$DEPLOY_API_TOKEN\""]).env("HOURGLASS_TOKEN", &deploy);
    broker.point_at(&mut exec);
    let run = Run::from(exec.output().expect("hourglass runs"));
    assert!(run.ok && !run.stdout.is_empty(), "the credential reaches the pipeline's command: {}", run.stderr);
    let token = run.stdout;
    let introspected: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/introspect", broker.url))
        .form(&[("token", token.as_str()), ("audience", "https://deploy.acme.example")])
        .send()
        .expect("the broker answers")
        .json()
        .expect("JSON");
    assert_eq!(introspected["active"], true, "the deploy API accepts the pipeline's credential: {introspected}");
    assert_eq!(introspected["sub"], "ci:ci-acme-deploy", "{introspected}");

    // acme/web's pipeline, signed by the same issuer: it may ask, but the
    // policy approves only acme/deploy at once; it waits for an SRE.
    let (status, session) = exchange(&broker, &idp.pipeline_token("ci-acme-web"));
    assert_eq!(status, 200, "{session}");
    let web = session["access_token"].as_str().expect("a session").to_owned();
    let waiting = as_pipeline(
        &broker,
        &web,
        &["request", "deploy-api", "--role", "deploy", "--for", "10m", "--reason", "release"],
    );
    assert_eq!(waiting["state"], "pending", "another repository is not approved by policy: {waiting}");
    // acme/deploy's pipeline is in `sre` here, which Cedar lets approve:
    // still, a machine never decides; a person does.
    let pending = waiting["id"].as_str().expect("a request id");
    let approve = run_as_pipeline(&broker, &deploy, &["approve", pending]);
    assert!(!approve.ok && approve.stderr.contains("a machine's identity cannot approve"), "{}", approve.stderr);

    // Another organisation's pipeline, same issuer: no session at all, and
    // its raw token is no bearer either.
    let evil = idp.pipeline_token("ci-evil-deploy");
    let (status, refused) = exchange(&broker, &evil);
    assert_eq!(status, 401, "another owner's token is refused: {refused}");
    assert!(refused.to_string().contains("`repository_owner` claim"), "the refusal names the claim: {refused}");
    let (status, _) = broker.http("GET", "/v1/whoami", Some(&evil), None);
    assert_eq!(status, 401, "nor is it accepted as a bearer token");
}
