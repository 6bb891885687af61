//! Syslog over TLS: RFC 5424 messages, octet-counted (RFC 5425), on one
//! connection kept open between batches and made again after a failure.
//! Each message: facility authpriv, severity informational (or warning for
//! a refusal, error for a failure), MSGID the action, the record's number
//! and hash as structured data, the record in the sink's schema as the text.

use std::path::Path;
use std::sync::Arc;

use hourglass_core::audit::{AuditRecord, AuditResult};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};
use crate::roots::RootsError;

/// The private enterprise number reserved for documentation (RFC 5612):
/// structured data ids need one.
const SD_ID: &str = "hourglass@32473";
/// authpriv: security and authorization messages.
const FACILITY: u8 = 10;

pub struct Syslog {
    address: String,
    server: ServerName<'static>,
    connector: TlsConnector,
    host: String,
    connection: Option<TlsStream<TcpStream>>,
}

impl Syslog {
    pub fn new(what: &str, address: &str, ca_file: Option<&Path>) -> Result<Syslog> {
        let bad = |message: String| Error::Config(format!("{what}: {message}"));
        let host = address
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map(|(host, _)| host.trim_matches(['[', ']']))
            .ok_or_else(|| bad(format!("address \"{address}\" is not host:port")))?;
        let server =
            ServerName::try_from(host.to_owned()).map_err(|_| bad(format!("\"{host}\" is not a host name")))?;
        let roots = crate::roots::trusted_roots(ca_file).map_err(|error| {
            let file = ca_file.map(|path| path.display().to_string()).unwrap_or_default();
            bad(match error {
                RootsError::Unreadable(kind) => format!("ca_file {file}: cannot read it: {kind}"),
                RootsError::Invalid(why) => format!("ca_file {file}: a certificate is invalid: {why}"),
                RootsError::NoCertificate => format!("ca_file {file} holds no PEM certificate"),
                RootsError::NoSystemRoots => "the system has no trusted roots: set ca_file".into(),
            })
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| bad(format!("TLS: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().chars().filter(|c| c.is_ascii_graphic()).take(255).collect::<String>())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "-".into());
        Ok(Syslog {
            address: address.to_owned(),
            server,
            connector: TlsConnector::from(Arc::new(config)),
            host: host_name,
            connection: None,
        })
    }

    /// Writes every record; an error drops the connection (the next batch
    /// connects again).
    pub async fn send(&mut self, records: &[AuditRecord], lines: &[(u64, String)]) -> Result<()> {
        let mut frames = Vec::with_capacity(lines.iter().map(|(_, line)| line.len() + 200).sum());
        for (record, (_, line)) in records.iter().zip(lines) {
            let message = message(record, line, &self.host);
            frames.extend_from_slice(format!("{} ", message.len()).as_bytes());
            frames.extend_from_slice(message.as_bytes());
        }
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(self.connect().await?),
        };
        let written = async {
            connection.write_all(&frames).await?;
            connection.flush().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(15), written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.connection = None;
                Err(Error::Config(format!("syslog {}: {error}", self.address)))
            }
            Err(_) => {
                self.connection = None;
                Err(Error::Config(format!("syslog {}: no progress writing for 15 s", self.address)))
            }
        }
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>> {
        let connecting = async {
            let tcp = TcpStream::connect(&self.address).await?;
            self.connector.connect(self.server.clone(), tcp).await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(Error::Config(format!("syslog {}: {error}", self.address))),
            Err(_) => Err(Error::Config(format!("syslog {}: no TLS connection within 10 s", self.address))),
        }
    }
}

/// One RFC 5424 message.
fn message(record: &AuditRecord, text: &str, host: &str) -> String {
    let event = &record.event;
    let severity = match event.result {
        AuditResult::Ok => 6,
        AuditResult::Refused => 4,
        AuditResult::Failed => 3,
    };
    let priority = u16::from(FACILITY) * 8 + severity;
    format!(
        "<{priority}>1 {at} {host} hourglassd {pid} {action} [{SD_ID} seq=\"{seq}\" hash=\"{hash}\"] {text}",
        at = event.at,
        pid = std::process::id(),
        action = event.action.as_str(),
        seq = event.seq,
        hash = record.hash,
    )
}

#[cfg(test)]
mod tests {
    use hourglass_core::Timestamp;
    use hourglass_core::audit::{AuditAction, AuditEvent};

    use super::*;

    #[test]
    fn a_record_is_one_rfc_5424_message_with_its_number_and_hash() {
        let mut event = AuditEvent::new(
            Timestamp::from_unix_millis(1_800_000_000_000),
            "bob@acme.example",
            AuditAction::RevokeRefused,
            "grt-1",
            AuditResult::Refused,
        );
        event.seq = 42;
        let record = AuditRecord { event, prev_hash: "00".into(), hash: "ab12".into() };
        let line = message(&record, "{\"a\":1}", "broker-1");
        let pid = std::process::id();
        assert_eq!(
            line,
            format!(
                "<84>1 2027-01-15T08:00:00.000Z broker-1 hourglassd {pid} grant.revoke_refused \
                 [hourglass@32473 seq=\"42\" hash=\"ab12\"] {{\"a\":1}}"
            ),
            "authpriv.warning for a refusal"
        );
    }
}
