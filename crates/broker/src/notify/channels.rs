//! `[broker.channels.NAME]`: where notifications go, read at start (like
//! issuers, a change needs a restart). Policy names channels (`notify`,
//! `notify_requester`); a policy naming one this broker does not have is
//! refused, like one naming an unknown provider. Secrets (a bot token, a
//! webhook URL that is itself the credential, a signing secret, an SMTP
//! password) are read from files and never written anywhere.
//!
//! ```toml
//! [broker.channels.sre-slack]          # chat.postMessage, then chat.update
//! kind = "slack"
//! channel = "C0123456789"
//! token_file = "/etc/hourglass/slack-bot-token"
//!
//! [broker.channels.sre-teams]          # a Teams workflow's webhook
//! kind = "teams"
//! webhook_url_file = "/etc/hourglass/teams-webhook-url"
//!
//! [broker.channels.mail]
//! kind = "email"
//! smtp = "smtp.acme.example:587"       # STARTTLS unless tls = "tls" (465) or "none" (loopback only)
//! username = "hourglass"
//! password_file = "/etc/hourglass/smtp-password"
//! from = "Hourglass <hourglass@acme.example>"
//! to = ["sre@acme.example"]            # approvers; a requester at their own address
//!
//! [broker.channels.siem-hook]          # JSON, HMAC-SHA256 signed
//! kind = "webhook"
//! url = "https://hooks.acme.example/hourglass"
//! secret_file = "/etc/hourglass/webhook-secret"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use hourglass_policy::{POLICY_FILE, Policy, Problem};

use super::email::EmailChannel;
use super::settings::{ChannelSettings, Secret};
use crate::error::{Error, Result};
use crate::settings::BrokerSettings;

/// A channel ready to send.
#[derive(Debug)]
pub enum Channel {
    SlackBot { api_url: String, channel: String, token: Secret },
    SlackWebhook { url: Secret },
    Teams { url: Secret },
    Email(Box<EmailChannel>),
    Webhook { url: String, secret: Secret },
}

