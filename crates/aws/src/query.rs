//! The AWS "Query" protocol STS and IAM speak: a form-encoded POST, signed
//! with SigV4, answered with XML.

use std::hash::BuildHasher;
use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use reqwest::Url;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::credentials::Credentials;
use crate::endpoints::parse_endpoint;
use crate::error::{Error, Result};
use crate::sigv4;

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The whole call, connect to last byte: STS and IAM answer in well under
/// a second; a stuck call should not hold a grant for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff before the second and third attempts.
const BACKOFF_MS: [u64; 2] = [100, 400];

/// What a form value keeps unencoded: the unreserved characters, and the
/// space, which becomes `+`.
const FORM_VALUE: &percent_encoding::AsciiSet = &sigv4::UNRESERVED.remove(b' ');

/// A form body being built. Zeroized on drop, because AssumeRoleWithWebIdentity
/// carries the web identity token in it.
pub(crate) struct Form(Zeroizing<String>);

impl Form {
    pub(crate) fn new(action: &str, version: &str) -> Form {
        let mut form = Form(Zeroizing::new(format!("Action={action}")));
        form.add("Version", version);
        form
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn add(&mut self, key: &str, value: &str) -> &mut Self {
        self.0.push('&');
        self.0.push_str(key);
        self.0.push('=');
        // Spaces as `+`, as botocore sends them. AWS hashes the body as
        // sent, either way; moto re-encodes the parsed form botocore's way
        // before checking the signature, and %20 would not match.
        for chunk in utf8_percent_encode(value, FORM_VALUE) {
            self.0.extend(chunk.chars().map(|c| if c == ' ' { '+' } else { c }));
        }
        self
    }
}

/// One Query-protocol service (STS or IAM) at one endpoint.
#[derive(Clone, Debug)]
pub(crate) struct QueryClient {
    pub(crate) http: reqwest::Client,
    pub(crate) endpoint: String,
    pub(crate) service: &'static str,
    pub(crate) region: String,
    pub(crate) version: &'static str,
}

impl QueryClient {
    pub(crate) fn form(&self, action: &str) -> Form {
        Form::new(action, self.version)
    }

