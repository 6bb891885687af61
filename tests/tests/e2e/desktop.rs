//! The desktop app, for real: `hourglass-desktop` in a private X display
//! with a notification daemon, a keyring and a tray host, driven over
//! WebDriver and its tray menu over D-Bus, against a real `hourglassd dev`.
//! Screenshots of each view are saved under `target/screenshots`.

use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hourglass_e2e::desktop::{Desktop, Driver, screenshots_dir, target_dir};
use hourglass_e2e::oidc::Browser;
use hourglass_e2e::postgres::{PostgresCluster, psql};
use hourglass_e2e::sshd::{SshAgent, Sshd, current_user};
use hourglass_e2e::{DevBroker, bin, eventually, free_port, policy_dir};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn open_app(driver: &Driver, app: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("wry"));
    capabilities.insert("tauri:options".into(), json!({ "application": app }));
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(capabilities);
    let url = driver.url();
    let session = builder.connect(&url);
    // The session is made once the app's window loaded its page; a driver
    // that lost the request would otherwise keep the test waiting for ever.
    tokio::time::timeout(Duration::from_secs(120), session)
        .await
        .expect("WebDriver opened a session with the app within 2 minutes")
        .expect("a WebDriver session with the app")
}

async fn text(client: &Client, css: &str) -> String {
    let element =
        client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    element.text().await.unwrap_or_default()
}

