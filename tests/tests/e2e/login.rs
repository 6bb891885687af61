//! Logging in with `hourglass login` against a real OpenID Connect provider
//! (npm oidc-provider) and against `hourglassd dev`'s development issuer,
//! with sessions kept in a real Secret Service (gnome-keyring on a private
//! session bus). A headless browser plays the person at the login pages.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hourglass_e2e::keyring::SessionBus;
use hourglass_e2e::oidc::{Browser, OidcProvider, Page};
use hourglass_e2e::{DevBroker, Run, bin};
use serde_json::Value;

/// `hourglassd serve` with the demo policy whose people log in at `idp`.
fn broker_for(idp: &OidcProvider, session_lifetime: &str) -> (DevBroker, tempfile::TempDir) {
    broker_for_edited(idp, session_lifetime, |policy| policy)
}

/// [`broker_for`], the demo policy edited first by `edit`.
fn broker_for_edited(
    idp: &OidcProvider,
    session_lifetime: &str,
    edit: impl Fn(String) -> String,
) -> (DevBroker, tempfile::TempDir) {
    let config = tempfile::tempdir().expect("temp dir");
    hourglass_e2e::copy_demo_policy(config.path(), |toml| toml);
    let toml = edit(std::fs::read_to_string(config.path().join("hourglass.toml")).expect("hourglass.toml"));
    let broker = format!(
        "[broker]\ndata_dir = \"data\"\n\n[broker.login]\nissuer = \"{}\"\nclient_id = \"hourglass\"\nsession_lifetime = \"{session_lifetime}\"\n\n",
        idp.issuer
    );
    std::fs::write(config.path().join("hourglass.toml"), broker + &toml).expect("hourglass.toml");
    let broker = DevBroker::serve(config.path(), Default::default());
    (broker, config)
}

/// `hourglass ARGS` against `broker`, with no token in the environment:
/// whatever it knows comes from the keyring on `bus`.
fn hourglass(broker: &str, env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = Command::new(bin("hourglass"));
    command
        .args(args)
        .env_remove("HOURGLASS_TOKEN")
        .env("HOURGLASS_BROKER", broker)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

fn run(mut command: Command) -> Run {
    Run::from(command.output().expect("hourglass runs"))
}

fn json(run: &Run, what: &str) -> Value {
    assert!(run.ok, "{what} failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {}", run.stdout))
}

/// A `hourglass login` in progress: killed if the test fails before it ends.
struct LoginProcess {
    child: Option<Child>,
    stderr_lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
    seen: String,
}

impl LoginProcess {
    fn start(mut command: Command) -> LoginProcess {
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("login starts");
        let stderr_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        LoginProcess { child: Some(child), stderr_lines, seen: String::new() }
    }

    /// The first line of stderr (trimmed) for which `pick` says yes.
    fn line(&mut self, pick: impl Fn(&str) -> Option<String>) -> String {
        for line in self.stderr_lines.by_ref() {
            let line = line.expect("stderr");
            self.seen.push_str(&line);
            self.seen.push('\n');
            if let Some(found) = pick(line.trim()) {
                return found;
            }
        }
        panic!("hourglass login ended without printing what the test waits for:\n{}", self.seen)
    }

    /// The authorization URL it prints.
    fn authorization_url(&mut self) -> String {
        self.line(|line| line.starts_with("http").then(|| line.to_owned()))
    }

    /// The device grant's complete verification URI it prints.
    fn verification_uri_complete(&mut self) -> String {
        self.line(|line| {
            line.strip_prefix("(or open ").and_then(|rest| rest.strip_suffix(" directly)")).map(str::to_owned)
        })
    }

    fn finish(mut self) -> Run {
        let mut child = self.child.take().expect("running");
        let mut stdout = String::new();
        child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
        let mut stderr = std::mem::take(&mut self.seen);
        for line in self.stderr_lines.by_ref() {
            stderr.push_str(&line.expect("stderr"));
            stderr.push('\n');
        }
        let status = child.wait().expect("login ends");
        Run { ok: status.success(), stdout, stderr }
    }
}

