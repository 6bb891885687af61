//! The end-to-end testkit: starts real `hourglassd` processes on loopback
//! ports with throwaway data directories, and runs the real `hourglass`
//! binary against them. Binaries come from the same target directory as the
//! test (`cargo build --workspace --bins` first; `scripts/test` does).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test support: failing loudly is the point")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod ca;
pub mod chromium;
pub mod desktop;
pub mod issuer;
pub mod keyring;
pub mod moto;
pub mod oidc;
pub mod postgres;
pub mod proxy;
pub mod receiver;
pub mod replicas;
pub mod rsyslog;
pub mod shell;
pub mod smtp;
pub mod sshd;
pub mod watchdog;

/// A binary of this workspace, built next to the running test (or next to
/// the running benchmark).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A benchmark runs from target/<profile>/; a test from target/<profile>/deps/.
    let beside = exe.parent().expect("target directory").join(name);
    if beside.exists() {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// A `hourglassd dev` process with its own port and data directory. Killed on drop.
pub struct DevBroker {
    child: Option<Child>,
    pub url: String,
    /// The CA that signs the broker's certificate (dev: `DATA/tls/ca.pem`);
    /// None for a plain-HTTP broker.
    pub ca: Option<PathBuf>,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    tokens: BTreeMap<String, String>,
    /// How it was launched, for [`DevBroker::restart`].
    policy_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    /// Every test that starts a broker is bounded (see [`watchdog`]).
    _watchdog: watchdog::Watchdog,
}

impl DevBroker {
    pub fn start() -> DevBroker {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_path_buf();
        let mut broker = DevBroker::start_in(&data_dir);
        broker._temp = Some(temp);
        broker
    }

    /// Starts a dev broker (demo users and tokens) enforcing the policy in
    /// `policy_dir`, with `env` added to its environment (an admin DSN, say).
    pub fn start_with_policy(policy_dir: &Path, env: &[(&str, &str)]) -> DevBroker {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut broker = DevBroker::launch(temp.path(), Some(policy_dir), env, "127.0.0.1:0");
        broker._temp = Some(temp);
        broker
    }

    /// Starts (or restarts) a dev broker on an existing data directory.
    pub fn start_in(data_dir: &Path) -> DevBroker {
        DevBroker::launch(data_dir, None, &[], "127.0.0.1:0")
    }

    /// Restarts a dev broker started with [`DevBroker::start_with_policy`]
    /// on its data directory (`data_dir`), with the same policy and `env`.
    pub fn start_in_with_policy(data_dir: &Path, policy_dir: &Path, env: &[(&str, &str)]) -> DevBroker {
        DevBroker::launch(data_dir, Some(policy_dir), env, "127.0.0.1:0")
    }

    /// Starts a dev broker in `data_dir` (made if missing, kept afterwards)
    /// enforcing `policy_dir`, restartable on the same address.
    pub fn start_at(data_dir: &Path, policy_dir: &Path, env: &[(&str, &str)]) -> DevBroker {
        DevBroker::launch(data_dir, Some(policy_dir), env, "127.0.0.1:0")
    }

    /// Kills the broker if it runs (SIGKILL: no shutdown work), then starts
    /// it again on the same data directory, policy, environment and
    /// address, so that clients reconnect to the same URL. Returns once it
    /// serves.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .expect("an http(s):// URL")
            .to_owned();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let policy_dir = self.policy_dir.clone();
        let mut fresh = DevBroker::launch(&self.data_dir, policy_dir.as_deref(), &env, &listen);
        self.child = fresh.child.take();
        self.tokens = std::mem::take(&mut fresh.tokens);
    }

    fn launch(data_dir: &Path, policy_dir: Option<&Path>, env: &[(&str, &str)], listen: &str) -> DevBroker {
        let watchdog = watchdog::Watchdog::for_test();
        let mut command = Command::new(bin("hourglassd"));
        command.args(["dev", "--listen", listen, "--data-dir"]).arg(data_dir);
        if let Some(dir) = policy_dir {
            command.arg("--config").arg(dir);
        }
        let mut child = command
            .envs(env.iter().copied())
            .env("HOURGLASS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hourglassd starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut ca) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("hourglassd stdout");
            if let Some(found) = line.strip_prefix("export HOURGLASS_BROKER=") {
                url = Some(found.trim().to_owned());
            }
            if let Some(found) = line.strip_prefix("export HOURGLASS_CA=") {
                ca = Some(PathBuf::from(found.trim()));
            }
            if line.starts_with("export HOURGLASS_TOKEN=") {
                break; // the tokens file is written before anything is printed
            }
        }
        // Keep reading so that the broker never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let url = url.expect("hourglassd dev prints HOURGLASS_BROKER");
        let text = std::fs::read_to_string(data_dir.join("dev-users.json")).expect("dev-users.json");
        let tokens: BTreeMap<String, String> = serde_json::from_str(&text).expect("dev-users.json is a JSON object");
        DevBroker {
            child: Some(child),
            url,
            ca,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            tokens,
            policy_dir: policy_dir.map(Path::to_path_buf),
            env: env.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            _watchdog: watchdog,
        }
    }

    /// Starts `hourglassd serve --config DIR` on a free loopback port; its
    /// users bring their own tokens (`tokens` maps names to them).
    pub fn serve(config: &Path, tokens: BTreeMap<String, String>) -> DevBroker {
        DevBroker::serve_on(config, "127.0.0.1:0", tokens)
    }

    /// Starts `hourglassd serve --config DIR --listen LISTEN`. Its clients
    /// trust the system's roots until the test sets [`DevBroker::ca`].
    pub fn serve_on(config: &Path, listen: &str, tokens: BTreeMap<String, String>) -> DevBroker {
        let watchdog = watchdog::Watchdog::for_test();
        let mut child = Command::new(bin("hourglassd"))
            .args(["serve", "--listen", listen, "--config"])
            .arg(config)
            .env("HOURGLASS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hourglassd starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.expect("hourglassd stderr");
            if let Some(found) = line.strip_prefix("hourglassd listening on ") {
                url = Some(found.trim().to_owned());
                break;
            }
            eprintln!("{line}");
        }
        std::thread::spawn(move || lines.for_each(drop));
        let url = url.expect("hourglassd serve says where it listens");
        DevBroker {
            child: Some(child),
            url,
            ca: None,
            data_dir: config.join("data"),
            _temp: None,
            tokens,
            policy_dir: None,
            env: Vec::new(),
            _watchdog: watchdog,
        }
    }

    /// Like [`DevBroker::serve`], with `env` added to the broker's
    /// environment and everything it writes to stderr (its log, at `level`,
    /// and any panic) kept in the file `log`, for tests that read it.
    pub fn serve_logged(
        config: &Path,
        tokens: BTreeMap<String, String>,
        env: &[(&str, &str)],
        log: &Path,
        level: &str,
    ) -> DevBroker {
        let watchdog = watchdog::Watchdog::for_test();
        let file = std::fs::File::create(log).expect("the broker's log file");
        let child = Command::new(bin("hourglassd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("HOURGLASS_LOG", level)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("hourglassd starts");
        let listening = eventually(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(log).ok()?;
            let line = text.lines().find_map(|line| line.strip_prefix("hourglassd listening on "))?;
            Some(line.trim().to_owned())
        });
        let mut broker = DevBroker {
            child: Some(child),
            url: String::new(),
            ca: None,
            data_dir: config.join("data"),
            _temp: None,
            tokens,
            policy_dir: None,
            env: Vec::new(),
            _watchdog: watchdog,
        };
        match listening {
            Some(url) => broker.url = url,
            None => {
                broker.kill();
                panic!("hourglassd serve did not start:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
        }
        broker
    }

    pub fn token(&self, user: &str) -> &str {
        self.tokens.get(user).unwrap_or_else(|| panic!("no dev user {user}"))
    }

    /// Runs `hourglass ARGS` as `user`.
    pub fn hourglass(&self, user: &str, args: &[&str]) -> Run {
        let output = self.command(user, args).output().expect("hourglass runs");
        Run::from(output)
    }

    /// `hourglass ARGS --json` as `user`, which must succeed; its JSON output.
    pub fn json(&self, user: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.hourglass(user, &args);
        assert!(run.ok, "hourglass {args:?} as {user} failed: {}", run.stderr);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("hourglass {args:?} printed no JSON ({e}): {}", run.stdout))
    }

    pub fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut command = Command::new(bin("hourglass"));
        command.args(args).env("HOURGLASS_TOKEN", self.token(user));
        self.point_at(&mut command);
        command
    }

    /// Points a client process at this broker: `HOURGLASS_BROKER`, and
    /// `HOURGLASS_CA` when it has a CA (removed otherwise, whatever the
    /// test's own environment says).
    pub fn point_at(&self, command: &mut Command) {
        command.env("HOURGLASS_BROKER", &self.url);
        match &self.ca {
            Some(ca) => command.env("HOURGLASS_CA", ca),
            None => command.env_remove("HOURGLASS_CA"),
        };
    }

    /// `HOURGLASS_BROKER` and (when it has a CA) `HOURGLASS_CA` for this broker.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut vars = vec![("HOURGLASS_BROKER".to_owned(), self.url.clone())];
        if let Some(ca) = &self.ca {
            vars.push(("HOURGLASS_CA".to_owned(), ca.display().to_string()));
        }
        vars
    }

    /// What an in-process client trusts for this broker: its CA alone.
    pub fn trust(&self) -> hourglass_client::Trust {
        match &self.ca {
            Some(ca) => hourglass_client::Trust::pinned(&self.url, ca).expect("the broker's CA loads"),
            None => hourglass_client::Trust::system(),
        }
    }

    /// `GET path` without a token, trusting the broker's CA; the body,
    /// which must come with a success status.
    pub fn get(&self, path: &str) -> String {
        let (status, body) = self.http("GET", path, None, None);
        let body = String::from_utf8(body).expect("a text body");
        assert!((200..300).contains(&status), "GET {path}: HTTP {status}: {body}");
        body
    }

    /// One HTTP request to the broker (JSON `body`, bearer `token`),
    /// trusting its CA: (status, body). For the broker's public documents
    /// and for status codes the client library hides.
    pub fn http(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Vec<u8>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("the broker's CA file");
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("a PEM CA"));
        }
        let url = format!("{}{path}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = builder.build().expect("an HTTP client").request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().unwrap_or_else(|error| panic!("{url}: {error}"));
        let status = response.status().as_u16();
        (status, response.bytes().expect("a response body").to_vec())
    }

    /// An in-process client of this broker acting as `user`.
    pub fn client(&self, user: &str) -> hourglass_client::Client {
        hourglass_client::Client::with_trust(&self.url, self.trust(), self.token(user)).expect("a client")
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the broker the hard way: no shutdown work happens.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `hourglassd ARGS` (not the server) against this broker's data.
    pub fn hourglassd(&self, args: &[&str]) -> Run {
        Run::from(Command::new(bin("hourglassd")).args(args).output().expect("hourglassd runs"))
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port free right now (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Copies the demo policy (`demo/policy`) into `into`, its `hourglass.toml`
/// passed through `edit` on the way (`|toml| toml` for the demo as it is).
pub fn copy_demo_policy(into: &Path, edit: impl FnOnce(String) -> String) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/policy");
    for entry in std::fs::read_dir(&demo).expect("the demo policy") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), into.join(entry.file_name())).expect("copied");
    }
    let toml = into.join("hourglass.toml");
    let text = std::fs::read_to_string(&toml).expect("hourglass.toml");
    std::fs::write(&toml, edit(text)).expect("hourglass.toml written");
}

/// A throwaway policy directory: `hourglass.toml` and one Cedar file.
pub fn policy_dir(toml: &str, cedar: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hourglass.toml"), toml).expect("hourglass.toml");
    std::fs::write(dir.path().join("policy.cedar"), cedar).expect("policy.cedar");
    dir
}

/// The result of running a command.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`. Not a timing
/// assertion: `limit` is a generous bound on a condition the test waits for.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