async fn click(client: &Client, css: &str) {
    let element =
        client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    element.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Polls the page until `css` shows text containing `wanted`.
async fn until_text(client: &Client, css: &str, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            let found = element.text().await.unwrap_or_default();
            if found.contains(wanted) {
                return found;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{css} never showed {wanted:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a WebDriver screenshot");
    std::fs::write(screenshots_dir().join(format!("desktop-{name}.png")), png).expect("saved");
}

/// Settings that make warnings observable in a test: a grant of one minute
/// gets its first warning ten seconds after issue.
fn write_settings(desktop: &Desktop, broker: &str) {
    let dir = desktop.home.path().join(".config/hourglass");
    std::fs::create_dir_all(&dir).expect("config dir");
    let settings = json!({ "broker_url": broker, "warn_before": ["50s", "20s"] });
    std::fs::write(dir.join("desktop.json"), settings.to_string()).expect("settings");
}

/// A stand-in for the system browser (`$BROWSER`): it writes down the page
/// the app opened, for the test's headless browser to visit.
fn fake_browser(desktop: &Desktop) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let opened = desktop.home.path().join("opened-url");
    let script = desktop.home.path().join("browser.sh");
    std::fs::write(&script, format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display())).expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("executable");
    (script.display().to_string(), opened)
}

/// The app (debug build) over WebDriver in `desktop`, following `broker`
/// and trusting its dev CA, with warnings early (`write_settings`) and the
/// fake system browser; returns the driver (kept while the session lives),
/// the session, the file the browser writes its page to, and the CA file.
async fn start_app(desktop: &Desktop, broker: &DevBroker) -> (Driver, Client, std::path::PathBuf, std::path::PathBuf) {
    start_app_with(desktop, broker, &[]).await
}

/// [`start_app`], with more of the app's environment.
async fn start_app_with(
    desktop: &Desktop,
    broker: &DevBroker,
    env: &[(&str, &str)],
) -> (Driver, Client, std::path::PathBuf, std::path::PathBuf) {
    write_settings(desktop, &broker.url);
    let (browser, opened) = fake_browser(desktop);
    let ca_file = broker.ca.clone().expect("dev serves HTTPS");
    let ca = ca_file.display().to_string();
    let mut all = vec![("HOURGLASS_BROKER", broker.url.as_str()), ("HOURGLASS_CA", &ca), ("BROWSER", &browser)];
    all.extend_from_slice(env);
    let driver = Driver::start(desktop, &all);
    let app = open_app(&driver, &bin("hourglass-desktop")).await;
    (driver, app, opened, ca_file)
}

/// Logs in from the app as `user`: the app sends the system browser (the
/// fake one) to the broker's dev issuer, where the headless browser picks
/// `user`; returns the page the app opened.
async fn log_in(app: &Client, opened: &Path, ca_file: &Path, user: &str) -> String {
    click(app, "[data-testid=login]").await;
    let url = eventually(WAIT, || std::fs::read_to_string(opened).ok()).expect("the app opened the browser");
    until_text(app, "[data-testid=login-url]", &url).await;
    let (page, ca_file, user) = (url.clone(), ca_file.to_owned(), user.to_owned());
    let login = tokio::task::spawn_blocking(move || {
        let browser = Browser::trusting(&ca_file);
        let picker = browser.get(&page);
        browser.submit(&picker, &[("user", user.as_str())]).body
    })
    .await
    .expect("the browser");
    assert!(login.contains("You are logged in to Hourglass"), "the loopback redirect reached the app: {login}");
    until_text(app, "[data-testid=connection]", "online").await;
    url
}

/// What `hourglass agent --status` says, as the app's user (same runtime dir).
fn agent_status(desktop: &Desktop, broker: &str) -> Option<serde_json::Value> {
    let output = desktop
        .command(bin("hourglass"))
        .args(["agent", "--status", "--json"])
        .env("HOURGLASS_BROKER", broker)
        .env_remove("HOURGLASS_TOKEN")
        .output()
        .expect("hourglass runs");
    output.status.success().then(|| serde_json::from_slice(&output.stdout).expect("status JSON"))
}

#[tokio::test(flavor = "multi_thread")]
async fn desktop_login_request_approve_countdown_warn_renew_revoke_and_approve_from_the_app() {
    let desktop = Desktop::start();
    let broker = DevBroker::start();
    let (_driver, app, opened, ca_file) = start_app(&desktop, &broker).await;

    // Log in: the app sends the system browser to the broker's (dev) issuer;
    // bob, an SRE, picks himself there; the session goes to the keyring.
    until_text(&app, "[data-testid=signed-out]", "Log in").await;
    screenshot(&app, "signed-out").await;
    let url = log_in(&app, &opened, &ca_file, "bob@acme.example").await;
    assert!(url.starts_with(&format!("{}/dev/authorize?", broker.url)), "the issuer's authorize page: {url}");
    assert!(url.contains("code_challenge_method=S256"), "code flow with PKCE: {url}");
    assert!(text(&app, "[data-testid=identity]").await.contains("Bob"), "the app shows who is logged in");
    until_text(&app, "[data-testid=no-grants]", "No live access").await;
    screenshot(&app, "grants-empty").await;
    let stored = desktop
        .command("secret-tool")
        .args(["lookup", "service", "hourglass", "username", &broker.url])
        .output()
        .expect("secret-tool");
    assert!(!stored.stdout.is_empty(), "the session is in the keyring");

    // The app serves the local agent: shells and tools ask it.
    let status = eventually(WAIT, || agent_status(&desktop, &broker.url)).expect("the app's agent answers");
    assert_eq!(status["broker"], broker.url.as_str(), "it follows the app's broker: {status}");

    // Request write access; it waits for another SRE.
    click(&app, "[data-testid=tab-request]").await;
    until_text(&app, "[data-testid=resource]", "orders-api").await;
    click(&app, "input[name=role][value=write]").await;
    app.find(Locator::Css("[data-testid=reason]"))
        .await
        .expect("reason")
        .send_keys("fix order 42")
        .await
        .expect("typed");
    screenshot(&app, "request").await;
    click(&app, "[data-testid=submit-request]").await;
    until_text(&app, "[data-testid=request-state]", "pending").await;
    assert!(text(&app, "[data-testid=request-progress]").await.contains("Waiting for 1 approval"), "progress is shown");

    // Away from the Request view the request stays in sight: on Grants,
    // waiting, for whom, until when.
    click(&app, "[data-testid=tab-grants]").await;
    let waiting = until_text(&app, "[data-testid=waiting]", "orders-api · write").await;
    assert!(waiting.contains("Waiting for 1 more approval (1 from sre)"), "for whom: {waiting}");
    assert!(waiting.contains("Expires undecided at"), "until when: {waiting}");
    screenshot(&app, "waiting").await;

    // erin approves from the CLI: the waiting card gives way to the grant counting down.
    let inbox = broker.json("erin", &["requests"]);
    let request = inbox["awaiting_me"][0]["id"].as_str().expect("bob's request reached erin").to_owned();
    broker.json("erin", &["approve", &request]);
    until_text(&app, "[data-testid=time-left]", "min").await;
    let gone = app.find(Locator::Css("[data-testid=waiting]")).await;
    assert!(gone.is_err(), "no longer waiting once approved");
    // Far from its end a grant shows whole minutes left; seconds come in
    // its last minutes (below, the one-minute grant).
    let left = text(&app, "[data-testid=time-left]").await;
    assert!(left.ends_with(" min") && left.chars().any(|c| c.is_ascii_digit()), "minutes left: {left}");
    screenshot(&app, "grants").await;
    let approved = desktop.notifications();
    assert!(approved.iter().any(|n| n.contains("Access approved")), "bob heard his request was approved: {approved:?}");

    let held = eventually(WAIT, || {
        agent_status(&desktop, &broker.url).filter(|s| s["grants"].as_array().is_some_and(|g| !g.is_empty()))
    });
    assert!(held.is_some(), "the app's agent holds the new grant for shells and tools");

    // Renew from the app moves the deadline.
    let deadline = broker.json("bob", &["grants"])[0]["expires_at"].as_str().expect("deadline").to_owned();
    click(&app, "[data-testid=renew]").await;
    until_text(&app, "[data-testid=note]", "Renewed").await;
    let renewed = broker.json("bob", &["grants"]);
    assert!(renewed[0]["expires_at"].as_str().expect("deadline") > deadline.as_str(), "renewing moved the deadline");

    // Revoke from the app.
    click(&app, "[data-testid=revoke]").await;
    until_text(&app, "[data-testid=no-grants]", "No live access").await;
    assert_eq!(broker.json("bob", &["grants", "--ended"])[0]["state"], "revoked", "the broker revoked it");

    // An expiry warning reaches the notification daemon.
    broker.json("bob", &["request", "staging-api", "--role", "deploy", "--for", "1m", "--reason", "quick look"]);
    let first = until_text(&app, "[data-testid=time-left]", ":").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let later = text(&app, "[data-testid=time-left]").await;
    assert!(first.contains(':') && later.contains(':'), "seconds in a grant's last minutes: {first}, {later}");
    assert_ne!(first, later, "the countdown moves ({first} → {later})");
    // The warning's Renew, picked in the notification daemon's menu,
    // renews the grant for the role's default duration.
    let staging = |grants: &serde_json::Value| {
        grants
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["resource"] == "staging-api")
            .map(|g| g["expires_at"].clone())
    };
    let before = staging(&broker.json("bob", &["grants"])).expect("the one-minute grant");
    let renewed = eventually(Duration::from_secs(40), || {
        desktop.invoke_action("Renew");
        staging(&broker.json("bob", &["grants"])).filter(|deadline| deadline.as_str() > before.as_str())
    });
    assert!(renewed.is_some(), "the notification's Renew renewed it: {:?}", broker.json("bob", &["grants"]));
    let warned = eventually(Duration::from_secs(30), || {
        desktop.notifications().into_iter().find(|n| n.contains("staging-api · deploy expires in 50 seconds"))
    });
    assert!(warned.is_some(), "the 50 s warning was shown: {:?}", desktop.notifications());

    // dave asks for write access: it appears in Approvals and bob approves it there.
    // His reason holds markup: the notification shows it as typed, never as a link.
    let reason = r#"hotfix <a href="https://evil.example/">see</a>"#;
    let filed = broker.json("dave", &["request", "orders-api", "--role", "write", "--for", "30m", "--reason", reason]);
    let daves = filed["id"].as_str().expect("id").to_owned();
    until_text(&app, "[data-testid=tab-approvals]", "1").await;
    click(&app, "[data-testid=tab-approvals]").await;
    until_text(&app, "[data-testid=approval]", "hotfix").await;
    screenshot(&app, "approvals").await;
    let asked = desktop.notifications();
    let to_bob = asked.iter().find(|n| n.contains("dave@acme.example asks for access"));
    let to_bob = to_bob.unwrap_or_else(|| panic!("bob was notified: {asked:?}"));
    assert!(
        to_bob.contains("hotfix &lt;a href=&quot;https://evil.example/&quot;&gt;see&lt;/a&gt;")
            && !to_bob.contains("<a "),
        "the reason reached the daemon (which renders markup) escaped: {to_bob}"
    );
    click(&app, "[data-testid=approve]").await;
    until_text(&app, "[data-testid=no-approvals]", "Nobody is waiting").await;
    let decided = broker.json("dave", &["requests"]);
    let request = decided["mine"].as_array().expect("mine").iter().find(|r| r["id"] == daves.as_str()).expect("dave's");
    assert_eq!(request["state"], "approved", "approved from the app: {request}");

    // alice asks too, and erin decides first from the CLI: the request leaves
    // bob's Approvals view at once, and bob is told who decided.
    let filed =
        broker.json("alice", &["request", "orders-api", "--role", "write", "--for", "30m", "--reason", "refund 7"]);
    let alices = filed["id"].as_str().expect("id").to_owned();
    until_text(&app, "[data-testid=approval]", "refund 7").await;
    broker.json("erin", &["approve", &alices]);
    until_text(&app, "[data-testid=no-approvals]", "Nobody is waiting").await;
    let told = eventually(WAIT, || {
        desktop
            .notifications()
            .into_iter()
            .find(|n| n.contains("erin@acme.example approved alice@acme.example's request"))
    });
    assert!(told.is_some(), "bob heard erin decided first: {:?}", desktop.notifications());

    // dave breaks glass: the access is his at once; bob reviews it after
    // the fact from the Approvals view.
    let glass = broker.json(
        "dave",
        &["request", "orders-api", "--role", "read", "--for", "10m", "--reason", "checkout down", "--break-glass"],
    );
    let glass = glass["grant"]["id"].as_str().or(glass["grant_id"].as_str()).expect("granted at once").to_owned();
    let card = format!("[data-testid=review][data-grant={glass}]");
    until_text(&app, &card, "checkout down").await;
    app.find(Locator::Css(&format!("{card} [data-testid=review-comment]")))
        .await
        .expect("the review's comment")
        .send_keys("the outage was real")
        .await
        .expect("typed");
    screenshot(&app, "review").await;
    click(&app, &format!("{card} [data-testid=justified]")).await;
    let mut gone = false;
    for _ in 0..200 {
        if app.find(Locator::Css(&card)).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "reviewed: the card leaves the Approvals view");
    let held = broker.json("dave", &["grants"]);
    let reviewed = held.as_array().into_iter().flatten().find(|g| g["id"] == glass.as_str()).expect("dave's grant");
    assert_eq!(reviewed["review"]["verdict"], "justified", "the broker has bob's review: {reviewed}");

    click(&app, "[data-testid=tab-history]").await;
    until_text(&app, "[data-testid=history]", "request approved").await;
    screenshot(&app, "history").await;
    // Settings: the agent runs in the app; one click adds the bash hook.
    click(&app, "[data-testid=tab-settings]").await;
    until_text(&app, "[data-testid=agent-state]", "runs in this app").await;
    click(&app, "[data-testid=install-hook-bash]").await;
    until_text(&app, "[data-testid=hook-bash]", "✓").await;
    let bashrc = std::fs::read_to_string(desktop.home.path().join(".bashrc")).expect("a .bashrc");
    assert!(bashrc.contains("eval \"$(hourglass hook bash)\""), "the hook line was added: {bashrc}");
    screenshot(&app, "settings").await;

    // Log out: the keyring forgets the session, the agent and its credentials go.
    click(&app, "[data-testid=logout]").await;
    until_text(&app, "[data-testid=signed-out]", "Log in").await;
    let stored = desktop
        .command("secret-tool")
        .args(["lookup", "service", "hourglass", "username", &broker.url])
        .output()
        .expect("secret-tool");
    assert!(stored.stdout.is_empty(), "the keyring no longer holds the session");
    let gone = eventually(WAIT, || agent_status(&desktop, &broker.url).is_none().then_some(()));
    assert!(gone.is_some(), "the app's agent stopped");
    let _ = app.close().await;
}

