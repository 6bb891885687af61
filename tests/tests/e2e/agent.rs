//! The local agent and credential injection, end to end: a dev broker, the
//! real `hourglass agent` process with a private runtime directory, real
//! bash, zsh and fish driven through tmux, a real ssh-agent and sshd, a
//! real PostgreSQL, and the real tools that read credential helpers
//! (kubectl, git, botocore when installed).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hourglass_core::{GrantId, Timestamp};
use hourglass_e2e::postgres::{PostgresCluster, psql};
use hourglass_e2e::shell::{TmuxShell, Workstation, helpers_policy};
use hourglass_e2e::sshd::{SshAgent, Sshd, current_user};
use hourglass_e2e::{DevBroker, Run, bin, eventually, policy_dir};
use serde_json::Value;

const CEDAR: &str = r#"
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource);
"#;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn millis(timestamp: &Value) -> i64 {
    Timestamp::parse(timestamp.as_str().expect("a timestamp string")).expect("RFC 3339").unix_millis()
}

fn is_root() -> bool {
    hourglass_client::agent::my_uid() == 0
}

/// The grant of a `request --json` answer: (id, expires_at).
fn granted(outcome: &Value) -> (String, Value) {
    let grant = &outcome["grant"];
    assert_eq!(grant["state"], "active", "issued at once: {outcome}");
    (grant["id"].as_str().expect("grant id").to_owned(), grant["expires_at"].clone())
}

