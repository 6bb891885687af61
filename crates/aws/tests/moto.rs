//! The client against a real AWS API server: moto, with IAM authentication
//! on, so every call after setup must carry a SigV4 signature moto
//! verifies, by a key moto knows, allowed by IAM policy.
//!
//! Two servers, each started once per test binary: one with
//! authentication (STS, IAM), one without (web identity, whose unsigned
//! call moto 5.2.6 cannot authenticate; instance metadata; container
//! credentials). A shell between the test process and each server kills the
//! server when the test process ends and its stdin pipe closes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hourglass_aws::{
    AssumeRole, CredentialChain, CredentialSource, Credentials, Endpoints, Env, Error, Iam, Sts, parse_role_arn,
};
use time::OffsetDateTime;

const ACCOUNT: &str = "123456789012";
/// The setup script's calls, made before authentication starts.
const SETUP_CALLS: u32 = 5;
const SETUP: &str = r#"
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="hourglass-broker")
iam.put_user_policy(UserName="hourglass-broker", PolicyName="broker", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole", "iam:*"], "Resource": "*"}]}))
key = iam.create_access_key(UserName="hourglass-broker")["AccessKey"]
def trust(principal):
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]})
iam.create_role(RoleName="operator", AssumeRolePolicyDocument=trust("arn:aws:iam::123456789012:user/hourglass-broker"))
iam.create_role(RoleName="stranger", AssumeRolePolicyDocument=trust("arn:aws:iam::123456789012:user/someone-else"))
print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
"#;

struct Moto {
    url: String,
    /// The `hourglass-broker` user's key (authenticated server only).
    broker: Option<Credentials>,
    /// Held so its stdin stays open while the tests run.
    _guard: Mutex<Child>,
}

fn venv() -> PathBuf {
    match std::env::var_os("HOURGLASS_MOTO_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hourglass/moto"),
    }
}

fn start(authenticated: bool) -> Moto {
    let venv = venv();
    let server = venv.join("bin/moto_server");
    assert!(
        server.exists(),
        "{} is missing: run scripts/setup.sh, which installs moto[server] in a venv there \
         (or set HOURGLASS_MOTO_VENV to one)",
        server.display()
    );
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & server=$!; cat >/dev/null; kill "$server""#)
        .arg(&server)
        .arg(port.to_string())
        .stdin(Stdio::piped());
    if authenticated {
        command.env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_CALLS.to_string());
    } else {
        command.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
    }
    let guard = command.spawn().expect("sh starts moto_server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen on {url} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let broker = authenticated.then(|| {
        let output = Command::new(venv.join("bin/python")).arg("-c").arg(SETUP).arg(&url).output().unwrap();
        assert!(output.status.success(), "moto setup failed: {}", String::from_utf8_lossy(&output.stderr));
        let key: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        Credentials::new(key["id"].as_str().unwrap(), key["secret"].as_str().unwrap(), None)
    });
    Moto { url, broker, _guard: Mutex::new(guard) }
}

fn authenticated() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| start(true))
}

fn open() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| start(false))
}

impl Moto {
    fn endpoints(&self) -> Endpoints {
        Endpoints::new("us-east-1", &self.url, &self.url)
    }

    fn sts(&self) -> Sts {
        Sts::new(http(), self.endpoints())
    }

    fn iam(&self) -> Iam {
        Iam::new(http(), self.endpoints())
    }

    fn broker(&self) -> &Credentials {
        self.broker.as_ref().expect("the authenticated server has a broker key")
    }