/// Policy asks approvers of orders-api/write to have logged in within 3 s:
/// bob's login in the app is older when he clicks Approve, so the app sends
/// him to log in again, then approves.
#[tokio::test(flavor = "multi_thread")]
async fn desktop_approval_that_needs_a_fresh_login_opens_the_browser_then_approves() {
    let desktop = Desktop::start();
    let policy = tempfile::tempdir().expect("a policy directory");
    hourglass_e2e::copy_demo_policy(policy.path(), |toml| {
        toml.replacen(
            "[resources.orders-api.roles.write]\n",
            "[resources.orders-api.roles.write]\napproval_max_auth_age = \"3s\"\n",
            1,
        )
    });
    let broker = DevBroker::start_with_policy(policy.path(), &[]);
    let (_driver, app, opened, ca_file) = start_app(&desktop, &broker).await;
    until_text(&app, "[data-testid=signed-out]", "Log in").await;
    log_in(&app, &opened, &ca_file, "bob@acme.example").await;

    broker.json("alice", &["request", "orders-api", "--role", "write", "--for", "10m", "--reason", "step up"]);
    until_text(&app, "[data-testid=tab-approvals]", "1").await;
    click(&app, "[data-testid=tab-approvals]").await;
    until_text(&app, "[data-testid=approval]", "step up").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::remove_file(&opened).expect("the first login's page forgotten");
    click(&app, "[data-testid=approve]").await;

    // The browser opens for a login that the identity provider cannot skip,
    // and the card says why it waits.
    let url = eventually(WAIT, || std::fs::read_to_string(&opened).ok()).expect("the app opened the browser again");
    assert!(url.contains("prompt=login") && url.contains("max_age=0"), "a fresh login: {url}");
    until_text(&app, "[data-testid=step-up]", "fresh login").await;
    screenshot(&app, "step-up").await;
    let (page, ca) = (url.clone(), ca_file.clone());
    let login = tokio::task::spawn_blocking(move || {
        let browser = Browser::trusting(&ca);
        let picker = browser.get(&page);
        browser.submit(&picker, &[("user", "bob@acme.example")]).body
    })
    .await
    .expect("the browser");
    assert!(login.contains("You are logged in to Hourglass"), "{login}");
    until_text(&app, "[data-testid=no-approvals]", "Nobody is waiting").await;
    let decided = broker.json("alice", &["requests"]);
    assert_eq!(decided["mine"][0]["state"], "approved", "approved after the fresh login: {decided}");
    assert_eq!(decided["mine"][0]["decisions"][0]["approver"], "bob@acme.example");
}

