//! The channels reached over HTTPS: Slack (a bot's Web API, or an incoming
//! webhook), a Teams workflow's webhook, and the generic signed webhook.
//! Errors never carry a URL: a Slack or Teams webhook URL is itself the
//! credential.

use std::time::Duration as StdDuration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::settings::Secret;
use crate::error::{Error, Result};

/// A send that failed, and when the receiver asked to be tried again.
#[derive(Debug)]
pub struct Failed {
    pub error: String,
    pub retry_after: Option<StdDuration>,
}

impl Failed {
    fn new(error: impl Into<String>) -> Failed {
        Failed { error: error.into(), retry_after: None }
    }
}

/// A Slack message's place: what `chat.update` needs.
#[derive(Debug, Serialize, Deserialize)]
struct SlackMessage {
    channel: String,
    ts: String,
}

#[derive(Deserialize)]
struct SlackAnswer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new() -> Result<HttpSender> {
        let client = crate::roots::http_client(StdDuration::from_secs(15), false)
            .map_err(|error| Error::Config(format!("building the HTTP client: {error}")))?;
        Ok(HttpSender { client })
    }

    /// Posts `message` with a Slack bot's token: a new message
    /// (`chat.postMessage`), or, given the `thread` of an earlier one, that
    /// message replaced (`chat.update`). Returns the message's place.
    pub async fn slack_bot(
        &self,
        api_url: &str,
        channel: &str,
        token: &Secret,
        mut message: Value,
        thread: Option<&str>,
    ) -> std::result::Result<String, Failed> {
        let earlier = thread.and_then(|thread| serde_json::from_str::<SlackMessage>(thread).ok());
        let method = if earlier.is_some() { "chat.update" } else { "chat.postMessage" };
        if let Value::Object(fields) = &mut message {
            match &earlier {
                Some(earlier) => {
                    fields.insert("channel".into(), Value::String(earlier.channel.clone()));
                    fields.insert("ts".into(), Value::String(earlier.ts.clone()));
                }
                None => {
                    fields.insert("channel".into(), Value::String(channel.to_owned()));
                }
            }
        }
        let response = self
            .client
            .post(format!("{api_url}/{method}"))
            .bearer_auth(token.expose())
            .json(&message)
            .send()
            .await
            .map_err(|error| Failed::new(format!("slack {method}: {}", error.without_url())))?;
        let response = success(response, &format!("slack {method}"))?;
        let answer: SlackAnswer = response.json().await.map_err(|error| {
            Failed::new(format!("slack {method}: the answer does not read: {}", error.without_url()))
        })?;
        if !answer.ok {
            return Err(Failed::new(format!("slack {method}: {}", answer.error.unwrap_or_else(|| "not ok".into()))));
        }
        let place = match (answer.channel, answer.ts, earlier) {
            (Some(channel), Some(ts), _) => SlackMessage { channel, ts },
            (_, _, Some(earlier)) => earlier,
            _ => return Err(Failed::new(format!("slack {method}: the answer names no message"))),
        };
        Ok(serde_json::to_string(&place).unwrap_or_default())
    }

    /// Posts `body` (JSON) to a webhook whose URL is a secret.
    pub async fn post_secret_url(&self, what: &str, url: &Secret, body: &Value) -> std::result::Result<(), Failed> {
        let response = self
            .client
            .post(url.expose())
            .json(body)
            .send()
            .await
            .map_err(|error| Failed::new(format!("{what}: {}", error.without_url())))?;
        success(response, what).map(drop)
    }

    /// Posts the signed webhook: `Hourglass-Signature: t=UNIX,v1=HEX`, the
    /// HMAC-SHA256 of `UNIX.BODY` with the channel's secret, so that the
    /// receiver can check where it came from and refuse a replay outside
    /// its tolerance; `Idempotency-Key` is the message's id, the same on
    /// every attempt.
    pub async fn webhook(
        &self,
        url: &str,
        secret: &Secret,
        id: &str,
        body: String,
        now_unix: i64,
    ) -> std::result::Result<(), Failed> {
        let signature = sign(secret, now_unix, &body);
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", id)
            .header("Hourglass-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|error| Failed::new(format!("webhook: {}", error.without_url())))?;
        success(response, "webhook").map(drop)
    }
}

/// `t=UNIX,v1=HEX(HMAC-SHA256(secret, "UNIX.BODY"))`.
pub fn sign(secret: &Secret, unix: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let tag = ring::hmac::sign(&key, format!("{unix}.{body}").as_bytes());
    format!("t={unix},v1={}", hourglass_core::audit::to_hex(tag.as_ref()))
}

/// A 2xx answer; anything else a failure, with the receiver's
/// `Retry-After` (seconds) when it sent one.
fn success(response: reqwest::Response, what: &str) -> std::result::Result<reqwest::Response, Failed> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(StdDuration::from_secs);
    let reason = if status == StatusCode::TOO_MANY_REQUESTS { " (rate limited)" } else { "" };
    Err(Failed { error: format!("{what}: HTTP {}{reason}", status.as_u16()), retry_after })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "whsec_0123456789abcdef").unwrap();
        let secret = Secret::read(&path, "test").unwrap();
        let signature = sign(&secret, 1_800_000_000, "{\"id\":\"ntf_1\"}");
        // printf '1800000000.{"id":"ntf_1"}' | openssl dgst -sha256 -hmac whsec_0123456789abcdef
        let expected = "c918c3e7da19e1e07d30dd83e7195c21d7c49ee032d7d0247cc8d5fb612d5350";
        assert_eq!(signature, format!("t=1800000000,v1={expected}"));
    }
}
