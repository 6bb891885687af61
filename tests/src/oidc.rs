//! A real OpenID Connect provider for tests (npm `oidc-provider`, run by
//! node from `tests/oidc/provider.mjs`), and a headless "browser" that goes
//! through login pages the way a person would: follows redirects, keeps
//! cookies, fills in and submits forms.
//!
//! The provider's development interactions take any password; the login
//! name becomes the subject, `NAME@acme.example` the email, and the groups
//! come from a table in provider.mjs (alice: engineers, bob: sre, anyone
//! else: contractors). Its client `hourglass` is a native public client
//! (PKCE, loopback redirect, device grant, rotating refresh tokens);
//! `another-app` is the same for another audience. The `ci-*` clients are
//! CI pipelines (client credentials) whose tokens, for the audience
//! `hourglass`, carry the repository they run for, as GitHub Actions' do.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_port};

/// `oidc-provider` on a free loopback port. Killed on drop.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl OidcProvider {
    pub fn start() -> OidcProvider {
        OidcProvider::launch(None)
    }

    /// With a web client `hourglass-web` too, whose one redirect is
    /// `redirect` (a broker's `/approve/callback`).
    pub fn start_with_web_client(redirect: &str) -> OidcProvider {
        OidcProvider::launch(Some(redirect))
    }

    fn launch(web_redirect: Option<&str>) -> OidcProvider {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "tests/oidc/node_modules is missing: run `npm ci` in tests/oidc (scripts/setup.sh does)"
        );
        let port = free_port();
        let mut command = Command::new("node");
        if let Some(redirect) = web_redirect {
            command.env("HOURGLASS_WEB_REDIRECT", redirect);
        }
        let mut child = command
            .arg(dir.join("provider.mjs"))
            .arg(port.to_string())
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs (apt-get install nodejs; scripts/setup.sh does)");
        // Keep the provider's log for failures, without its start-up warnings.
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if !line.contains("WARNING") {
                    eprintln!("oidc-provider: {line}");
                }
            }
        });
        let issuer = format!("http://127.0.0.1:{port}");
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::blocking::Client::new();
        let ready = eventually(Duration::from_secs(30), || {
            http.get(&discovery).send().ok().filter(|response| response.status().is_success())
        });
        assert!(ready.is_some(), "oidc-provider answered discovery at {discovery}");
        OidcProvider { child, issuer }
    }
}

impl OidcProvider {
    /// The OIDC token of pipeline `client` (`ci-acme-deploy`, `ci-acme-web`,
    /// `ci-evil-deploy`): a JWT for the audience `hourglass` with its
    /// `repository`, `repository_owner` and `ref`.
    pub fn pipeline_token(&self, client: &str) -> String {
        let secret = format!("{client}-secret");
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/token", self.issuer))
            .form(&[("grant_type", "client_credentials"), ("client_id", client), ("client_secret", &secret)])
            .send()
            .expect("the provider's token endpoint answers");
        let body: serde_json::Value = response.json().expect("a JSON token response");
        body["access_token"].as_str().unwrap_or_else(|| panic!("a token for {client}: {body}")).to_owned()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A page the browser is on.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub body: String,
}

/// A `<form>`: where it goes and the named inputs it would send.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

/// A browser without a screen: cookies kept, redirects followed.
pub struct Browser {
    http: reqwest::blocking::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser::with(reqwest::blocking::Client::builder())
    }

    /// A browser that trusts `ca` alone, like one the user imported the dev CA into.
    pub fn trusting(ca: &Path) -> Browser {
        let pem = std::fs::read(ca).expect("the CA file");
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).expect("the CA is PEM");
        Browser::with(reqwest::blocking::Client::builder().tls_certs_only(certificates))
    }

    fn with(builder: reqwest::blocking::ClientBuilder) -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = builder.cookie_store(true).timeout(Duration::from_secs(30)).build().expect("an HTTP client");
        Browser { http }
    }

    pub fn get(&self, url: &str) -> Page {
        let response = self.http.get(url).send().unwrap_or_else(|error| panic!("GET {url}: {error}"));
        page_of(response)
    }

    /// Submits the page's first form with its fields, `values` replacing or
    /// adding fields (a filled-in text box, the button pressed).
    pub fn submit(&self, page: &Page, values: &[(&str, &str)]) -> Page {
        let form = forms(&page.body)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("the page at {} has no form: {}", page.url, page.body));
        let mut fields = form.fields.clone();
        for (name, value) in values {
            match fields.iter_mut().find(|(field, _)| field == name) {
                Some(field) => field.1 = (*value).to_owned(),
                None => fields.push(((*name).to_owned(), (*value).to_owned())),
            }
        }
        let base = reqwest::Url::parse(&page.url).expect("the page URL");
        let action = base.join(&form.action).expect("the form's action resolves");
        let response = self
            .http
            .post(action.clone())
            .form(&fields)
            .send()
            .unwrap_or_else(|error| panic!("POST {action}: {error}"));
        page_of(response)
    }

    /// Logs in at oidc-provider's development interactions as `login`
    /// (any password) and consents, starting from `url`; follows the forms
    /// until a page has none. Returns that page.
    pub fn log_in_at_provider(&self, url: &str, login: &str) -> Page {
        let mut current = self.get(url);
        for _ in 0..8 {
            let Some(form) = forms(&current.body).into_iter().next() else { return current };
            let names: Vec<&str> = form.fields.iter().map(|(name, _)| name.as_str()).collect();
            let mut values = Vec::new();
            if names.contains(&"login") || current.body.contains("name=\"login\"") {
                values.extend([("login", login), ("password", "any password will do")]);
            }
            current = self.submit(&current, &values);
        }
        panic!("the login at {url} did not finish within 8 forms; last page {}: {}", current.url, current.body)
    }
}

fn page_of(response: reqwest::blocking::Response) -> Page {
    let url = response.url().to_string();
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    Page { url, status, body }
}

/// Every `<form>` of a page with its named `<input>`s (text, hidden, …).
/// Enough HTML for login pages; not a parser for the web at large.
pub fn forms(html: &str) -> Vec<Form> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let after = &rest[start..];
        let end = after.find("</form>").unwrap_or(after.len());
        let body = &after[..end];
        let tag_end = body.find('>').unwrap_or(body.len());
        let action = attribute(&body[..tag_end], "action").unwrap_or_default();
        let mut fields = Vec::new();
        let mut inputs = body;
        while let Some(at) = inputs.find("<input") {
            let input = &inputs[at..];
            let close = input.find('>').unwrap_or(input.len());
            let tag = &input[..close];
            if let Some(name) = attribute(tag, "name") {
                fields.push((name, attribute(tag, "value").unwrap_or_default()));
            }
            inputs = &input[close..];
        }
        found.push(Form { action, fields });
        rest = &after[end..];
    }
    found
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}