#[tokio::test(flavor = "multi_thread")]
async fn desktop_tray_registers_with_a_status_notifier_host_and_its_menu_works_over_dbus() {
    let mut desktop = Desktop::start();
    desktop.start_tray_host();
    let broker = DevBroker::start();
    write_settings(&desktop, &broker.url);
    let driver = Driver::start(
        &desktop,
        &[
            ("HOURGLASS_BROKER", &broker.url),
            ("HOURGLASS_CA", &broker.ca.as_ref().expect("dev serves HTTPS").display().to_string()),
            ("HOURGLASS_TOKEN", broker.token("bob")),
        ],
    );
    let app = open_app(&driver, &bin("hourglass-desktop")).await;
    until_text(&app, "[data-testid=connection]", "online").await;

    let tray = desktop.tray();
    let labels: Vec<String> = tray.menu().into_iter().map(|(_, label)| label).collect();
    for wanted in ["No live access", "Request access…", "Approvals", "Open Hourglass", "Quit"] {
        assert!(labels.iter().any(|l| l == wanted), "the menu has {wanted:?}: {labels:?}");
    }
    let idle = tray.icon();
    assert!(idle.starts_with(b"\x89PNG"), "the icon is an image the host can load");

    // A teammate's request: the menu counts it and the icon changes.
    broker.json("dave", &["request", "orders-api", "--role", "write", "--for", "30m", "--reason", "hotfix"]);
    let counted = eventually(WAIT, || tray.find("Approvals (1)"));
    assert!(counted.is_some(), "the menu counts the waiting approval: {:?}", tray.menu());
    assert_ne!(tray.icon(), idle, "the icon says approvals are waiting");

    // bob's own grant: listed with its time left.
    broker.json("bob", &["request", "staging-api", "--role", "deploy", "--for", "1h", "--reason", "deploy"]);
    let listed = eventually(WAIT, || tray.find("staging-api"));
    let label = tray.menu().into_iter().find(|(_, l)| l.contains("staging-api")).map(|(_, l)| l).unwrap_or_default();
    assert!(listed.is_some() && label.contains("left"), "the grant and its time left: {label:?}");

    // Clicking "Approvals (1)" opens the window on the Approvals view (the
    // menu was rebuilt since: item ids are looked up again).
    let approvals = tray.find("Approvals (1)").expect("still counted");
    assert!(tray.click(approvals), "the menu took the click");
    let selected =
        app.wait().at_most(WAIT).for_element(Locator::Css("[data-testid=tab-approvals][aria-selected=true]")).await;
    assert!(selected.is_ok(), "the tray's Approvals item opened the Approvals view");
    until_text(&app, "[data-testid=approval]", "hotfix").await;

    // bob's own request waits for another SRE: the menu says so, and its
    // item opens the Grants view where it waits; withdrawn there, it goes.
    broker.json("bob", &["request", "orders-api", "--role", "write", "--for", "30m", "--reason", "migration"]);
    let waiting = eventually(WAIT, || tray.find("1 request waiting"));
    assert!(waiting.is_some(), "the menu counts my waiting request: {:?}", tray.menu());
    assert!(tray.click(waiting.expect("found")), "the menu took the click");
    let selected =
        app.wait().at_most(WAIT).for_element(Locator::Css("[data-testid=tab-grants][aria-selected=true]")).await;
    assert!(selected.is_ok(), "the tray's waiting item opened the Grants view");
    until_text(&app, "[data-testid=waiting]", "orders-api · write").await;
    click(&app, "[data-testid=cancel-request]").await;
    let withdrawn = eventually(WAIT, || tray.find("1 request waiting").is_none().then_some(()));
    assert!(withdrawn.is_some(), "withdrawn: no longer in the menu: {:?}", tray.menu());
    let cancelled = broker.json("bob", &["requests"]);
    assert!(cancelled.to_string().contains("cancelled"), "the broker has it withdrawn: {cancelled}");

    // Quit leaves the tray.
    let _ = tray.click(tray.find("Quit").expect("Quit"));
    let gone = eventually(WAIT, || desktop.tray_items().is_empty().then_some(()));
    assert!(gone.is_some(), "the icon unregistered when the app quit");
}