impl Drop for LoginProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `hourglass login --no-browser` as `login` at oidc-provider, driven by the headless browser.
fn log_in_with_browser(broker: &str, env: &[(String, String)], login: &str, extra: &[&str]) -> Run {
    let mut args = vec!["login", "--no-browser"];
    args.extend_from_slice(extra);
    let mut process = LoginProcess::start(hourglass(broker, env, &args));
    let url = process.authorization_url();
    assert!(url.contains("code_challenge_method=S256"), "the login uses PKCE S256: {url}");
    assert!(url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"), "a loopback redirect (RFC 8252): {url}");
    let last = Browser::new().log_in_at_provider(&url, login);
    assert!(
        last.body.contains("You are logged in to Hourglass"),
        "the loopback page confirms the login: {}",
        last.body
    );
    process.finish()
}

#[test]
fn login_with_browser_keeps_the_session_in_the_keyring_for_new_processes_until_logout() {
    let idp = OidcProvider::start();
    let (broker, _config) = broker_for(&idp, "8h");
    let bus = SessionBus::with_keyring();
    let env = bus.env();

    let login = log_in_with_browser(&broker.url, &env, "alice", &[]);
    assert!(login.ok, "the login succeeds: {}", login.stderr);
    assert!(
        login.stderr.contains("Logged in as alice@acme.example"),
        "the login names the principal: {}",
        login.stderr
    );
    assert!(login.stdout.is_empty(), "no token is printed when the keyring keeps it: {}", login.stdout);
    let stored = bus.stored_session(&broker.url).expect("the Secret Service holds the session");
    assert!(
        stored.contains("session_token") && stored.contains("refresh_token"),
        "the entry holds the session and the refresh token (as JSON)"
    );

    // A new process knows nothing but what the keyring holds.
    let me = json(&run(hourglass(&broker.url, &env, &["whoami", "--json"])), "whoami");
    assert_eq!(me["id"], "alice@acme.example", "the email claim names the principal: {me}");
    assert_eq!(me["groups"], serde_json::json!(["engineers"]), "groups come from the IdP: {me}");
    assert_eq!(me["session"]["source"], "keyring", "the session came from the keyring: {me}");
    assert_eq!(me["session"]["idp"], serde_json::json!(idp.issuer), "whoami names the IdP: {me}");
    let text = run(hourglass(&broker.url, &env, &["whoami"]));
    assert!(text.ok && text.stdout.contains("session: until"), "whoami shows the session's end: {}", text.stdout);

    let request = json(
        &run(hourglass(
            &broker.url,
            &env,
            &["request", "orders-api", "--role", "read", "--for", "5m", "--reason", "reports", "--json"],
        )),
        "request",
    );
    assert_eq!(request["state"], "approved", "an engineer (by the IdP's groups) reads orders at once: {request}");

    // Someone who copied the session token before the logout.
    let copied: Value = serde_json::from_str(&stored).expect("the stored session is JSON");
    let copied = copied["session_token"].as_str().expect("a session token").to_owned();
    let with_copy = |args: &[&str]| {
        let mut command = Command::new(bin("hourglass"));
        command.args(args).env("HOURGLASS_TOKEN", &copied).env("HOURGLASS_BROKER", &broker.url);
        run(command)
    };
    assert!(with_copy(&["whoami"]).ok, "the copied session works while alice is logged in");

    let logout = run(hourglass(&broker.url, &env, &["logout"]));
    assert!(logout.ok, "logout succeeds: {}", logout.stderr);
    assert!(logout.stderr.contains("revoked the refresh token"), "logout revokes at the IdP: {}", logout.stderr);
    assert!(bus.stored_session(&broker.url).is_none(), "logout removes the keyring entry");
    let refused = with_copy(&["whoami"]);
    assert!(
        !refused.ok && refused.stderr.contains("ended (logged out)"),
        "the broker ended the session too: a copy of it is refused: {}",
        refused.stderr
    );
    let after = run(hourglass(&broker.url, &env, &["whoami"]));
    assert!(!after.ok && after.stderr.contains("not logged in"), "no session after logout: {}", after.stderr);
}

#[test]
fn approving_what_needs_a_fresh_login_sends_the_approver_back_to_the_identity_provider() {
    let idp = OidcProvider::start();
    let (broker, _config) = broker_for_edited(&idp, "8h", |policy| {
        let edited = policy.replacen(
            "[resources.orders-api.roles.write]\n",
            "[resources.orders-api.roles.write]\napproval_max_auth_age = \"5m\"\n",
            1,
        );
        assert_ne!(edited, policy, "the demo policy has orders-api/write");
        edited
    });
    // alice asks (her session only in this test's memory).
    let alice = log_in_with_browser(&broker.url, &[], "alice", &["--print-token"]);
    let token = alice.stdout.trim().strip_prefix("export HOURGLASS_TOKEN=").expect("a token").to_owned();
    let mut filing = hourglass(
        &broker.url,
        &[],
        &["request", "orders-api", "--role", "write", "--for", "10m", "--reason", "fix", "--json"],
    );
    filing.env("HOURGLASS_TOKEN", &token);
    let filed = json(&run(filing), "request");
    let id = filed["id"].as_str().expect("a request id").to_owned();

    // With bob's session in HOURGLASS_TOKEN, the CLI cannot log in for
    // him: it says how.
    let bob_in_env = log_in_with_browser(&broker.url, &[], "bob", &["--print-token"]);
    let bob_token = bob_in_env.stdout.trim().strip_prefix("export HOURGLASS_TOKEN=").expect("a token").to_owned();
    let mut refused = hourglass(&broker.url, &[], &["approve", &id]);
    refused.env("HOURGLASS_TOKEN", &bob_token);
    let refused = run(refused);
    assert!(!refused.ok && refused.stderr.contains("hourglass login --fresh --print-token"), "{}", refused.stderr);

    // bob logged in without the identity provider saying when (no
    // auth_time): approving sends him back to log in; the person logs in
    // again; the approval then counts, in the same command.
    let bus = SessionBus::with_keyring();
    let env = bus.env();
    assert!(log_in_with_browser(&broker.url, &env, "bob", &[]).ok, "bob logs in");
    let mut approving = hourglass(&broker.url, &env, &["approve", &id, "--json"]);
    approving.env("BROWSER", "true"); // the URL is printed as well; the test's browser follows it
    let mut process = LoginProcess::start(approving);
    let url = process.authorization_url();
    assert!(url.contains("prompt=login") && url.contains("max_age=0"), "a login, not a silent SSO: {url}");
    let last = Browser::new().log_in_at_provider(&url, "bob");
    assert!(last.body.contains("You are logged in to Hourglass"), "{}", last.body);
    let approved = process.finish();
    assert!(approved.ok, "the approval goes through after the fresh login: {}", approved.stderr);
    assert!(approved.stderr.contains("needs a login within the last 5m"), "says why: {}", approved.stderr);
    let outcome: Value = serde_json::from_str(&approved.stdout).expect("JSON");
    assert_eq!(outcome["state"], "approved", "{outcome}");
    assert_eq!(outcome["decisions"][0]["approver"], "bob@acme.example");
}

#[test]
fn login_with_device_grant_maps_groups_to_policy_and_renews_the_session_silently() {
    let idp = OidcProvider::start();
    let (broker, _config) = broker_for(&idp, "10s");
    let bus = SessionBus::with_keyring();
    let env = bus.env();

    let mut process = LoginProcess::start(hourglass(&broker.url, &env, &["login", "--device"]));
    let complete = process.verification_uri_complete();
    let last = Browser::new().log_in_at_provider(&complete, "mallory");
    assert!(last.body.contains("Sign-in Success"), "the IdP confirms the device login: {}", last.body);
    let login = process.finish();
    assert!(login.ok, "the device login succeeds: {}", login.stderr);

    let me = json(&run(hourglass(&broker.url, &env, &["whoami", "--json"])), "whoami");
    assert_eq!(me["groups"], serde_json::json!(["contractors"]), "mallory is a contractor at the IdP: {me}");
    let refused = run(hourglass(
        &broker.url,
        &env,
        &["request", "orders-api", "--role", "read", "--for", "5m", "--reason", "reports"],
    ));
    assert!(!refused.ok && refused.stderr.contains("policy"), "no Cedar permit for contractors: {}", refused.stderr);

    // The session lasts 10 s: once it has ended, the next command renews
    // it with the (rotating) refresh token, without a word to the user.
    let first_end = me["session"]["expires_at"].as_str().expect("the session's end").to_owned();
    let stored_before = bus.stored_session(&broker.url).expect("a stored session");
    std::thread::sleep(Duration::from_secs(11));
    let renewed = json(&run(hourglass(&broker.url, &env, &["whoami", "--json"])), "whoami after the end");
    assert_eq!(renewed["id"], "mallory@acme.example", "the renewed session is the same principal: {renewed}");
    assert_ne!(renewed["session"]["expires_at"].as_str(), Some(first_end.as_str()), "a new session: {renewed}");
    let stored_after = bus.stored_session(&broker.url).expect("a stored session");
    assert_ne!(stored_before, stored_after, "the renewed session and rotated refresh token are stored");

    // When renewal is impossible (the IdP is gone), the user is told to log in again.
    drop(idp);
    std::thread::sleep(Duration::from_secs(11));
    let ended = run(hourglass(&broker.url, &env, &["whoami"]));
    assert!(!ended.ok && ended.stderr.contains("log in again"), "a clear way out: {}", ended.stderr);
}

#[test]
fn login_without_a_secret_service_says_so_and_offers_a_session_in_memory() {
    let idp = OidcProvider::start();
    let (broker, _config) = broker_for(&idp, "8h");
    let bus = SessionBus::without_keyring();
    let env = bus.env();

    let refused = run(hourglass(&broker.url, &env, &["login", "--no-browser"]));
    assert!(!refused.ok, "login refuses to run when the session cannot be kept: {}", refused.stderr);
    assert!(refused.stderr.contains("keyring is unavailable"), "it says why: {}", refused.stderr);
    assert!(refused.stderr.contains("--print-token"), "and offers the in-memory session: {}", refused.stderr);
    assert!(!refused.stderr.contains("http://"), "before sending anyone to a browser: {}", refused.stderr);

    let printed = log_in_with_browser(&broker.url, &env, "alice", &["--print-token"]);
    assert!(printed.ok, "--print-token logs in without a keyring: {}", printed.stderr);
    let token = printed
        .stdout
        .trim()
        .strip_prefix("export HOURGLASS_TOKEN=")
        .unwrap_or_else(|| panic!("it prints one export line: {}", printed.stdout))
        .to_owned();
    let mut whoami = hourglass(&broker.url, &env, &["whoami", "--json"]);
    whoami.env("HOURGLASS_TOKEN", &token);
    let me = json(&run(whoami), "whoami with the printed token");
    assert_eq!(me["id"], "alice@acme.example", "the printed session works: {me}");
    assert_eq!(me["session"]["source"], "environment", "it came from the environment: {me}");

    let no_bus = [("DBUS_SESSION_BUS_ADDRESS".to_owned(), "unix:path=/nonexistent/hourglass-test-bus".to_owned())];
    let without = run(hourglass(&broker.url, &no_bus, &["whoami"]));
    assert!(
        !without.ok && without.stderr.contains("keyring is unavailable") && without.stderr.contains("--print-token"),
        "with no session bus at all, the same clear advice: {}",
        without.stderr
    );
}

#[test]
fn login_at_the_dev_issuer_goes_through_the_same_code_and_device_flows() {
    let broker = DevBroker::start();
    let bus = SessionBus::with_keyring();
    let mut env = bus.env();
    env.extend(broker.env());
    let browser = Browser::trusting(broker.ca.as_ref().expect("dev serves HTTPS"));

    let mut process = LoginProcess::start(hourglass(&broker.url, &env, &["login", "--no-browser"]));
    let url = process.authorization_url();
    assert!(url.starts_with(&format!("{}/dev/authorize?", broker.url)), "the dev issuer's authorize page: {url}");
    let picker = browser.get(&url);
    assert!(picker.body.contains("Development only — no passwords"), "the picker is clearly marked: {}", picker.body);
    let done = browser.submit(&picker, &[("user", "bob@acme.example")]);
    assert!(done.body.contains("You are logged in to Hourglass"), "back at the loopback listener: {}", done.body);
    let login = process.finish();
    assert!(login.ok, "the dev login succeeds: {}", login.stderr);
    assert!(login.stderr.contains("DEVELOPMENT"), "the CLI says it is the dev issuer: {}", login.stderr);
    let me = json(&run(hourglass(&broker.url, &env, &["whoami", "--json"])), "whoami");
    assert_eq!(me["id"], "bob@acme.example", "the picked user: {me}");
    assert_eq!(me["groups"], serde_json::json!(["sre"]), "with the demo user's groups: {me}");
    assert_eq!(me["session"]["idp"], serde_json::json!(format!("{}/dev", broker.url)), "from the dev issuer: {me}");

    let mut process = LoginProcess::start(hourglass(&broker.url, &env, &["login", "--device"]));
    let complete = process.verification_uri_complete();
    let page = browser.get(&complete);
    assert!(page.body.contains("Development only"), "the device page is clearly marked: {}", page.body);
    let approved = browser.submit(&page, &[("user", "carol@acme.example")]);
    assert!(approved.body.contains("signed in as"), "the device is approved: {}", approved.body);
    let login = process.finish();
    assert!(login.ok, "the dev device login succeeds: {}", login.stderr);
    let me = json(&run(hourglass(&broker.url, &env, &["whoami", "--json"])), "whoami");
    assert_eq!(me["id"], "carol@acme.example", "the device login replaced the session: {me}");

    // The printed demo tokens keep working for scripts.
    let scripted = broker.json("alice", &["whoami"]);
    assert_eq!(scripted["id"], "alice@acme.example", "HOURGLASS_TOKEN still wins: {scripted}");
}

/// Follows the identity provider's login forms as `login` until the
/// browser is back at `base`; that page.
fn log_in_back_to(browser: &Browser, mut page: Page, base: &str, login: &str) -> Page {
    for _ in 0..8 {
        if page.url.starts_with(base) {
            return page;
        }
        let values: Vec<(&str, &str)> = if page.body.contains("name=\"login\"") {
            vec![("login", login), ("password", "any password will do")]
        } else {
            Vec::new()
        };
        page = browser.submit(&page, &values);
    }
    panic!("the login did not come back to {base}; last page {}: {}", page.url, page.body)
}

/// A broker serving the approval page (its people log in at oidc-provider,
/// which has the page's web client), orders-api/write decided only after a
/// login within `max_auth_age` and announced on a webhook; alice has filed
/// a request for it.
struct ApprovalPage {
    base: String,
    link: String,
    id: String,
    /// alice's session.
    token: String,
    broker: DevBroker,
    idp: OidcProvider,
    _config: tempfile::TempDir,
    _receiver: hourglass_e2e::receiver::Receiver,
}

impl ApprovalPage {
    fn start(max_auth_age: &str) -> ApprovalPage {
        let port = hourglass_e2e::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let idp = OidcProvider::start_with_web_client(&format!("{base}/approve/callback"));
        let config = tempfile::tempdir().expect("temp dir");
        hourglass_e2e::copy_demo_policy(config.path(), |toml| toml);
        let toml = std::fs::read_to_string(config.path().join("hourglass.toml")).expect("hourglass.toml").replacen(
            "[resources.orders-api.roles.write]\n",
            &format!(
                "[resources.orders-api.roles.write]\napproval_max_auth_age = \"{max_auth_age}\"\nnotify = [\"hook\"]\n"
            ),
            1,
        );
        let receiver = hourglass_e2e::receiver::Receiver::start();
        std::fs::write(config.path().join("webhook-secret"), "whsec_0123456789abcdef").expect("the secret");
        let broker_table = format!(
            "[broker]\ndata_dir = \"data\"\npublic_url = \"{base}\"\n\n[broker.login]\nissuer = \"{}\"\nclient_id = \"hourglass\"\n\
         web_client_id = \"hourglass-web\"\n\n[broker.channels.hook]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\
         secret_file = \"webhook-secret\"\n\n",
            idp.issuer, receiver.url
        );
        std::fs::write(config.path().join("hourglass.toml"), broker_table + &toml).expect("hourglass.toml");
        let broker = DevBroker::serve_on(config.path(), &format!("127.0.0.1:{port}"), Default::default());

        let alice = log_in_with_browser(&broker.url, &[], "alice", &["--print-token"]);
        let token = alice.stdout.trim().strip_prefix("export HOURGLASS_TOKEN=").expect("a token").to_owned();
        let mut filing = hourglass(
            &broker.url,
            &[],
            &["request", "orders-api", "--role", "write", "--for", "10m", "--reason", "<b>fix</b> order 9", "--json"],
        );
        filing.env("HOURGLASS_TOKEN", &token);
        let id = json(&run(filing), "request")["id"].as_str().expect("an id").to_owned();
        let link = format!("{base}/approve/{id}");
        let announced = receiver.wait_for("/hook", 1, Duration::from_secs(30));
        assert_eq!(announced[0].json()["approve_url"], link.as_str(), "the announcement links to the page");

        ApprovalPage { base, link, id, token, broker, idp, _config: config, _receiver: receiver }
    }
}

#[test]
fn approval_page_logs_in_afresh_refuses_forged_forms_and_decides_like_the_api() {
    let ApprovalPage { base, link, id, token, broker, idp, _config, _receiver } = ApprovalPage::start("3s");
    // The link sends the browser to log in, every time: prompt=login,
    // max_age=0; the login's state in an HttpOnly cookie for /approve only.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let raw = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let first = raw.get(&link).send().expect("the page answers");
    assert_eq!(first.status().as_u16(), 303);
    let to = first.headers()["location"].to_str().expect("a location").to_owned();
    assert!(to.starts_with(&idp.issuer) && to.contains("prompt=login") && to.contains("max_age=0"), "{to}");
    assert!(to.contains("code_challenge_method=S256") && to.contains("client_id=hourglass-web"), "{to}");
    let cookie = first.headers()["set-cookie"].to_str().expect("a cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/approve"),
        "{cookie}"
    );

    // bob logs in and sees the request, the requester's markup as text.
    let browser = Browser::new();
    let page = log_in_back_to(&browser, browser.get(&link), &base, "bob");
    assert_eq!(page.url, link, "back on the request's page");
    assert!(page.body.contains("alice@acme.example asks for orders-api · write"), "{}", page.body);
    assert!(page.body.contains("&lt;b&gt;fix&lt;/b&gt; order 9") && !page.body.contains("<b>fix"), "{}", page.body);
    assert!(page.body.contains("name=\"csrf\""), "the form carries its token");
    let headers = raw.get(&link).send().expect("answers");
    assert_eq!(headers.status().as_u16(), 303, "no session without its cookie");

    // A form forged elsewhere (its token guessed) is refused; nothing decided.
    let forged = browser.submit(&page, &[("csrf", "0".repeat(64).as_str()), ("verdict", "approve")]);
    assert_eq!(forged.status, 403, "{}", forged.body);
    let mut state = hourglass(&broker.url, &[], &["requests", "--json"]);
    state.env("HOURGLASS_TOKEN", &token);
    assert_eq!(json(&run(state), "requests")["mine"][0]["state"], "pending", "nothing decided");

    // Older than policy's 3 s: the decision asks for a login again.
    std::thread::sleep(Duration::from_secs(4));
    let stale = browser.submit(&page, &[("verdict", "approve"), ("comment", "ok from my phone")]);
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(stale.body.contains("needs a login within the last 3s"), "{}", stale.body);
    assert!(stale.body.contains(&format!("/approve/{id}?login=1")), "a link to log in again: {}", stale.body);

    // Logged in again: the approval counts, as through the API.
    let again = log_in_back_to(&browser, browser.get(&format!("{link}?login=1")), &base, "bob");
    let approved = browser.submit(&again, &[("verdict", "approve"), ("comment", "ok from my phone")]);
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(approved.body.contains("Approved: the access starts now."), "{}", approved.body);
    let mut state = hourglass(&broker.url, &[], &["requests", "--json"]);
    state.env("HOURGLASS_TOKEN", &token);
    let mine = &json(&run(state), "requests")["mine"][0];
    assert_eq!(mine["state"], "approved", "{mine}");
    assert_eq!(mine["decisions"][0]["approver"], "bob@acme.example");
    assert_eq!(mine["decisions"][0]["comment"], "ok from my phone");
}