/// Connects to `socket` as `nobody` with a raw client (no Hourglass code
/// on that side) and sends a status request: what happened.
fn connect_as_nobody(socket: &Path) -> String {
    let python = "/usr/bin/python3";
    assert!(Path::new(python).exists(), "{python} is needed to act as another user");
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except Exception as e:
    print("connect failed:", type(e).__name__)
    sys.exit(0)
s.sendall(b'{"version":1,"op":"status"}\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print("answer:", data.decode())
"#;
    let output = Command::new("runuser")
        .args(["-u", "nobody", "--", python, "-c", script])
        .arg(socket)
        .output()
        .expect("runuser runs");
    let run = Run::from(output);
    assert!(run.ok, "the raw client ran as nobody: {}", run.stderr);
    run.stdout
}

#[test]
fn agent_socket_is_private_and_refuses_other_users() {
    let broker = DevBroker::start();
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    let dir = station.agent_dir();
    let socket = dir.join("agent.sock");
    assert_eq!(mode(&dir), 0o700, "the agent's directory is the user's only");
    assert!(std::fs::symlink_metadata(&socket).expect("socket").file_type().is_socket(), "a Unix socket");
    assert_eq!(mode(&socket), 0o600, "the socket is the user's only");
    assert_eq!(mode(&dir.join("hook-state")), 0o600, "the hook state file too");

    if !is_root() {
        eprintln!("not root: cannot act as another user; only the modes were checked");
        return;
    }
    let blocked = connect_as_nobody(&socket);
    assert!(blocked.contains("connect failed: PermissionError"), "the file system keeps nobody out: {blocked}");

    // Open the way (as a careless admin might): the agent's own check of the
    // peer's uid still refuses, and says nothing else.
    for path in [station.runtime_dir(), dir.as_path()] {
        chmod(path, 0o711);
    }
    chmod(&socket, 0o666);
    let refused = connect_as_nobody(&socket);
    for path in [station.runtime_dir(), dir.as_path()] {
        chmod(path, 0o700);
    }
    chmod(&socket, 0o600);
    assert!(refused.contains(r#""code":"forbidden""#), "the agent refuses another uid: {refused}");
    assert!(refused.contains("serves uid 0 only"), "and says why: {refused}");
    assert!(!refused.contains("grants") && !refused.contains("broker"), "and tells nothing else: {refused}");
    assert!(station.agent_log().contains("refused a connection from uid"), "the refusal is noted");
    assert!(station.status().is_some(), "the user itself still gets answers");
}

#[test]
fn agent_client_refuses_a_runtime_directory_others_can_enter() {
    let broker = DevBroker::start();
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    chmod(&station.agent_dir(), 0o755);
    let run = station.hourglass(&["agent", "--status"]);
    chmod(&station.agent_dir(), 0o700);
    assert!(!run.ok, "a directory others can enter is not trusted");
    assert!(run.stderr.contains("open to other users") && run.stderr.contains("0700"), "says why: {}", run.stderr);
}

/// Checks that `shell` shows `value` for `name` at a prompt drawn now,
/// unless the grant's deadline (`deadline`, ms) had come too close to tell.
fn assert_seen_before_deadline(shell: &TmuxShell, name: &str, value: &str, deadline: i64, why: &str) {
    let before = now_millis();
    let seen = shell.var(name);
    if seen != value {
        // The hook drops a grant up to a second early (whole seconds).
        assert!(before + 1500 >= deadline, "{}: {why}: {name} is {seen:?}, not {value:?}", shell.kind);
        eprintln!("{}: {name} was checked too close to its deadline to be seen", shell.kind);
    }
}

#[test]
fn prompt_hook_follows_grants_in_bash_zsh_and_fish() {
    let broker = DevBroker::start();
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    let shells: Vec<TmuxShell> = ["bash", "zsh", "fish"].iter().map(|kind| TmuxShell::start(kind, &station)).collect();
    for shell in &shells {
        assert_eq!(shell.var("STAGING_API_TOKEN_EXPIRES_AT"), "", "{}: nothing before any grant", shell.kind);
    }

    // Issued: the next prompt has it.
    let staging = station.json(&["request", "staging-api", "--role", "deploy", "--for", "10m"]);
    let (id, deadline) = granted(&staging);
    station.wait_for("holding the staging grant", |s| Workstation::held(s, &id).is_some());
    for shell in &shells {
        assert_eq!(
            shell.var("STAGING_API_TOKEN_EXPIRES_AT"),
            deadline.as_str().expect("deadline"),
            "{}: the grant's variables appear at the next prompt",
            shell.kind
        );
        assert!(shell.var("STAGING_API_TOKEN").starts_with("eyJ"), "{}: the token itself", shell.kind);
    }

    // Renewed: the next prompt has the new deadline (and a new token).
    let renewed = station.json(&["renew", &id, "--for", "20m"]);
    let new_deadline = renewed["expires_at"].clone();
    assert_ne!(new_deadline, deadline, "the deadline moved");
    station.wait_for("the renewed deadline", |s| {
        Workstation::held(s, &id).is_some_and(|g| g["expires_at"] == new_deadline)
    });
    for shell in &shells {
        assert_eq!(
            shell.var("STAGING_API_TOKEN_EXPIRES_AT"),
            new_deadline.as_str().expect("deadline"),
            "{}: a renewed grant is picked up by the next prompt",
            shell.kind
        );
    }

    // A 5 s grant: gone at the first prompt after its deadline.
    let short = station.json(&["request", "orders-api", "--role", "read", "--for", "5s", "--reason", "hook test"]);
    let (short_id, short_deadline) = granted(&short);
    station.wait_for("holding the 5 s grant", |s| Workstation::held(s, &short_id).is_some());
    for shell in &shells {
        assert_seen_before_deadline(
            shell,
            "ORDERS_API_TOKEN_EXPIRES_AT",
            short_deadline.as_str().expect("deadline"),
            millis(&short_deadline),
            "a live grant is exported",
        );
    }
    station.wait_for("dropping the 5 s grant at its deadline", |s| Workstation::held(s, &short_id).is_none());
    for shell in &shells {
        assert_eq!(shell.var("ORDERS_API_TOKEN_EXPIRES_AT"), "", "{}: gone at the prompt after expiry", shell.kind);
        assert_eq!(
            shell.var("STAGING_API_TOKEN_EXPIRES_AT"),
            new_deadline.as_str().expect("deadline"),
            "{}: the other grant stays",
            shell.kind
        );
    }

    // Revoked: gone at the next prompt.
    let revoked = station.hourglass(&["revoke", &id]);
    assert!(revoked.ok, "revoke: {}", revoked.stderr);
    station.wait_for("dropping the revoked grant", |s| Workstation::held(s, &id).is_none());
    for shell in &shells {
        assert_eq!(shell.var("STAGING_API_TOKEN_EXPIRES_AT"), "", "{}: gone at the prompt after a revoke", shell.kind);
        assert_eq!(shell.var("HOURGLASS_HOOK"), "", "{}: nothing tracked any more", shell.kind);
    }

    // The agent killed: the shells' own clocks still end a grant.
    let last = station.json(&["request", "orders-api", "--role", "read", "--for", "5s", "--reason", "agent down"]);
    let (last_id, last_deadline) = granted(&last);
    station.wait_for("holding the last grant", |s| Workstation::held(s, &last_id).is_some());
    for shell in &shells {
        assert_seen_before_deadline(
            shell,
            "ORDERS_API_TOKEN_EXPIRES_AT",
            last_deadline.as_str().expect("deadline"),
            millis(&last_deadline),
            "a live grant is exported",
        );
    }
    station.kill_agent();
    assert!(station.status().is_none(), "the agent is gone");
    let past = eventually(Duration::from_secs(30), || (now_millis() > millis(&last_deadline) + 1000).then_some(()));
    assert!(past.is_some(), "the deadline passes");
    for shell in &shells {
        assert_eq!(
            shell.var("ORDERS_API_TOKEN_EXPIRES_AT"),
            "",
            "{}: with the agent killed, an expired grant's variables still disappear",
            shell.kind
        );
        assert!(!shell.var("HOURGLASS_HOOK").contains(&last_id), "{}: and it is no longer tracked", shell.kind);
    }
}

#[test]
fn ssh_agent_holds_the_grant_key_with_its_lifetime_and_ssh_logs_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let krl = dir.path().join("revoked.krl");
    let user = current_user();
    let toml = format!(
        r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"
reason_required = false

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

[resources.box]
provider = "ssh"
settings = {{ krl_file = "{krl}" }}

[resources.box.roles.login]
settings = {{ principals = ["{user}"] }}
"#,
        krl = krl.display()
    );
    let policy = policy_dir(&toml, CEDAR);
    let broker = DevBroker::start_with_policy(policy.path(), &[]);
    let sshd = Sshd::start(&broker.get("/v1/providers/ssh/ca.pub?resource=box"), &krl);
    let ssh_agent = SshAgent::start(dir.path());
    let mut station = Workstation::new(&broker, "alice");
    station.set_var("SSH_AUTH_SOCK", &ssh_agent.socket.display().to_string());
    station.start_agent();

    let outcome = station.json(&["request", "box", "--role", "login", "--for", "10m"]);
    let (id, _) = granted(&outcome);
    let line = eventually(Duration::from_secs(30), || {
        ssh_agent.listed().lines().find(|line| line.contains(&format!("hourglass {id}"))).map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("the key reaches ssh-agent: {}\n{}", ssh_agent.listed(), station.agent_log()));
    assert!(line.starts_with("ssh-ed25519-cert-v01@openssh.com "), "the certificate, not a bare key: {line}");
    let credential = station.json(&["env", &id]);
    let certificate = credential["ssh_certificate"].as_str().expect("the grant's certificate");
    let blob = |text: &str| text.split_whitespace().nth(1).map(str::to_owned);
    assert_eq!(blob(&line), blob(certificate), "ssh-agent holds the certificate the broker signed");
    assert!(ssh_agent.fingerprints().contains("ED25519-CERT"), "listed as a certificate: {}", ssh_agent.fingerprints());
    assert!(!ssh_agent.listed().lines().any(|l| l.starts_with("ssh-ed25519 ")), "no bare key is added");

    let login = sshd.ssh_through_agent(&user, &ssh_agent.socket, "echo ok");
    assert!(
        login.ok && login.stdout.trim() == "ok",
        "ssh logs in with the key in ssh-agent: {}\n--- sshd log ---\n{}",
        login.stderr,
        sshd.log()
    );

    let revoked = station.hourglass(&["revoke", &id]);
    assert!(revoked.ok, "revoke: {}", revoked.stderr);
    let gone = eventually(Duration::from_secs(30), || (!ssh_agent.listed().contains(&id)).then_some(()));
    assert!(gone.is_some(), "a revoked grant's key leaves ssh-agent: {}", ssh_agent.listed());

    // The lifetime constraint: with the Hourglass agent killed, ssh-agent
    // itself forgets the key at the deadline.
    let short = station.json(&["request", "box", "--role", "login", "--for", "5s"]);
    let (short_id, short_deadline) = granted(&short);
    let added = eventually(Duration::from_secs(30), || ssh_agent.listed().contains(&short_id).then_some(()));
    assert!(added.is_some(), "the second key is added: {}", station.agent_log());
    station.kill_agent();
    let forgotten = eventually(Duration::from_secs(30), || (!ssh_agent.listed().contains(&short_id)).then_some(()));

    assert!(forgotten.is_some(), "ssh-agent drops the key by itself: it was added with a lifetime");
    assert!(
        now_millis() + 1500 >= millis(&short_deadline),
        "and not before the grant's deadline (the lifetime is the time left)"
    );
}

#[test]
fn postgres_request_from_the_cli_keeps_the_password_in_the_agent_and_logs_in() {
    let cluster = PostgresCluster::start();
    cluster.create_orders_db();
    let toml = format!(
        r#"
[defaults]
workflow = "review"
min_duration = "5s"
max_duration = "1h"
reason_required = false

[workflows.review]
approvals = [{{ group = "sre", count = 1 }}]

{orders_db}

[resources.orders-db.roles.again]
settings = {{ grant = ["orders_read"] }}
"#,
        orders_db = cluster.orders_db_policy()
    );
    let policy = policy_dir(&toml, CEDAR);
    let broker = DevBroker::start_with_policy(policy.path(), &[("ORDERS_DB_ADMIN_DSN", &cluster.admin_dsn())]);
    let station = Workstation::new(&broker, "alice");
    let pgpass = station.home().join(".pgpass");
    std::fs::write(&pgpass, "elsewhere:5432:*:me:mine\n").expect("the user's own .pgpass");
    chmod(&pgpass, 0o600);
    assert!(station.status().is_none(), "no agent runs yet");

    // No agent running: the request starts one to hold the password.
    let run = station.hourglass(&["request", "orders-db", "--role", "read", "--for", "10m", "--json"]);
    assert!(run.ok, "the request works from the CLI: {}", run.stderr);
    assert!(run.stderr.contains("started the hourglass agent"), "says it started the agent: {}", run.stderr);
    let outcome: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let (id, _) = granted(&outcome);
    assert!(outcome["grant"]["ready_at"].is_string(), "logged in once with the new password: ready: {outcome}");
    assert!(station.status().is_some(), "the agent keeps running");

    let role = format!("hg_alice_{}", id.trim_start_matches(GrantId::PREFIX));
    let exec = station.command(&["exec", &id, "--"]).arg(psql()).args(["-tA", "-c", "select current_user"]).output();
    let exec = Run::from(exec.expect("hourglass exec runs"));
    assert!(exec.ok, "psql logs in with the grant's credentials: {}", exec.stderr);
    assert_eq!(exec.stdout.trim(), role, "as the grant's role");
    let code = station.command(&["exec", &id, "--", "sh", "-c", "exit 7"]).status().expect("exec runs").code();
    assert_eq!(code, Some(7), "the command's exit status passes through");
    let only_child = station.command(&["exec", &id, "--", "sh", "-c", "test -n \"$PGPASSWORD\""]).status();
    assert!(only_child.expect("exec runs").success(), "the child gets PGPASSWORD");
    let env = station.hourglass(&["env", &id, "--shell", "bash"]);
    assert!(env.ok && env.stdout.contains("export PGPASSWORD='"), "env completes the credential: {}", env.stderr);
    assert!(env.stdout.contains(&format!("export PGUSER='{role}'")), "with the broker's part");

    // The opt-in .pgpass block.
    let enabled = station.hourglass(&["pgpass", "enable"]);
    assert!(enabled.ok, "pgpass enable: {}", enabled.stderr);
    let line = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&pgpass).ok()?;
        text.lines().find(|l| l.contains(&role)).map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("the grant's line appears: {}", station.agent_log()));
    assert!(line.starts_with(&format!("127.0.0.1:{}:orders:{role}:", cluster.port)), "a libpq line: {line}");
    assert_eq!(mode(&pgpass), 0o600, "the file stays 0600");
    let text = std::fs::read_to_string(&pgpass).expect("pgpass");
    assert!(text.starts_with("elsewhere:5432:*:me:mine\n"), "the user's own lines stay: {text}");
    let psql_from_file = Command::new(psql())
        .args(["-tA", "-c", "select 1"])
        .env_clear()
        .envs([("HOME", station.home().to_str().expect("home")), ("PGHOST", "127.0.0.1")])
        .env("PGPORT", cluster.port.to_string())
        .env("PGDATABASE", "orders")
        .env("PGUSER", &role)
        .output()
        .expect("psql runs");
    assert!(
        psql_from_file.status.success(),
        "libpq finds the password in .pgpass: {}",
        Run::from(psql_from_file).stderr
    );

    // A 5 s grant's line goes at its deadline.
    let short = station.json(&["request", "orders-db", "--role", "again", "--for", "5s"]);
    let (short_id, _) = granted(&short);
    let short_role = format!("hg_alice_{}", short_id.trim_start_matches(GrantId::PREFIX));
    let removed = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&pgpass).ok()?;
        (!text.contains(&short_role) && text.contains(&role)).then_some(())
    });
    assert!(removed.is_some(), "the expired grant's line is removed, the live one's stays");
    assert!(!station.agent_log().contains(cluster.admin_password()), "no secret in the agent's notes");

    let disabled = station.hourglass(&["pgpass", "disable"]);
    assert!(disabled.ok, "pgpass disable: {}", disabled.stderr);
    assert_eq!(
        std::fs::read_to_string(&pgpass).expect("pgpass"),
        "elsewhere:5432:*:me:mine\n",
        "back to the user's file"
    );
}