/// The libraries of a GL driver: Mesa's (its DRI driver pulls in LLVM) and
/// the vendor-neutral dispatchers' back ends.
const GL_DRIVER_LIBRARIES: [&str; 4] = ["_dri.so", "libLLVM", "libEGL_mesa", "libGLX_mesa"];

#[tokio::test(flavor = "multi_thread")]
async fn desktop_database_request_makes_the_password_in_the_app_and_its_agent_keeps_it() {
    let cluster = PostgresCluster::start();
    cluster.create_orders_db();
    let toml = format!(
        r#"
[defaults]
workflow = "review"
min_duration = "5m"
max_duration = "1h"
reason_required = false

[workflows.review]
approvals = [{{ group = "security", count = 1 }}]

{orders_db}"#,
        orders_db = cluster.orders_db_policy()
    );
    let cedar =
        r#"permit (principal in Group::"sre", action in [Action::"request", Action::"auto_approve"], resource);"#;
    let policy = policy_dir(&toml, cedar);
    let broker = DevBroker::start_with_policy(policy.path(), &[("ORDERS_DB_ADMIN_DSN", &cluster.admin_dsn())]);
    let desktop = Desktop::start();
    let (_driver, app, opened, ca_file) = start_app(&desktop, &broker).await;
    log_in(&app, &opened, &ca_file, "bob@acme.example").await;
    eventually(WAIT, || agent_status(&desktop, &broker.url)).expect("the app's agent answers");

    // From the Request view, as for any resource: the app makes the
    // password, sends its SCRAM verifier, and its agent keeps the password.
    click(&app, "[data-testid=tab-request]").await;
    until_text(&app, "[data-testid=resource]", "orders-db").await;
    app.find(Locator::Css("[data-testid=resource]"))
        .await
        .expect("the resource list")
        .select_by_value("orders-db")
        .await
        .expect("orders-db chosen");
    click(&app, "input[name=role][value=read]").await;
    click(&app, "[data-testid=submit-request]").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(refused) = app.find(Locator::Css("[data-testid=request-error]")).await {
            panic!("the app could not file it: {}", refused.text().await.unwrap_or_default());
        }
        if let Ok(state) = app.find(Locator::Css("[data-testid=request-state]")).await
            && state.text().await.unwrap_or_default().contains("approved")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the request was never approved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&app, "database-request").await;
    let grants = broker.json("bob", &["grants"]);
    let grant = &grants[0];
    assert_eq!(grant["resource"], "orders-db", "bob holds the database grant: {grants}");
    assert!(grant["ready_at"].is_string(), "the app logged in once with the new password: {grant}");
    let id = grant["id"].as_str().expect("grant id");

    // A shell of bob's gets the credential from the app's agent: it logs in.
    let env = eventually(WAIT, || {
        let output = desktop
            .command(bin("hourglass"))
            .args(["env", id, "--shell", "bash"])
            .env("HOURGLASS_BROKER", &broker.url)
            .env_remove("HOURGLASS_TOKEN")
            .output()
            .expect("hourglass runs");
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .expect("the app's agent completes the credential with the password it keeps");
    let var = |name: &str| {
        let prefix = format!("export {name}='");
        let line = env.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("{name}"));
        line.trim_end_matches('\'').to_owned()
    };
    let (user, password) = (var("PGUSER"), var("PGPASSWORD"));
    let (client, connection) = tokio_postgres::connect(&cluster.dsn(&user, &password, "orders"), tokio_postgres::NoTls)
        .await
        .expect("the grant's role logs in with the app-made password");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_user::text, (SELECT count(*) FROM orders)", &[])
        .await
        .expect("the role reads the orders table, as a member of orders_read");
    assert_eq!(row.get::<_, String>(0), user, "logged in as the grant's role");
    let _ = app.close().await;
}