impl Channel {
    /// Whether it can reach one person (a requester), not only a team.
    pub fn reaches_a_person(&self) -> bool {
        matches!(self, Channel::Email(_) | Channel::Webhook { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Channel::SlackBot { .. } | Channel::SlackWebhook { .. } => "slack",
            Channel::Teams { .. } => "teams",
            Channel::Email(_) => "email",
            Channel::Webhook { .. } => "webhook",
        }
    }
}

/// The channels of this broker, by name.
#[derive(Debug, Default)]
pub struct Channels {
    by_name: BTreeMap<String, Channel>,
}

impl Channels {
    /// Reads `[broker.channels]`, with the secrets' files (relative paths:
    /// to the policy directory). Each problem names the channel.
    pub fn load(settings: &BrokerSettings, policy_dir: &Path) -> Result<Channels> {
        let mut by_name = BTreeMap::new();
        for (name, channel) in &settings.channels {
            let loaded = load_one(name, channel, policy_dir)?;
            by_name.insert(name.clone(), loaded);
        }
        Ok(Channels { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.by_name.get(name)
    }

    /// What in `policy` names a channel this broker does not have, or asks
    /// a team's channel to reach a requester.
    pub fn check(&self, policy: &Policy) -> Vec<Problem> {
        let known = || {
            let names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            if names.is_empty() { "none is configured in [broker.channels]".to_owned() } else { names.join(", ") }
        };
        let mut problems = Vec::new();
        for resource in policy.resources.values() {
            for role in resource.roles.values() {
                let here = |message: String| Problem {
                    file: POLICY_FILE.into(),
                    line: Some(role.line),
                    column: None,
                    message: format!("role \"{}/{}\": {message}", resource.name, role.name),
                };
                for name in role.notify.iter().chain(&role.notify_requester) {
                    if !self.by_name.contains_key(name) {
                        problems.push(here(format!("notifies unknown channel \"{name}\" (known: {})", known())));
                    }
                }
                for name in &role.notify_requester {
                    if let Some(channel) = self.by_name.get(name).filter(|channel| !channel.reaches_a_person()) {
                        problems.push(here(format!(
                            "notify_requester: channel \"{name}\" is a {} channel, which reaches a team, not the \
                             person who asked; use an email or webhook channel",
                            channel.kind()
                        )));
                    }
                }
            }
        }
        problems.dedup();
        problems
    }
}

fn load_one(name: &str, settings: &ChannelSettings, policy_dir: &Path) -> Result<Channel> {
    let what = format!("[broker.channels.{name}]");
    let file = |path: &Path| BrokerSettings::resolve(policy_dir, path);
    match settings {
        ChannelSettings::Slack { channel, token_file, webhook_url_file, api_url } => {
            match (token_file, webhook_url_file) {
                (Some(token_file), None) => {
                    let Some(channel) = channel.clone().filter(|c| !c.trim().is_empty()) else {
                        return Err(Error::Config(format!("{what}: a bot token needs `channel` (its id, C…)")));
                    };
                    let api_url = api_url.clone().unwrap_or_else(|| "https://slack.com/api".into());
                    check_url(&api_url, &what)?;
                    let token = Secret::read(&file(token_file), &format!("{what} token_file"))?;
                    Ok(Channel::SlackBot { api_url: api_url.trim_end_matches('/').to_owned(), channel, token })
                }
                (None, Some(url_file)) => {
                    let url = Secret::read(&file(url_file), &format!("{what} webhook_url_file"))?;
                    check_url(url.expose(), &format!("{what} webhook_url_file"))?;
                    Ok(Channel::SlackWebhook { url })
                }
                _ => Err(Error::Config(format!(
                    "{what}: set either token_file (and channel) or webhook_url_file, not both or neither"
                ))),
            }
        }
        ChannelSettings::Teams { webhook_url_file } => {
            let url = Secret::read(&file(webhook_url_file), &format!("{what} webhook_url_file"))?;
            check_url(url.expose(), &format!("{what} webhook_url_file"))?;
            Ok(Channel::Teams { url })
        }
        ChannelSettings::Webhook { url, secret_file } => {
            check_url(url, &what)?;
            let secret = Secret::read(&file(secret_file), &format!("{what} secret_file"))?;
            if secret.expose().len() < 16 {
                return Err(Error::Config(format!("{what}: the secret in secret_file is shorter than 16 characters")));
            }
            Ok(Channel::Webhook { url: url.clone(), secret })
        }
        ChannelSettings::Email { smtp, tls, ca_file, username, password_file, from, to } => {
            let password = match password_file {
                Some(path) => Some(Secret::read(&file(path), &format!("{what} password_file"))?),
                None => None,
            };
            let ca = ca_file.as_deref().map(file);
            let email = EmailChannel::new(&what, smtp, *tls, ca.as_deref(), username.as_deref(), password, from, to)?;
            Ok(Channel::Email(Box::new(email)))
        }
    }
}

/// HTTPS, or plain HTTP to this machine only: a notification carries who
/// asked for what and why.
fn check_url(text: &str, what: &str) -> Result<()> {
    let url = reqwest::Url::parse(text).map_err(|_| Error::Config(format!("{what}: not a URL")))?;
    if crate::roots::is_https_or_loopback(&url) {
        Ok(())
    } else {
        Err(Error::Config(format!("{what}: the URL must be https:// (plain http only to this machine)")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    fn load(toml: &str, files: &[(&str, &str)]) -> Result<Channels> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let settings = BrokerSettings::from_table(&toml.parse::<toml::Table>().unwrap())?;
        Channels::load(&settings, dir.path())
    }

    #[test]
    fn channels_load_with_their_secrets_and_refuse_what_would_leak() {
        let ok = load(
            "[channels.hook]\nkind = \"webhook\"\nurl = \"https://hooks.acme.example/x\"\nsecret_file = \"s\"\n\
             [channels.chat]\nkind = \"slack\"\nchannel = \"C1\"\ntoken_file = \"t\"\n",
            &[("s", "0123456789abcdef0123\n"), ("t", "xoxb-secret-token")],
        )
        .unwrap();
        assert_eq!(ok.get("chat").unwrap().kind(), "slack");
        assert!(!format!("{ok:?}").contains("xoxb-secret-token"), "secrets never printed");
        let plain = load(
            "[channels.hook]\nkind = \"webhook\"\nurl = \"http://hooks.acme.example/x\"\nsecret_file = \"s\"\n",
            &[("s", "0123456789abcdef0123")],
        )
        .unwrap_err();
        assert!(plain.to_string().contains("must be https://"), "{plain}");
        let missing = load("[channels.chat]\nkind = \"teams\"\nwebhook_url_file = \"nope\"\n", &[]).unwrap_err();
        assert!(missing.to_string().contains("[broker.channels.chat] webhook_url_file: cannot read"), "{missing}");
        let both = load(
            "[channels.chat]\nkind = \"slack\"\nchannel = \"C1\"\ntoken_file = \"t\"\nwebhook_url_file = \"t\"\n",
            &[("t", "x")],
        )
        .unwrap_err();
        assert!(both.to_string().contains("either token_file"), "{both}");
        let typo = load("[channels.chat]\nkind = \"teams\"\nwebhook_url = \"x\"\n", &[]).unwrap_err();
        assert!(typo.to_string().contains("webhook_url"), "{typo}");
    }

    #[test]
    fn a_policy_naming_an_unknown_channel_or_a_team_channel_for_requesters_is_refused() {
        let channels = load(
            "[channels.chat]\nkind = \"teams\"\nwebhook_url_file = \"u\"\n",
            &[("u", "https://acme.webhook.office.com/x")],
        )
        .unwrap();
        let toml = "[workflows.w]\napprovals = [{ group = \"sre\", count = 1 }]\n[resources.db]\nprovider = \"token\"\n\
                    workflow = \"w\"\nnotify = [\"chat\", \"pager\"]\nnotify_requester = [\"chat\"]\n[resources.db.roles.read]\n";
        let cedar = "permit(principal, action == Action::\"request\", resource);";
        let policy =
            Policy::from_sources(vec![("hourglass.toml".into(), toml.into()), ("a.cedar".into(), cedar.into())])
                .unwrap();
        let problems: Vec<String> = channels.check(&policy).iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|p| p.contains("unknown channel \"pager\" (known: chat)")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("\"chat\" is a teams channel")), "{problems:#?}");
        assert!(problems[0].starts_with("hourglass.toml:"), "located: {problems:#?}");
    }
}