    fn chain(&self, vars: &[(&str, &str)]) -> CredentialChain {
        CredentialChain::with_env(http(), self.endpoints(), Env::from_vars(vars.iter().copied()))
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A shared credentials file holding `credentials` as `profile`.
fn write_credentials(path: &std::path::Path, profile: &str, credentials: &Credentials) {
    let text = format!(
        "[{profile}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        credentials.access_key_id, &*credentials.secret_access_key
    );
    std::fs::write(path, text).unwrap();
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

#[tokio::test]
async fn assumed_role_credentials_identify_the_session() {
    let moto = authenticated();
    let mut request = AssumeRole::new(role_arn("operator"), "alice-grant-1");
    request.duration_seconds = 900;
    request.policy = Some(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#.into(),
    );
    request.tags = vec![("hourglass:grant".into(), "g-1".into()), ("hourglass:principal".into(), "alice".into())];
    let before = OffsetDateTime::now_utc();
    let assumed = moto.sts().assume_role(moto.broker(), &request).await.unwrap();

    assert_eq!(assumed.arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/operator/alice-grant-1"));
    assert!(assumed.assumed_role_id.starts_with("AROA") && assumed.assumed_role_id.ends_with(":alice-grant-1"));
    let lifetime = assumed.credentials.expiration.unwrap() - before;
    assert!((890..=910).contains(&lifetime.whole_seconds()), "the session lasts DurationSeconds: {lifetime}");
    assert!(assumed.credentials.access_key_id.starts_with("ASIA"));
    assert!(assumed.packed_policy_size.is_some(), "moto reports PackedPolicySize");

    let identity = moto.sts().get_caller_identity(&assumed.credentials).await.unwrap();
    assert_eq!(identity.arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/operator/alice-grant-1"));
    assert_eq!(identity.account, ACCOUNT);
}

#[tokio::test]
async fn broker_key_identifies_the_broker_user() {
    let moto = authenticated();
    let identity = moto.sts().get_caller_identity(moto.broker()).await.unwrap();
    assert_eq!(identity.arn, format!("arn:aws:iam::{ACCOUNT}:user/hourglass-broker"));
}

#[tokio::test]
async fn inline_role_policy_round_trips_and_deletes_once() {
    let moto = authenticated();
    let iam = moto.iam();
    let caller = moto.broker();
    // Characters that must survive form encoding one way and IAM's URL
    // encoding in the XML the other.
    let document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:userid":"AROA:a b+c&d/é"}}}]}"#;
    iam.put_role_policy(caller, "operator", "hourglass-deny-1", document).await.unwrap();

    assert_eq!(iam.get_role_policy(caller, "operator", "hourglass-deny-1").await.unwrap().as_deref(), Some(document));
    assert!(iam.list_role_policies(caller, "operator").await.unwrap().contains(&"hourglass-deny-1".to_owned()));
    assert!(iam.delete_role_policy(caller, "operator", "hourglass-deny-1").await.unwrap());
    assert!(!iam.delete_role_policy(caller, "operator", "hourglass-deny-1").await.unwrap(), "gone: Ok(false)");
    assert_eq!(iam.get_role_policy(caller, "operator", "hourglass-deny-1").await.unwrap(), None);
    assert!(!iam.list_role_policies(caller, "operator").await.unwrap().contains(&"hourglass-deny-1".to_owned()));
}

#[tokio::test]
async fn get_role_reports_arn_id_and_max_session_duration() {
    let moto = authenticated();
    let role = moto.iam().get_role(moto.broker(), "operator").await.unwrap();
    assert_eq!(role.arn, role_arn("operator"));
    assert_eq!(parse_role_arn(&role.arn).unwrap().name, "operator");
    assert!(role.role_id.starts_with("AROA"));
    assert_eq!(role.max_session_duration, 3600);
    let missing = moto.iam().get_role(moto.broker(), "no-such-role").await.unwrap_err();
    assert_eq!(missing.code(), Some("NoSuchEntity"), "{missing}");
}

#[tokio::test]
async fn unknown_access_key_is_refused_as_invalid_client_token_id() {
    let moto = authenticated();
    let stranger = Credentials::new("AKIAUNKNOWNKEY000000", "not-a-secret-moto-knows", None);
    let error = moto.sts().get_caller_identity(&stranger).await.unwrap_err();
    assert_eq!(error.code(), Some("InvalidClientTokenId"), "{error}");
    assert_eq!(error.status(), Some(403));
    assert!(!error.to_string().contains("not-a-secret"), "{error}");
}

/// moto recomputes the signature: a known key with the wrong secret fails.
#[tokio::test]
async fn wrong_secret_is_refused_as_signature_mismatch() {
    let moto = authenticated();
    let forged = Credentials::new(moto.broker().access_key_id.clone(), "wrong-secret", None);
    let error = moto.iam().get_role(&forged, "operator").await.unwrap_err();
    assert_eq!(error.code(), Some("SignatureDoesNotMatch"), "{error}");
}

#[tokio::test]
async fn untrusted_role_assumption_is_refused_with_aws_message() {
    let moto = authenticated();
    let request = AssumeRole::new(role_arn("stranger"), "alice-grant-2");
    let error = moto.sts().assume_role(moto.broker(), &request).await.unwrap_err();
    assert_eq!(error.code(), Some("AccessDenied"), "{error}");
    assert_eq!(error.status(), Some(403));
    assert_eq!(
        error.aws_message(),
        Some("User: arn:aws:iam::123456789012:user/hourglass-broker is not authorized to perform: sts:AssumeRole")
    );
    // moto's AccessDenied body has no RequestId; the header's is kept.
    assert!(matches!(&error, Error::Aws { request_id: Some(_), .. }), "{error:?}");
}

/// AWS refuses a role that does not exist with AccessDenied; moto 5.2.6
/// hands out a session for it. Pinned so a moto that starts refusing is
/// noticed (then assert AccessDenied here).
#[tokio::test]
async fn missing_role_is_assumed_by_moto_unlike_aws() {
    let moto = authenticated();
    let request = AssumeRole::new(role_arn("no-such-role"), "alice-grant-3");
    match moto.sts().assume_role(moto.broker(), &request).await {
        Ok(assumed) => {
            assert_eq!(assumed.arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/no-such-role/alice-grant-3"))
        }
        Err(error) => panic!("moto now refuses a missing role ({error}): update this test"),
    }
}

#[tokio::test]
async fn chain_takes_environment_keys_before_the_shared_files() {
    let moto = authenticated();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = x\n",
    )
    .unwrap();
    let broker = moto.broker();
    let chain = moto.chain(&[
        ("HOME", home.path().to_str().unwrap()),
        ("AWS_ACCESS_KEY_ID", &broker.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", &broker.secret_access_key),
    ]);
    assert_eq!(chain.source(), None, "nothing resolved yet");
    let credentials = chain.credentials().await.unwrap();
    assert_eq!(chain.source(), Some(CredentialSource::Environment));
    let identity = moto.sts().get_caller_identity(&credentials).await.unwrap();
    assert_eq!(identity.arn, format!("arn:aws:iam::{ACCOUNT}:user/hourglass-broker"));
}

#[tokio::test]
async fn chain_reads_a_named_profile_and_assumes_its_role() {
    let moto = authenticated();
    let dir = tempfile::tempdir().unwrap();
    let (credentials_file, config_file) = (dir.path().join("credentials"), dir.path().join("config"));
    let broker = moto.broker();
    write_credentials(&credentials_file, "ci", broker);
    std::fs::write(
        &config_file,
        format!(
            "[profile op]\nrole_arn = {}\nsource_profile = ci\nrole_session_name = chain-test\n",
            role_arn("operator")
        ),
    )
    .unwrap();
    let files = [
        ("AWS_SHARED_CREDENTIALS_FILE", credentials_file.to_str().unwrap()),
        ("AWS_CONFIG_FILE", config_file.to_str().unwrap()),
    ];

    let static_chain = moto.chain(&[files[0], files[1], ("AWS_PROFILE", "ci")]);
    let credentials = static_chain.credentials().await.unwrap();
    assert_eq!(static_chain.source(), Some(CredentialSource::Profile { name: "ci".into() }));
    assert_eq!(credentials.access_key_id, broker.access_key_id);

    let role_chain = moto.chain(&[files[0], files[1], ("AWS_PROFILE", "op")]);
    let credentials = role_chain.credentials().await.unwrap();
    assert_eq!(
        role_chain.source(),
        Some(CredentialSource::ProfileRole { name: "op".into(), role_arn: role_arn("operator") })
    );
    let identity = moto.sts().get_caller_identity(&credentials).await.unwrap();
    assert_eq!(identity.arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/operator/chain-test"));
}

/// A configured but broken source is an error naming it: falling through
/// to the next would quietly give the broker another identity.
#[tokio::test]
async fn chain_stops_at_a_broken_source() {
    let moto = authenticated();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    write_credentials(&file, "default", moto.broker());
    let chain =
        moto.chain(&[("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()), ("AWS_SECRET_ACCESS_KEY", "half-a-key")]);
    let error = chain.credentials().await.unwrap_err();
    assert_eq!(error.to_string(), "environment credentials: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");

    let token = dir.path().join("no-such-token");
    let chain = moto.chain(&[
        ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("AWS_ROLE_ARN", &role_arn("operator")),
    ]);
    let error = chain.credentials().await.unwrap_err().to_string();
    assert!(
        error.starts_with("web identity (AWS_WEB_IDENTITY_TOKEN_FILE) credentials: cannot read the token file"),
        "{error}"
    );
}

#[tokio::test]
async fn chain_exchanges_the_web_identity_token_file() {
    let moto = open();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJicm9rZXIifQ.c2lnbmF0dXJl\n").unwrap();
    let chain = moto.chain(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("AWS_ROLE_ARN", &role_arn("broker")),
        ("AWS_ROLE_SESSION_NAME", "broker-pod"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    let credentials = chain.credentials().await.unwrap();
    assert_eq!(chain.source(), Some(CredentialSource::WebIdentity { role_arn: role_arn("broker") }));
    assert!(credentials.session_token.is_some() && credentials.expiration.is_some());
    let identity = moto.sts().get_caller_identity(&credentials).await.unwrap();
    assert_eq!(identity.arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/broker/broker-pod"));
}

/// moto serves IMDSv2 (token, role list, role credentials) as EC2 does.
#[tokio::test]
async fn chain_falls_back_to_instance_metadata() {
    let moto = open();
    let chain = moto.chain(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &moto.url)]);
    let credentials = chain.credentials().await.unwrap();
    assert_eq!(chain.source(), Some(CredentialSource::InstanceMetadata { role: "default-role".into() }));
    assert!(credentials.session_token.is_some());
    assert!(credentials.expiration.unwrap() > OffsetDateTime::now_utc());
}

/// The container endpoint's JSON is the instance metadata's; moto's role
/// URL stands in for the ECS agent.
#[tokio::test]
async fn chain_reads_container_credentials_with_the_authorization_token() {
    let moto = open();
    let url = format!("{}/latest/meta-data/iam/security-credentials/default-role", moto.url);
    let chain = moto.chain(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-token"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    let credentials = chain.credentials().await.unwrap();
    assert_eq!(chain.source(), Some(CredentialSource::Container));
    assert!(credentials.session_token.is_some());

    let remote = moto.chain(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://credentials.example.com/creds")]);
    let error = remote.credentials().await.unwrap_err().to_string();
    assert!(error.contains("neither https nor http to a loopback"), "{error}");
}

#[tokio::test]
async fn chain_without_any_source_says_what_to_set_and_fails_fast() {
    let moto = open();
    let closed = format!("http://127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let started = Instant::now();
    let error = moto.chain(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &closed)]).credentials().await.unwrap_err();
    assert!(matches!(error, Error::NoCredentials(_)), "{error}");
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let disabled = moto.chain(&[("AWS_EC2_METADATA_DISABLED", "TRUE")]).credentials().await.unwrap_err();
    assert!(disabled.to_string().contains("disabled by AWS_EC2_METADATA_DISABLED"), "{disabled}");
}

#[tokio::test]
async fn fixed_chain_hands_back_its_credentials() {
    let chain = CredentialChain::fixed(Credentials::new("AKIAFIXED", "secret", None));
    assert_eq!(chain.credentials().await.unwrap().access_key_id, "AKIAFIXED");
    assert_eq!(chain.source(), Some(CredentialSource::Fixed));
}