/// Requests `resource`/`role` from the app's Request view and waits until
/// it is approved; panics with the app's error if it cannot be filed.
async fn request_from_the_app(app: &Client, resource: &str, role: &str) {
    click(app, "[data-testid=tab-request]").await;
    until_text(app, "[data-testid=resource]", resource).await;
    app.find(Locator::Css("[data-testid=resource]"))
        .await
        .expect("the resource list")
        .select_by_value(resource)
        .await
        .unwrap_or_else(|e| panic!("{resource} chosen: {e}"));
    click(app, &format!("input[name=role][value={role}]")).await;
    click(app, "[data-testid=submit-request]").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(refused) = app.find(Locator::Css("[data-testid=request-error]")).await {
            panic!("the app could not file {resource}: {}", refused.text().await.unwrap_or_default());
        }
        if let Ok(state) = app.find(Locator::Css("[data-testid=request-state]")).await
            && state.text().await.unwrap_or_default().contains("approved")
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the request for {resource} was never approved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks "Copy" on the grant's card in the Grants view and returns what a
/// paste would give.
async fn copy_snippet(app: &Client, desktop: &Desktop, grant: &str) -> String {
    click(app, "[data-testid=tab-grants]").await;
    let card = format!("[data-testid=grant-card][data-grant={grant}]");
    click(app, &format!("{card} [data-testid=copy]")).await;
    let note = until_text(app, &format!("{card} [data-testid=note]"), "").await;
    let pasted = eventually(WAIT, || Some(desktop.clipboard()).filter(|text| text.contains("export ")));
    pasted.unwrap_or_else(|| {
        panic!("the clipboard holds the snippet (the card said {note:?}): {:?}", desktop.clipboard())
    })
}

/// Runs `script` in bash, as a user who pasted into a terminal.
fn bash(script: &str, env: &[(&str, &str)]) -> hourglass_e2e::Run {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    hourglass_e2e::Run::from(output)
}

/// The live grant of `owner` on `resource`, as the broker lists it.
fn grant_on(broker: &DevBroker, owner: &str, resource: &str) -> serde_json::Value {
    let grants = broker.json(owner, &["grants"]);
    grants
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["resource"] == resource)
        .cloned()
        .unwrap_or_else(|| panic!("{owner} holds a grant on {resource}: {grants}"))
}