    /// Sends the form, signed by `caller` (unsigned when `None`, as
    /// AssumeRoleWithWebIdentity is), retrying what is worth retrying.
    pub(crate) async fn call(&self, action: &'static str, form: &Form, caller: Option<&Credentials>) -> Result<Xml> {
        let endpoint = parse_endpoint(self.service, &self.endpoint)?;
        let mut attempt = 0;
        loop {
            let result = self.attempt(action, &endpoint, form, caller).await;
            match result {
                Err(error) if attempt < BACKOFF_MS.len() && is_transient(&error) => {
                    let delay = jittered(BACKOFF_MS[attempt]);
                    tracing::debug!(%error, ?delay, "retrying aws {action}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        action: &'static str,
        endpoint: &Url,
        form: &Form,
        caller: Option<&Credentials>,
    ) -> Result<Xml> {
        let body = form.0.as_bytes().to_vec();
        let mut request = self
            .http
            .post(endpoint.clone())
            .timeout(CALL_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE);
        if let Some(caller) = caller {
            let signable = sigv4::Request {
                method: "POST",
                url: endpoint,
                headers: &[("content-type", FORM_CONTENT_TYPE)],
                body: &body,
            };
            // Signed at each attempt: a retry is a new request.
            let at = OffsetDateTime::now_utc();
            for (name, value) in sigv4::sign(&signable, self.service, &self.region, caller, at)? {
                request = request.header(name, sensitive(&value)?);
            }
        }
        let response = request.body(body).send().await.map_err(|error| Error::Transport { action, error })?;
        let status = response.status();
        let header_request_id =
            response.headers().get("x-amzn-requestid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.map_err(|error| Error::Transport { action, error })?;
        // Success bodies hold credentials.
        let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        if status.is_success() {
            Xml::parse(&text).map_err(|detail| Error::Response { action, detail })
        } else {
            Err(error_from_body(action, status.as_u16(), header_request_id, &text))
        }
    }
}

/// A header value that HTTP-level debug logs show as "Sensitive": the
/// Authorization header and the session token are never logged.
pub(crate) fn sensitive(value: &str) -> Result<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| Error::Signing("a credential holds a character not allowed in an http header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn is_transient(error: &Error) -> bool {
    match error {
        Error::Transport { error, .. } => error.is_connect(),
        Error::UnexpectedStatus { status, .. } => *status >= 500,
        Error::Aws { status, code, .. } => {
            *status >= 500 || matches!(code.as_str(), "Throttling" | "ThrottlingException" | "RequestLimitExceeded")
        }
        _ => false,
    }
}

/// Between half and one and a half times `base`, so that callers throttled
/// together do not retry together. Randomness from std's hasher keys is
/// plenty for that.
fn jittered(base_ms: u64) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(base_ms);
    Duration::from_millis(base_ms / 2 + random % base_ms.max(1))
}

/// An AWS error from an error answer. Error bodies hold no secrets, so the
/// start of one that is not AWS's XML goes into the error as is.
pub(crate) fn error_from_body(
    action: &'static str,
    status: u16,
    header_request_id: Option<String>,
    body: &str,
) -> Error {
    let parsed = Xml::parse(body).ok();
    match parsed.as_ref().and_then(|xml| xml.get("Error/Code")) {
        Some(code) => {
            let xml = parsed.as_ref();
            let field = |path| xml.and_then(|x| x.get(path)).map(str::to_owned);
            Error::Aws {
                action,
                status,
                code: code.to_owned(),
                message: field("Error/Message").unwrap_or_default(),
                request_id: field("RequestId").or_else(|| field("RequestID")).or(header_request_id),
            }
        }
        None => Error::UnexpectedStatus { action, status, body: body.trim().chars().take(200).collect() },
    }
}

/// The leaf elements of an XML document, each with its path of local names
/// ("AssumeRoleResponse/AssumeRoleResult/Credentials/AccessKeyId"). The
/// Query protocol's answers are small and shallow; a flat list is enough.
#[derive(Default)]
pub(crate) struct Xml {
    leaves: Vec<(String, Zeroizing<String>)>,
}

impl Xml {
    pub(crate) fn parse(text: &str) -> std::result::Result<Xml, String> {
        let mut reader = Reader::from_str(text);
        let mut xml = Xml::default();
        let mut path: Vec<String> = Vec::new();
        // Per open element: whether it has child elements (then it is no leaf).
        let mut has_children: Vec<bool> = Vec::new();
        let mut content = Zeroizing::new(String::new());
        let mut saw_element = false;
        loop {
            let event =
                reader.read_event().map_err(|e| format!("malformed xml at byte {}: {e}", reader.error_position()))?;
            match event {
                Event::Start(start) => {
                    saw_element = true;
                    if let Some(parent) = has_children.last_mut() {
                        *parent = true;
                    }
                    path.push(start.local_name().as_ref().to_owned());
                    has_children.push(false);
                    content.clear();
                }
                Event::Empty(empty) => {
                    saw_element = true;
                    if let Some(parent) = has_children.last_mut() {
                        *parent = true;
                    }
                    let mut leaf = path.join("/");
                    if !leaf.is_empty() {
                        leaf.push('/');
                    }
                    leaf.push_str(empty.local_name().as_ref());
                    xml.leaves.push((leaf, Zeroizing::default()));
                }
                Event::Text(text) => content.push_str(&text.xml10_content()),
                Event::CData(data) => content.push_str(&data.xml10_content()),
                Event::GeneralRef(reference) => {
                    let resolved = reference.resolve_char_ref().map_err(|e| format!("bad character reference: {e}"))?;
                    match (resolved, resolve_predefined_entity(&reference)) {
                        (Some(c), _) => content.push(c),
                        (None, Some(s)) => content.push_str(s),
                        (None, None) => return Err(format!("unknown entity &{};", &*reference)),
                    }
                }
                Event::End(_) => {
                    if has_children.pop() == Some(false) {
                        let text = std::mem::take(&mut *content);
                        xml.leaves.push((path.join("/"), Zeroizing::new(text)));
                    }
                    path.pop();
                    content.clear();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !saw_element {
            return Err("no xml element".into());
        }
        Ok(xml)
    }

    /// The first leaf whose path ends with `suffix` (whole names).
    pub(crate) fn get(&self, suffix: &str) -> Option<&str> {
        self.all(suffix).next()
    }

    pub(crate) fn all<'a, 's>(&'a self, suffix: &'s str) -> impl Iterator<Item = &'a str> + use<'a, 's> {
        self.leaves
            .iter()
            .filter(move |(path, _)| {
                path.strip_suffix(suffix).is_some_and(|rest| rest.is_empty() || rest.ends_with('/'))
            })
            .map(|(_, text)| text.as_str())
    }

    pub(crate) fn require(&self, action: &'static str, suffix: &str) -> Result<&str> {
        self.get(suffix).ok_or_else(|| Error::Response { action, detail: format!("no {suffix} element") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_keeps_code_message_and_request_id() {
        let body = r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The role with name x cannot be found.</Message></Error><RequestId>req-1</RequestId></ErrorResponse>"#;
        let error = error_from_body("GetRole", 404, Some("header-id".into()), body);
        assert_eq!(error.code(), Some("NoSuchEntity"));
        assert_eq!(error.status(), Some(404));
        assert_eq!(
            error.to_string(),
            "aws GetRole failed with NoSuchEntity (http 404, request id req-1): \
             The role with name x cannot be found."
        );
    }

    #[test]
    fn errors_shape_without_request_id_takes_it_from_the_header() {
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/b is not authorized &amp; so on</Message><Type>Sender</Type></Error></Errors></ErrorResponse>";
        let error = error_from_body("AssumeRole", 403, Some("hdr".into()), body);
        assert_eq!(error.code(), Some("AccessDenied"));
        assert_eq!(error.aws_message(), Some("User: arn:aws:iam::123456789012:user/b is not authorized & so on"));
        assert!(error.to_string().contains("request id hdr"));
    }

    #[test]
    fn non_xml_error_keeps_status_and_the_start_of_the_body() {
        let body =
            format!("<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>{}", "x".repeat(500));
        let error = error_from_body("AssumeRole", 500, None, &body);
        assert_eq!(error.code(), None);
        assert!(matches!(error, Error::UnexpectedStatus { status: 500, ref body, .. } if body.chars().count() == 200));
        assert!(is_transient(&error));
        let plain = error_from_body("GetRole", 502, None, "Bad Gateway");
        assert!(plain.to_string().ends_with("http 502: Bad Gateway"), "{plain}");
    }

    #[test]
    fn only_throttling_and_server_errors_are_retried() {
        let aws = |status, code: &str| Error::Aws {
            action: "GetRole",
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
        };
        assert!(is_transient(&aws(400, "Throttling")));
        assert!(is_transient(&aws(503, "ServiceUnavailable")));
        assert!(!is_transient(&aws(403, "AccessDenied")));
        assert!(!is_transient(&aws(400, "ValidationError")));
        for base in BACKOFF_MS {
            let delay = jittered(base).as_millis() as u64;
            assert!(delay >= base / 2 && delay < base * 3 / 2);
        }
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_retried_then_names_the_cause() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = QueryClient {
            http: reqwest::Client::new(),
            endpoint: format!("http://127.0.0.1:{closed}"),
            service: "sts",
            region: "us-east-1".into(),
            version: "2011-06-15",
        };
        let started = std::time::Instant::now();
        let error = client.call("GetCallerIdentity", &client.form("GetCallerIdentity"), None).await.err().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250), "two backoffs of at least 50 and 200 ms");
        let text = error.to_string();
        assert!(text.starts_with("aws GetCallerIdentity could not be sent: error sending request"), "{text}");
        assert!(text.to_lowercase().contains("refused"), "the root cause is named: {text}");
    }

    #[test]
    fn form_values_are_percent_encoded() {
        let mut form = Form::new("AssumeRole", "2011-06-15");
        form.add("Policy", r#"{"a": "b/c+d"}"#);
        assert_eq!(form.0.as_str(), "Action=AssumeRole&Version=2011-06-15&Policy=%7B%22a%22%3A+%22b%2Fc%2Bd%22%7D");
    }
}