/// An HTTPS server (kubectl runs exec plugins for TLS servers only) that
/// answers every request with a version document and writes each
/// `Authorization` header it sees to `seen`: python3's `ssl` with a
/// throwaway self-signed certificate from `openssl`. Killed on drop.
struct TlsCapture {
    child: std::process::Child,
    port: u16,
    seen: PathBuf,
}

impl TlsCapture {
    fn start(dir: &Path) -> TlsCapture {
        let (key, cert, seen) = (dir.join("tls.key"), dir.join("tls.crt"), dir.join("seen"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(made.status.success(), "a throwaway certificate: {}", String::from_utf8_lossy(&made.stderr));
        let script = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
body = b'{"major":"1","minor":"32","gitVersion":"v1.32.0"}'
while True:
    c, _ = s.accept()
    try:
        c = ctx.wrap_socket(c, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(65536)
            if not chunk:
                break
            head += chunk
        with open(sys.argv[3], "a") as out:
            for line in head.decode(errors="replace").split("\r\n"):
                if line.lower().startswith("authorization:"):
                    out.write(line.split(":", 1)[1].strip() + "\n")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        c.close()
    except Exception:
        pass
"#;
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(&cert)
            .arg(&key)
            .arg(&seen)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("the port");
        let port = line.trim().parse().expect("a port number");
        TlsCapture { child, port, seen }
    }

    fn seen(&self) -> Vec<String> {
        std::fs::read_to_string(&self.seen).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for TlsCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(program: &str, check: &[&str]) -> bool {
    Command::new(program).args(check).output().is_ok_and(|o| o.status.success())
}

#[test]
fn credential_helpers_answer_in_the_formats_tools_parse() {
    let policy = helpers_policy();
    let broker = DevBroker::start_with_policy(policy.path(), &[]);
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    let mut ids = Vec::new();
    for (resource, role) in [("cloud", "admin"), ("git", "push"), ("k8s", "view")] {
        let (id, deadline) = granted(&station.json(&["request", resource, "--role", role, "--for", "30m"]));
        ids.push((id, deadline));
    }
    for (id, _) in &ids {
        station.wait_for("holding every grant", |s| Workstation::held(s, id).is_some());
    }
    let exe = bin("hourglass");

    // AWS credential_process.
    let run = station.hourglass(&["credential-process", "cloud"]);
    assert!(run.ok, "credential-process: {}", run.stderr);
    let aws: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(aws["Version"], Value::from(1), "Version is the number 1");
    assert_eq!(aws["AccessKeyId"], "AKIAHOURGLASSTEST", "the hook's key id");
    assert_eq!(aws["SecretAccessKey"], "wJalr/secret+key", "the hook's secret key");
    assert_eq!(aws["SessionToken"], "session-token-1", "the hook's session token");
    let expiration =
        Timestamp::parse(aws["Expiration"].as_str().expect("Expiration is a string")).expect("Expiration is RFC 3339");
    assert!(
        expiration.unix_millis() > now_millis() && expiration.unix_millis() <= millis(&ids[0].1) + 1000,
        "expires at the grant's deadline: {expiration}"
    );
    if has("python3", &["-c", "import botocore"]) {
        let config = station.home().join("aws-config");
        std::fs::write(
            &config,
            format!("[profile hg]\ncredential_process = {} credential-process cloud\n", exe.display()),
        )
        .expect("aws config");
        let script = "import botocore.session\nc = botocore.session.Session(profile='hg').get_credentials().get_frozen_credentials()\nprint(c.access_key, c.token)";
        let output = Command::new("python3")
            .args(["-c", script])
            .env_clear()
            .envs(station.vars().iter().map(|(n, v)| (n, v)))
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("python3 runs");
        let run = Run::from(output);
        assert!(run.ok, "botocore accepts the credential_process output: {}", run.stderr);
        assert_eq!(run.stdout.trim(), "AKIAHOURGLASSTEST session-token-1", "botocore reads the keys");
    } else {
        eprintln!("botocore is not installed: checked the JSON fields only");
    }

    // Kubernetes ExecCredential.
    let run = station.hourglass(&["kube-credential", "k8s"]);
    assert!(run.ok, "kube-credential: {}", run.stderr);
    let exec: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1", "the v1 API");
    assert_eq!(exec["kind"], "ExecCredential");
    let token = exec["status"]["token"].as_str().expect("status.token is a string").to_owned();
    assert_eq!(token.split('.').count(), 3, "the grant's JWT");
    let stamp = exec["status"]["expirationTimestamp"].as_str().expect("expirationTimestamp is a string");
    let expires = Timestamp::parse(stamp).expect("expirationTimestamp is RFC 3339");
    assert!(stamp.ends_with('Z') && !stamp.contains('.'), "whole seconds in UTC, as metav1.Time: {stamp}");
    assert!(expires.unix_millis() <= millis(&ids[2].1), "not after the grant's deadline");
    if has("kubectl", &["version", "--client"]) && has("openssl", &["version"]) && has("python3", &["-c", "import ssl"])
    {
        let server = TlsCapture::start(station.home());
        let kubeconfig = station.home().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: hg\ncurrent-context: test\nusers:\n- name: hg\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args: [kube-credential, k8s]\n      interactiveMode: Never\n",
                server.port,
                exe.display()
            ),
        )
        .expect("kubeconfig");
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "--raw", "/version"])
            .env_clear()
            .envs(station.vars().iter().map(|(n, v)| (n, v)))
            .output()
            .expect("kubectl runs");
        let run = Run::from(output);
        assert!(run.ok, "kubectl accepts the ExecCredential: {}", run.stderr);
        let sent = server.seen();
        assert!(!sent.is_empty(), "kubectl ran the plugin and sent its token");
        assert!(sent.iter().all(|h| *h == format!("Bearer {token}")), "kubectl sends the grant's token: {sent:?}");
    } else {
        eprintln!("kubectl, openssl or python3 is missing: checked the JSON fields only");
    }

    // git's credential helper protocol, through git itself.
    let git_token = station.json(&["env", "git"])["env"]
        .as_array()
        .and_then(|env| env.iter().find(|v| v["name"] == "GIT_TOKEN"))
        .and_then(|v| v["value"].as_str())
        .expect("the git grant's token")
        .to_owned();
    let mut child = Command::new("git")
        .args(["-c", "credential.helper=", "-c"])
        .arg(format!("credential.helper=!'{}' git-credential", exe.display()))
        .args(["credential", "fill"])
        .env_clear()
        .envs(station.vars().iter().map(|(n, v)| (n, v)))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"protocol=https\nhost=git.example.test\npath=team/repo.git\n\n")
        .expect("ask");
    let run = Run::from(child.wait_with_output().expect("git answers"));
    assert!(run.ok, "git credential fill: {}", run.stderr);
    assert!(run.stdout.contains("username=alice@acme.example\n"), "the owner as username: {}", run.stdout);
    assert!(run.stdout.contains(&format!("password={git_token}\n")), "the token as password");