/// Regression test (issue 23): the window's "Copy" and "Terminal" used the
/// broker's credential, so a PostgreSQL grant came without the password the
/// app made, and an SSH grant without the app's key. The snippet, pasted
/// into a shell, logs in to PostgreSQL and to sshd; the terminal opens with
/// a credential that logs in too.
#[tokio::test(flavor = "multi_thread")]
async fn desktop_copy_and_terminal_give_the_agents_credential_that_logs_in_to_postgres_and_sshd() {
    let cluster = PostgresCluster::start();
    cluster.create_orders_db();
    let dir = tempfile::tempdir().expect("temp dir");
    let krl = dir.path().join("revoked.krl");
    let user = current_user();
    let ssh_port = free_port();
    let toml = format!(
        r#"
[defaults]
workflow = "review"
min_duration = "5m"
max_duration = "1h"
reason_required = false

[workflows.review]
approvals = [{{ group = "security", count = 1 }}]

{orders_db}
[resources.box]
provider = "ssh"
settings = {{ host = "127.0.0.1", port = {ssh_port}, krl_file = "{krl}" }}

[resources.box.roles.login]
settings = {{ principals = ["{user}"] }}
"#,
        orders_db = cluster.orders_db_policy(),
        krl = krl.display()
    );
    let cedar =
        r#"permit (principal in Group::"sre", action in [Action::"request", Action::"auto_approve"], resource);"#;
    let policy = policy_dir(&toml, cedar);
    let broker = DevBroker::start_with_policy(policy.path(), &[("ORDERS_DB_ADMIN_DSN", &cluster.admin_dsn())]);
    // The blocking HTTP client must not run on the runtime's own threads.
    let ca = tokio::task::block_in_place(|| broker.get("/v1/providers/ssh/ca.pub?resource=box"));
    let sshd = Sshd::start_at(ssh_port, &ca, &krl);
    let ssh_agent = SshAgent::start(dir.path());
    let socket = ssh_agent.socket.display().to_string();
    // "Terminal" starts $TERMINAL with the grant in its environment: this
    // one logs in to the database with it and writes down what it saw.
    let terminal_out = dir.path().join("terminal.out");
    let terminal = dir.path().join("terminal.sh");
    std::fs::write(
        &terminal,
        format!(
            "#!/bin/sh\n'{psql}' -XAt -c 'SELECT current_user' > '{out}.tmp' 2>&1; mv '{out}.tmp' '{out}'\n",
            psql = psql().display(),
            out = terminal_out.display()
        ),
    )
    .expect("terminal script");
    std::fs::set_permissions(&terminal, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("executable");
    let desktop = Desktop::start();
    let terminal_path = terminal.display().to_string();
    let env = [("SSH_AUTH_SOCK", socket.as_str()), ("TERMINAL", terminal_path.as_str()), ("SHELL", "/bin/bash")];
    let (_driver, app, opened, ca_file) = start_app_with(&desktop, &broker, &env).await;
    log_in(&app, &opened, &ca_file, "bob@acme.example").await;
    eventually(WAIT, || agent_status(&desktop, &broker.url)).expect("the app's agent answers");

    // PostgreSQL: the app makes the password and its agent keeps it.
    request_from_the_app(&app, "orders-db", "read").await;
    let grant = grant_on(&broker, "bob", "orders-db");
    let id = grant["id"].as_str().expect("grant id");
    let snippet = copy_snippet(&app, &desktop, id).await;
    assert!(snippet.contains("export PGPASSWORD="), "the password the app made is in the snippet: {snippet}");
    let pasted =
        bash(&format!("{snippet}\n'{}' -XAt -c 'SELECT current_user, count(*) FROM orders'", psql().display()), &[]);
    let role = snippet
        .lines()
        .find_map(|line| line.strip_prefix("export PGUSER='"))
        .map(|user| user.trim_end_matches('\''))
        .expect("PGUSER in the snippet");
    assert!(pasted.ok, "psql logs in with the pasted snippet: {}\n{}", pasted.stderr, cluster.log());
    assert_eq!(pasted.stdout.trim(), format!("{role}|0"), "as the grant's role, reading orders");

    let card = format!("[data-testid=grant-card][data-grant={id}]");
    click(&app, &format!("{card} [data-testid=terminal]")).await;
    until_text(&app, &format!("{card} [data-testid=note]"), "Terminal opened").await;
    let seen = eventually(WAIT, || std::fs::read_to_string(&terminal_out).ok())
        .expect("the terminal ran with the grant's environment");
    assert_eq!(seen.trim(), role, "the terminal's psql logged in as the grant's role: {seen}");

    // SSH: the app makes the key; its agent adds it to the user's ssh-agent,
    // and the snippet says where to log in.
    request_from_the_app(&app, "box", "login").await;
    let grant = grant_on(&broker, "bob", "box");
    let id = grant["id"].as_str().expect("grant id");
    let in_agent = eventually(WAIT, || ssh_agent.listed().contains(&format!("hourglass {id}")).then_some(()));
    assert!(in_agent.is_some(), "the app's agent put the key in ssh-agent: {}", ssh_agent.listed());
    let snippet = copy_snippet(&app, &desktop, id).await;
    let login = bash(
        &format!(
            "{snippet}\nssh {options} -p \"$BOX_SSH_PORT\" \"$BOX_SSH_USER@$BOX_SSH_HOST\" echo ok",
            options = Sshd::client_options()
        ),
        &[("SSH_AUTH_SOCK", &socket)],
    );
    assert!(
        login.ok && login.stdout.trim() == "ok",
        "ssh logs in with the pasted snippet and the key in ssh-agent: {}\n{snippet}\n--- sshd log ---\n{}",
        login.stderr,
        sshd.log()
    );
    screenshot(&app, "copied").await;
    let _ = app.close().await;
}

/// On a desktop without a keyring (common on minimal window managers) the
/// app says so plainly and offers to keep the session in its own memory
/// until it quits; a login then works, nothing is written to a file, and
/// the next start asks again.
#[tokio::test(flavor = "multi_thread")]
async fn desktop_without_a_keyring_keeps_the_session_in_memory_until_it_quits() {
    let desktop = Desktop::without_keyring();
    let broker = DevBroker::start();
    let (driver, app, opened, ca_file) = start_app(&desktop, &broker).await;
    let offer = until_text(&app, "[data-testid=signed-out-reason]", "memory").await;
    assert!(offer.contains("until you quit") && offer.contains("never in a file"), "said plainly: {offer}");
    assert!(!offer.contains("--print-token"), "no advice for a shell: {offer}");
    assert_eq!(text(&app, "[data-testid=login]").await, "Log in until I quit", "the button says what it does");
    screenshot(&app, "no-keyring").await;

    log_in(&app, &opened, &ca_file, "bob@acme.example").await;
    assert!(text(&app, "[data-testid=identity]").await.contains("Bob"), "logged in");
    eventually(WAIT, || agent_status(&desktop, &broker.url)).expect("the app serves the agent");
    click(&app, "[data-testid=tab-settings]").await;
    let account = until_text(&app, "[data-testid=account]", "memory").await;
    assert!(account.contains("kept in memory only"), "the account says where the session is: {account}");
    broker.json("bob", &["request", "staging-api", "--role", "deploy", "--for", "1h", "--reason", "deploy"]);
    click(&app, "[data-testid=tab-grants]").await;
    until_text(&app, "[data-testid=grant-card]", "staging-api").await;

    // Nothing of the session is in a file: no token anywhere under the home
    // (settings, the agent's directory, caches).
    let mut written = Vec::new();
    let mut dirs = vec![desktop.home.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(3).any(|w| w == b"eyJ")) {
                written.push(path);
            }
        }
    }
    assert!(written.is_empty(), "no file holds a token: {written:?}");

    // Quit: the session went with the process; the next start asks again.
    let _ = app.close().await;
    drop(driver);
    let quit = eventually(WAIT, || agent_status(&desktop, &broker.url).is_none().then_some(()));
    assert!(quit.is_some(), "the app quit (its agent with it)");
    let (_driver, app, _, _) = start_app(&desktop, &broker).await;
    until_text(&app, "[data-testid=signed-out-reason]", "memory").await;
    let _ = app.close().await;
}

