//! An HTTP Event Collector (Splunk's, or one that speaks it): a batch is
//! one POST of events, each `{"time", "host", "source", "sourcetype",
//! "event"}`, authorized by `Splunk TOKEN`; delivered when it answers 2xx.

use std::time::Duration as StdDuration;

use hourglass_core::audit::AuditRecord;

use super::settings::Format;
use crate::error::{Error, Result};
use crate::notify::settings::Secret;

pub struct Hec {
    url: String,
    token: Secret,
    client: reqwest::Client,
}

impl Hec {
    pub fn new(what: &str, url: &str, token: Secret) -> Result<Hec> {
        let parsed = reqwest::Url::parse(url).map_err(|_| Error::Config(format!("{what}: url is not a URL")))?;
        if !crate::roots::is_https_or_loopback(&parsed) {
            return Err(Error::Config(format!("{what}: url must be https:// (plain http only to this machine)")));
        }
        let client = crate::roots::http_client(StdDuration::from_secs(30), false)
            .map_err(|error| Error::Config(format!("{what}: building the HTTP client: {error}")))?;
        Ok(Hec { url: url.to_owned(), token, client })
    }

    pub async fn send(&self, records: &[AuditRecord], lines: &[(u64, String)], format: Format) -> Result<()> {
        let mut body = String::with_capacity(lines.iter().map(|(_, line)| line.len() + 120).sum());
        for (record, (_, line)) in records.iter().zip(lines) {
            let at = record.event.at.unix_millis();
            body.push_str(&format!(
                "{{\"time\":{}.{:03},\"source\":\"hourglass\",\"sourcetype\":\"hourglass:{}\",\"event\":{line}}}\n",
                at / 1000,
                at % 1000,
                format.as_str()
            ));
        }
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, format!("Splunk {}", self.token.expose()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| Error::Config(format!("HEC: {}", error.without_url())))?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(Error::Config(format!("HEC: HTTP {}", status.as_u16()))) }
    }
}
