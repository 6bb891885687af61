//! Email over SMTP (lettre): STARTTLS required unless the channel says
//! otherwise, the server's certificate checked against the system's roots
//! or the channel's CA. Approvers' announcements go to the channel's `to`;
//! a requester's notices to the requester's own address. A decision
//! answers the announcement (`In-Reply-To`, `References`), so that mail
//! clients show one thread per request.

use std::path::Path;
use std::time::Duration as StdDuration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::render::{self, Summary};
use super::settings::{Secret, SmtpTls};
use super::{Audience, Notice};
use crate::error::{Error, Result};

pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

/// How an email went.
pub enum Mailed {
    /// Sent: its Message-ID.
    Sent(String),
    /// Nobody to send it to (a requester whose id is no address).
    NoRecipient,
}

impl EmailChannel {
    #[allow(clippy::too_many_arguments, reason = "one per setting of the channel")]
    pub fn new(
        what: &str,
        smtp: &str,
        tls: SmtpTls,
        ca_file: Option<&Path>,
        username: Option<&str>,
        password: Option<Secret>,
        from: &str,
        to: &[String],
    ) -> Result<EmailChannel> {
        let bad = |message: String| Error::Config(format!("{what}: {message}"));
        let (host, port) = smtp
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse::<u16>().ok()?)))
            .ok_or_else(|| bad(format!("smtp \"{smtp}\" is not host:port")))?;
        let loopback = crate::roots::is_loopback_host(host);
        let parameters = || -> Result<TlsParameters> {
            let mut builder = TlsParameters::builder(host.to_owned());
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .map_err(|error| bad(format!("ca_file {}: {}", path.display(), error.kind())))?;
                let certificate = Certificate::from_pem(&pem)
                    .map_err(|_| bad(format!("ca_file {} holds no PEM certificate", path.display())))?;
                builder = builder.certificate_store(CertificateStore::None).add_root_certificate(certificate);
            }
            builder.build_rustls().map_err(|error| bad(format!("TLS: {error}")))
        };
        let tls = match tls {
            SmtpTls::Starttls => Tls::Required(parameters()?),
            SmtpTls::Tls => Tls::Wrapper(parameters()?),
            SmtpTls::None if loopback => Tls::None,
            SmtpTls::None => {
                return Err(bad(
                    "tls = \"none\" only to a relay on this machine: mail would cross the network in the clear".into(),
                ));
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(StdDuration::from_secs(15)));
        match (username, password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.to_owned(), password.expose().to_owned()));
            }
            (None, None) => {}
            _ => return Err(bad("username and password_file go together".into())),
        }
        let from = from.parse::<Mailbox>().map_err(|_| bad(format!("from \"{from}\" is not an email address")))?;
        let to = to
            .iter()
            .map(|address| {
                address.parse::<Mailbox>().map_err(|_| bad(format!("to: \"{address}\" is not an email address")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EmailChannel { transport: builder.build(), from, to })
    }

    /// Sends `notice` (message `id`); `thread`: the Message-ID of the
    /// topic's first email, which this one answers.
    pub async fn send(
        &self,
        id: &str,
        notice: &Notice,
        summary: &Summary,
        thread: Option<&str>,
    ) -> std::result::Result<Mailed, String> {
        let recipients: Vec<Mailbox> = match notice.audience {
            Audience::Approvers => self.to.clone(),
            Audience::Requester => requester(notice).into_iter().collect(),
        };
        if recipients.is_empty() {
            return Ok(Mailed::NoRecipient);
        }
        let message_id = format!("<{id}@{}>", self.from.email.domain());
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(render::email_subject(summary, thread.is_some()))
            .message_id(Some(message_id.clone()))
            .header(ContentType::TEXT_PLAIN);
        for recipient in recipients {
            builder = builder.to(recipient);
        }
        if let Some(first) = thread {
            builder = builder.in_reply_to(first.to_owned()).references(first.to_owned());
        }
        let message =
            builder.body(render::email_text(summary)).map_err(|error| format!("building the email: {error}"))?;
        self.transport.send(message).await.map_err(|error| format!("SMTP: {error}"))?;
        Ok(Mailed::Sent(message_id))
    }
}

/// The requester's address: their principal id, when it is one.
fn requester(notice: &Notice) -> Option<Mailbox> {
    let id = match (&notice.request, &notice.grant) {
        (Some(request), _) => &request.requester,
        (None, Some(grant)) => &grant.owner,
        (None, None) => return None,
    };
    id.parse::<Mailbox>().ok()
}