fn mapped_libraries(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut libraries: Vec<String> =
        maps.lines().filter_map(|line| line.split_whitespace().nth(5)).map(str::to_owned).collect();
    libraries.dedup();
    libraries
}

fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    tasks.split_whitespace().filter_map(|child| child.parse().ok()).collect()
}

/// Started as a user starts it (not over WebDriver, which keeps compositing
/// on), the window paints in software and the app's own process never loads
/// a GL driver: that is most of the memory the app saves (webview.rs).
#[tokio::test(flavor = "multi_thread")]
async fn desktop_window_paints_without_a_gl_driver_in_the_app_process() {
    let desktop = Desktop::start();
    let broker = DevBroker::start();
    write_settings(&desktop, &broker.url);
    let blank = eventually(WAIT, || desktop.screen().filter(|screen| screen.colours(2) == 1));
    assert!(blank.is_some(), "the screen starts empty");
    let mut command = desktop.command(bin("hourglass-desktop"));
    broker.point_at(&mut command);
    let mut app = command
        .env("HOURGLASS_TOKEN", broker.token("bob"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the app starts");
    // Text, borders and buttons: dozens of colours; a bare window has one or two.
    let painted = eventually(WAIT, || desktop.screen().filter(|screen| screen.colours(16) >= 16));
    let shot = desktop.screenshot("desktop-software-rendering");
    let web_process = children(app.id()).into_iter().find(|child| {
        std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c.starts_with("WebKitWebProc"))
    });
    let app_libraries = mapped_libraries(app.id());
    let web_libraries = web_process.map(mapped_libraries).unwrap_or_default();
    let _ = app.kill();
    let _ = app.wait();

    assert!(painted.is_some(), "the window painted its page (screenshot: {})", shot.display());
    assert!(web_process.is_some(), "WebKit's web process runs under the app");
    let gl: Vec<&String> =
        app_libraries.iter().filter(|path| GL_DRIVER_LIBRARIES.iter().any(|gl| path.contains(gl))).collect();
    assert!(gl.is_empty(), "no GL driver in the app's process: {gl:?}");
    // The check above can see a driver: WebKitGTK 2.50's web process opens one.
    assert!(
        web_libraries.iter().any(|path| GL_DRIVER_LIBRARIES.iter().any(|gl| path.contains(gl))),
        "the web process's GL driver is visible in its maps"
    );
}

/// The newest package `scripts/package-deb` built.
fn built_deb() -> std::path::PathBuf {
    let dir = target_dir().join("desktop/bundle/deb");
    let mut debs: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "deb")).collect()
        })
        .unwrap_or_default();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop()
        .unwrap_or_else(|| panic!("no .deb in {}: run scripts/package-deb first (scripts/test does)", dir.display()))
}

fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn is_root() -> bool {
    run("id", &["-u"]).trim() == "0"
}

#[tokio::test(flavor = "multi_thread")]
async fn desktop_deb_package_installs_and_the_installed_app_starts() {
    let deb = built_deb();
    let deb = deb.to_str().expect("a UTF-8 path");
    let fields = run("dpkg-deb", &["--field", deb, "Package", "Depends"]);
    assert!(fields.contains("Package: hourglass\n"), "the package's name: {fields}");
    assert!(fields.contains("libwebkit2gtk-4.1-0"), "it depends on the WebKitGTK it links: {fields}");
    let listing = run("dpkg-deb", &["--contents", deb]);
    let paths: Vec<&str> =
        listing.lines().filter_map(|l| l.split_whitespace().last()).map(|p| p.trim_start_matches("./")).collect();
    for path in ["usr/bin/hourglass-desktop", "usr/bin/hourglass", "usr/share/applications/Hourglass.desktop"] {
        assert!(paths.contains(&path), "the package has {path}: {paths:?}");
    }
    assert!(paths.iter().any(|p| p.starts_with("usr/share/icons/hicolor/")), "and the app's icons: {paths:?}");

    // Installed for real where the test may (CI runs as root); elsewhere
    // unpacked, which runs the same files.
    let unpacked = tempfile::tempdir().expect("dir");
    let root = if is_root() {
        run("dpkg", &["--install", deb]);
        std::path::PathBuf::from("/")
    } else {
        run("dpkg-deb", &["--extract", deb, unpacked.path().to_str().expect("path")]);
        unpacked.path().to_path_buf()
    };
    let cli = run(root.join("usr/bin/hourglass").to_str().expect("path"), &["--version"]);
    assert!(cli.starts_with("hourglass "), "the packaged CLI runs: {cli}");

    let desktop = Desktop::start();
    let broker = DevBroker::start();
    write_settings(&desktop, &broker.url);
    let driver = Driver::start(
        &desktop,
        &[
            ("HOURGLASS_BROKER", &broker.url),
            ("HOURGLASS_CA", &broker.ca.as_ref().expect("dev serves HTTPS").display().to_string()),
            ("HOURGLASS_TOKEN", broker.token("bob")),
        ],
    );
    let app = open_app(&driver, &root.join("usr/bin/hourglass-desktop")).await;
    until_text(&app, "[data-testid=connection]", "online").await;
    assert!(text(&app, "[data-testid=identity]").await.contains("Bob"), "the installed app works");
    screenshot(&app, "installed").await;
    let _ = app.close().await;
    if is_root() {
        run("dpkg", &["--remove", "hourglass"]);
    }
}