/// The approval page as a person sees it on a phone: a real Chromium
/// (headless, 390×844), the identity provider's login, the page, Approve.
#[test]
fn approval_page_in_chromium_on_a_phone_screen_logs_in_and_approves() {
    use fantoccini::{ClientBuilder, Locator};
    use hourglass_e2e::chromium::ChromeDriver;

    let setup = ApprovalPage::start("5m");
    let driver = ChromeDriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let said = runtime.block_on(async {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(ChromeDriver::phone());
        let browser = builder.connect(&driver.url()).await.expect("a Chromium session");
        let shot = async |name: &str| {
            let png = browser.screenshot().await.expect("a screenshot");
            let dir = hourglass_e2e::desktop::screenshots_dir();
            std::fs::write(dir.join(format!("approve-page-{name}.png")), png).expect("saved");
        };
        browser.goto(&setup.link).await.expect("the link opens");
        // At the identity provider: log in, then consent, until back at the broker.
        for _ in 0..6 {
            let url = browser.current_url().await.expect("a URL").to_string();
            if url.starts_with(&setup.base) {
                break;
            }
            if let Ok(login) = browser.find(Locator::Css("input[name=login]")).await {
                login.send_keys("bob").await.expect("typed");
                let password = browser.find(Locator::Css("input[name=password]")).await.expect("a password box");
                password.send_keys("any password will do").await.expect("typed");
            }
            browser.find(Locator::Css("button[type=submit]")).await.expect("a button").click().await.expect("clicked");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let heading = browser.find(Locator::Css("h1")).await.expect("the page's heading").text().await.expect("text");
        assert_eq!(heading, "alice@acme.example asks for orders-api · write");
        let reason = browser.find(Locator::Css("dl")).await.expect("the facts").text().await.expect("text");
        assert!(reason.contains("<b>fix</b> order 9"), "the reason as typed, not as markup: {reason}");
        shot("request").await;
        let comment = browser.find(Locator::Css("input[name=comment]")).await.expect("the comment box");
        comment.send_keys("looks right").await.expect("typed");
        browser.find(Locator::Css("button[value=approve]")).await.expect("Approve").click().await.expect("clicked");
        let status = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("[role=status]"))
            .await
            .expect("the outcome is shown");
        let said = status.text().await.expect("text");
        shot("approved").await;
        let _ = browser.close().await;
        said
    });
    assert_eq!(said, "Approved: the access starts now.");
    let mut state = hourglass(&setup.broker.url, &[], &["requests", "--json"]);
    state.env("HOURGLASS_TOKEN", &setup.token);
    let mine = &json(&run(state), "requests")["mine"][0];
    assert_eq!(
        (mine["state"].as_str(), mine["decisions"][0]["comment"].as_str()),
        (Some("approved"), Some("looks right"))
    );
}
