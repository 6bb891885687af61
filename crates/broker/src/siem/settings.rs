//! `[broker.siem.NAME]` as written: where the audit log streams, in which
//! schema. Below the rest of `siem`, so that the broker's settings name it.
//!
//! ```toml
//! [broker.siem.soc]                 # RFC 5424 over TLS (RFC 5425), port 6514
//! kind = "syslog"
//! address = "siem.acme.example:6514"
//! ca_file = "/etc/hourglass/siem-ca.pem"   # default: the system's roots
//! format = "ocsf"                   # ocsf (default), ecs or jsonl
//!
//! [broker.siem.splunk]              # Splunk's HTTP Event Collector, or one like it
//! kind = "hec"
//! url = "https://splunk.acme.example:8088/services/collector/event"
//! token_file = "/etc/hourglass/hec-token"
//! ```

use std::path::PathBuf;

use hourglass_core::audit::AuditRecord;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SiemSettings {
    Syslog {
        /// `host:port` of a syslog receiver speaking TLS.
        address: String,
        /// Trust only this CA (PEM) for its certificate.
        ca_file: Option<PathBuf>,
        #[serde(default)]
        format: Format,
    },
    Hec {
        url: String,
        token_file: PathBuf,
        #[serde(default)]
        format: Format,
    },
}

impl SiemSettings {
    pub fn format(&self) -> Format {
        match self {
            SiemSettings::Syslog { format, .. } | SiemSettings::Hec { format, .. } => *format,
        }
    }
}

/// The schema audit records are sent in (`hourglassd audit export --format`
/// writes the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// OCSF 1.1: grants as User Access Management, the rest as API Activity.
    #[default]
    Ocsf,
    /// Elastic Common Schema.
    Ecs,
    /// The record as stored, with its hashes.
    Jsonl,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "ocsf" => Some(Format::Ocsf),
            "ecs" => Some(Format::Ecs),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// `record` in this schema, as one line of JSON (a stored record
    /// keeps its fields' order).
    pub fn render(self, record: &AuditRecord) -> String {
        let value: Value = match self {
            Format::Ocsf => hourglass_core::siem::ocsf(record, env!("CARGO_PKG_VERSION")),
            Format::Ecs => hourglass_core::siem::ecs(record),
            Format::Jsonl => return serde_json::to_string(record).unwrap_or_default(),
        };
        value.to_string()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
            Format::Jsonl => "jsonl",
        }
    }
}