    let mut other =
        station.command(&["git-credential", "get"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("runs");
    other.stdin.take().expect("stdin").write_all(b"protocol=https\nhost=elsewhere.example\n\n").expect("ask");
    let run = Run::from(other.wait_with_output().expect("answers"));
    assert!(run.ok && run.stdout.is_empty(), "another host gets no answer, so git asks elsewhere: {run:?}");
}

#[test]
fn agent_commands_explain_bad_input() {
    let broker = DevBroker::start();
    let mut station = Workstation::new(&broker, "alice");

    for args in [&["credential-process", "orders-api"][..], &["kube-credential", "orders-api"], &["agent", "--status"]]
    {
        let run = station.hourglass(args);
        assert!(!run.ok, "{args:?} fails without an agent");
        assert!(
            run.stderr.contains("agent is not running") && run.stderr.contains("hourglass agent --daemon"),
            "{args:?} says the agent is not running and how to start it: {}",
            run.stderr
        );
    }

    station.start_agent();
    let unknown = GrantId::from_random(0x5eed).to_string();
    let run = station.hourglass(&["credential-process", &unknown]);
    assert!(!run.ok && run.stderr.contains(&format!("no live grant {unknown}")), "unknown grant: {}", run.stderr);
    let run = station.hourglass(&["env", &unknown]);
    assert!(!run.ok && run.stderr.contains(&unknown), "env of an unknown grant names it: {}", run.stderr);
    let run = station.hourglass(&["env", "grt-!"]);
    assert!(!run.ok && run.stderr.contains("grt-!"), "a malformed id is named: {}", run.stderr);

    let (id, _) = granted(&station.json(&["request", "orders-api", "--role", "read", "--for", "10m", "--reason", "x"]));
    station.wait_for("holding the grant", |s| Workstation::held(s, &id).is_some());
    let run = station.hourglass(&["credential-process", &id]);
    assert!(!run.ok && run.stderr.contains("carries no AWS keys"), "a token grant has no AWS keys: {}", run.stderr);
    let revoked = station.hourglass(&["revoke", &id]);
    assert!(revoked.ok, "revoke: {}", revoked.stderr);
    station.wait_for("dropping the revoked grant", |s| Workstation::held(s, &id).is_none());
    for args in [&["env", &id][..], &["exec", &id, "--", "true"], &["kube-credential", &id]] {
        let run = station.hourglass(args);
        assert!(!run.ok, "{args:?} of an ended grant fails");
        assert!(
            run.stderr.contains(&id) && run.stderr.contains("was revoked") && run.stderr.contains("hourglass request"),
            "{args:?} says the grant ended and what to do: {}",
            run.stderr
        );
    }

    let run = station.hourglass(&["hook", "tcsh"]);
    assert!(!run.ok && run.stderr.contains("unknown shell \"tcsh\""), "an unknown shell: {}", run.stderr);
    let (staging, _) = granted(&station.json(&["request", "staging-api", "--role", "deploy", "--for", "10m"]));
    station.wait_for("holding the staging grant", |s| Workstation::held(s, &staging).is_some());
    let run = station.hourglass(&["exec", "staging-api", "--", "/no/such/program"]);
    assert!(!run.ok && run.stderr.contains("/no/such/program: command not found"), "a missing command: {}", run.stderr);
    let run = station.hourglass(&["env", "no-such-resource"]);
    assert!(
        !run.ok && run.stderr.contains("no live grant on no-such-resource"),
        "a resource without a grant: {}",
        run.stderr
    );
}

/// Keys that last seconds while their grant lasts minutes (an exec hook
/// minting four-second keys): the agent fetches fresh ones before they end,
/// with no event from the broker, and `credential_process` always hands out
/// keys that still have time left.
#[test]
fn agent_refreshes_short_lived_keys_before_they_end_while_the_grant_lives() {
    const RESOURCE: &str = r#"
[resources.short]
provider = "exec"
settings = { command = ["./short-keys.sh"] }

[resources.short.roles.admin]
description = "four-second keys"
"#;
    // Each mint: a new key id, ending four seconds on.
    const HOOK: &str = r#"#!/bin/sh
cat > /dev/null
case "$HOURGLASS_ACTION" in
    issue|renew)
        printf '{"state": null, "env": {"AWS_ACCESS_KEY_ID": "AKIA%s", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}, "public": ["AWS_ACCESS_KEY_ID"], "expires_at": "%s"}\n' \
            "$(date +%s%N)" "$(date -u -d '+4 seconds' +%Y-%m-%dT%H:%M:%SZ)" ;;
    revoke) echo '{}' ;;
esac
"#;
    let policy = helpers_policy();
    let mut toml = std::fs::OpenOptions::new().append(true).open(policy.path().join("hourglass.toml")).expect("toml");
    toml.write_all(RESOURCE.as_bytes()).expect("the resource appended");
    let hook = policy.path().join("short-keys.sh");
    std::fs::write(&hook, HOOK).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let broker = DevBroker::start_with_policy(policy.path(), &[]);
    let mut station = Workstation::new(&broker, "alice");
    station.start_agent();
    let (id, _) = granted(&station.json(&["request", "short", "--role", "admin", "--for", "10m"]));
    station.wait_for("holding the grant", |s| Workstation::held(s, &id).is_some());

    let mut seen = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        let run = station.hourglass(&["credential-process", &id]);
        assert!(run.ok, "keys are always at hand while the grant lives: {}", run.stderr);
        let keys: Value = serde_json::from_str(&run.stdout).expect("JSON");
        let ends = millis(&keys["Expiration"]);
        assert!(ends > now_millis(), "never keys that already ended: {keys}");
        seen.insert(keys["AccessKeyId"].as_str().expect("key id").to_owned());
        std::thread::sleep(Duration::from_millis(250));
    }
    // Twelve seconds of four-second keys, fetched halfway: about six sets.
    assert!(seen.len() >= 3, "the agent fetched fresh keys by itself: {seen:?}");
}
