//! The crate's one error type.

/// What can go wrong talking to AWS or finding credentials. Messages never
/// hold a secret: no keys, session tokens, web identity tokens, request
/// bodies or Authorization headers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// AWS answered with an error document; `code` is AWS's own
    /// (`AccessDenied`, `NoSuchEntity`, `ExpiredToken`, …).
    #[error(
        "aws {action} failed with {code} (http {status}, request id {}): {message}",
        request_id.as_deref().unwrap_or("none")
    )]
    Aws { action: &'static str, status: u16, code: String, message: String, request_id: Option<String> },
    /// An error status whose body is not an AWS error document (a proxy's
    /// page, a crashed emulator); the body's start helps tell which.
    #[error("aws {action} failed with http {status}: {body}")]
    UnexpectedStatus { action: &'static str, status: u16, body: String },
    /// No answer: DNS, connect, TLS, timeout. The message carries the
    /// root cause, which reqwest's own message leaves to its source chain.
    #[error("aws {action} could not be sent: {}", with_causes(error))]
    Transport { action: &'static str, error: reqwest::Error },
    /// A success answer missing what the action promises, or not XML.
    #[error("aws {action} answered with an unreadable response: {detail}")]
    Response { action: &'static str, detail: String },
    /// A credential source that is configured but broken: named so the
    /// operator knows which file or variable to fix.
    #[error("{source_name} credentials: {detail}")]
    CredentialSource { source_name: String, detail: String },
    /// A credential source whose AWS call failed (web identity, a profile's
    /// role): the AWS error is kept so `code()` still sees it.
    #[error("{source_name} credentials: {error}")]
    CredentialCall { source_name: String, error: Box<Error> },
    #[error("no aws credentials found: {0}")]
    NoCredentials(String),
    #[error(
        "invalid role arn {arn:?}: {why}; a role arn looks like \
         arn:aws:iam::123456789012:role/NAME or arn:aws:iam::123456789012:role/path/NAME"
    )]
    InvalidRoleArn { arn: String, why: &'static str },
    #[error("invalid aws endpoint {name}: {detail}")]
    InvalidEndpoint { name: String, detail: String },
    #[error("cannot sign the aws request: {0}")]
    Signing(String),
}

impl Error {
    /// AWS's error code, when AWS (or an emulator) sent one, so callers can
    /// branch on `NoSuchEntity`, `AccessDenied` and the like.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => Some(code),
            Error::CredentialCall { error, .. } => error.code(),
            _ => None,
        }
    }

    /// AWS's message, as AWS worded it.
    pub fn aws_message(&self) -> Option<&str> {
        match self {
            Error::Aws { message, .. } => Some(message),
            Error::CredentialCall { error, .. } => error.aws_message(),
            _ => None,
        }
    }

    /// The HTTP status AWS answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Aws { status, .. } | Error::UnexpectedStatus { status, .. } => Some(*status),
            Error::CredentialCall { error, .. } => error.status(),
            _ => None,
        }
    }
}

/// An error and its causes, "a: b: c", skipping causes whose text the
/// previous one already includes.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text = format!("{text}: {inner_text}");
        }
        cause = inner.source();
    }
    text
}

pub type Result<T> = std::result::Result<T, Error>;
