//! A real AWS API server for tests: PyPI's `moto` in server mode
//! (installed by scripts/setup.sh into a venv outside the clone), with IAM
//! authentication on: after the setup calls (`tests/aws/moto_setup.py`),
//! every request must be signed by a key moto issued, and is allowed or
//! denied by the caller's IAM policies.
//!
//! What moto enforces, and what it does not (the tests say which of their
//! claims rest on the calls made alone):
//! - it checks SigV4 signatures, access keys and session tokens, a role's
//!   trust policy on `AssumeRole`, and identity policies (users', roles')
//!   with `Allow` and `Deny` on actions;
//! - it ignores the `Condition` of a policy statement it cannot evaluate
//!   (`aws:userid`, `aws:CurrentTime`): such a statement applies to every
//!   request, so a deny meant for one session of a role refuses all of them;
//! - it does not apply session policies, and does not expire keys: a
//!   session's deadline is enforced by AWS, not by moto.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, free_port};

/// Requests moto lets through unsigned: the setup script's calls.
const SETUP_CALLS: u32 = 6;
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// `moto_server` on a free loopback port, set up. Killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
    /// The broker's own key (user `hourglass-broker`).
    pub access_key_id: String,
    pub secret_access_key: String,
    _dir: tempfile::TempDir,
}

fn venv() -> PathBuf {
    if let Ok(path) = std::env::var("HOURGLASS_MOTO_VENV") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/hourglass/moto")
}

/// The venv's Python, which has boto3 and botocore: what the tests use
/// AWS with, as a user's tools would.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

impl Moto {
    pub fn start() -> Moto {
        let venv = venv();
        let server = venv.join("bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: moto is installed by scripts/setup.sh (pip, into a venv)",
            server.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_CALLS.to_string())
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server runs");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if std::env::var_os("HOURGLASS_TEST_VERBOSE").is_some() {
                    eprintln!("moto: {line}");
                }
            }
        });
        let up =
            eventually(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
        assert!(up.is_some(), "moto_server listens on {url}");
        let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("aws/moto_setup.py");
        let output = Command::new(python()).arg(&setup).arg(&url).output().expect("the setup script runs");
        assert!(output.status.success(), "moto setup: {}", String::from_utf8_lossy(&output.stderr));
        let keys: Value = serde_json::from_slice(&output.stdout).expect("the setup prints the broker's keys");
        Moto {
            child,
            url,
            access_key_id: keys["access_key_id"].as_str().expect("key id").to_owned(),
            secret_access_key: keys["secret_access_key"].as_str().expect("secret").to_owned(),
            _dir: dir,
        }
    }

    /// Stops the server answering (SIGSTOP): AWS hanging mid-call.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(status.success(), "kill {signal} moto");
    }

    pub fn role_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{ACCOUNT}:role/{name}")
    }

    /// A `provider = "aws"` resource named `name` on this server, with
    /// Hourglass roles mapped to IAM roles (`(hourglass role, IAM role)`).
    pub fn resource_toml(&self, name: &str, roles: &[(&str, &str)]) -> String {
        let mut toml = format!(
            "[resources.{name}]\nprovider = \"aws\"\n\n[resources.{name}.settings]\nregion = \"us-east-1\"\n\
             sts_endpoint = \"{url}\"\niam_endpoint = \"{url}\"\n",
            url = self.url
        );
        for (role, iam_role) in roles {
            toml.push_str(&format!(
                "\n[resources.{name}.roles.{role}]\nsettings = {{ role_arn = \"{}\" }}\n",
                self.role_arn(iam_role)
            ));
        }
        toml
    }

    /// The environment that gives a broker its AWS identity (the standard
    /// chain's first source).
    pub fn broker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// Runs Python with boto3 against this server: `script` reads
    /// `ENDPOINT`; `env` is the whole environment (the caller's keys, or an
    /// `AWS_CONFIG_FILE` with a `credential_process`).
    pub fn python(&self, script: &str, env: &[(&str, &str)]) -> crate::Run {
        let prelude = format!("ENDPOINT = {:?}\n", self.url);
        let output = Command::new(python())
            .args(["-c", &format!("{prelude}{script}")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .envs(env.iter().copied())
            .output()
            .expect("python runs");
        crate::Run::from(output)
    }

    /// The inline policies on `role`, each with its document, read with
    /// the broker's key.
    pub fn role_policies(&self, role: &str) -> Vec<(String, Value)> {
        let script = format!(
            "import boto3, json\n\
             iam = boto3.client('iam', endpoint_url=ENDPOINT, region_name='us-east-1')\n\
             out = []\n\
             for name in iam.list_role_policies(RoleName={role:?})['PolicyNames']:\n\
             \x20   doc = iam.get_role_policy(RoleName={role:?}, PolicyName=name)['PolicyDocument']\n\
             \x20   out.append([name, doc])\n\
             print(json.dumps(out))\n"
        );
        let run = self.python(
            &script,
            &[("AWS_ACCESS_KEY_ID", &self.access_key_id), ("AWS_SECRET_ACCESS_KEY", &self.secret_access_key)],
        );
        assert!(run.ok, "listing the policies of {role}: {}", run.stderr);
        let list: Vec<(String, Value)> = serde_json::from_str(run.stdout.trim()).expect("JSON");
        list
    }

    /// Every role session moto handed out, as it recorded them: session
    /// name, role, and the session policy the caller sent.
    pub fn assumed_roles(&self) -> Vec<Value> {
        let body = http_get(&format!("{}/moto-api/data.json", self.url));
        let data: Value = serde_json::from_str(&body).expect("moto's model data is JSON");
        data["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default()
    }
}

/// A GET over a plain TCP socket: the testkit needs no HTTP client for one
/// call to loopback.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = std::net::TcpStream::connect(host).expect("connects");
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
