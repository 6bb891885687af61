use hourglass_core::api::{ApiError, ErrorCode};

/// Everything that can go wrong in the broker. Refusals that the caller can
/// act on carry an [`ErrorCode`] and a message written for them; the rest
/// are internal and their details stay in the broker's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// A principal calling faster than `[broker.limits]` allows; the
    /// answer's `Retry-After` says when the next call is admitted.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    #[error("store: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
    #[error("policy: {0}")]
    Policy(#[from] hourglass_policy::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in the store's engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", crate::pg::describe_error(.0))]
    Postgres(tokio_postgres::Error),
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        Error::Store(StoreError::Sqlite(error))
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        Error::Store(StoreError::Postgres(error))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The target refused or failed. The message names the target and what
    /// went wrong, and never contains a secret.
    #[error("{resource}: {message}")]
    Failed { resource: String, message: String },
    #[error("{resource}: no answer within {seconds}s")]
    TimedOut { resource: String, seconds: u64 },
    #[error("no credential provider of kind \"{0}\"")]
    UnknownKind(String),
}

impl ProviderError {
    pub fn failed(resource: &str, message: impl Into<String>) -> Self {
        ProviderError::Failed { resource: resource.to_owned(), message: message.into() }
    }
}

impl Error {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Refused { code, message: message.into() }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// The body sent to the client: refusals as they are, anything else as a
    /// generic message (internals are logged, never sent).
    pub fn to_api(&self) -> ApiError {
        match self {
            Error::Refused { code, message } => ApiError { code: *code, message: message.clone() },
            Error::RateLimited { message, .. } => ApiError { code: ErrorCode::RateLimited, message: message.clone() },
            Error::Provider(error) => ApiError { code: ErrorCode::ProviderFailed, message: error.to_string() },
            Error::Store(error) => match refuses_writes(error) {
                Some(why) => ApiError {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "the broker's store refuses writes ({why}): nothing was changed; reads still work; try again later"
                    ),
                },
                None => internal(),
            },
            _ => internal(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.to_api().code
    }
}

fn internal() -> ApiError {
    ApiError { code: ErrorCode::Internal, message: "internal error; the broker's log has details".into() }
}

/// Disk full, read-only, locked or out of reach: the store is there (or
/// will be) but refuses writes. Why, in words for the caller (no path, no
/// internals).
fn refuses_writes(error: &StoreError) -> Option<&'static str> {
    match error {
        StoreError::Sqlite(error) => {
            use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, ReadOnly, SystemIoFailure};
            match error.sqlite_error_code()? {
                DiskFull => Some("its disk is full"),
                ReadOnly => Some("it is read-only"),
                DatabaseBusy | DatabaseLocked => Some("it is locked"),
                SystemIoFailure | CannotOpen => Some("its disk failed a write"),
                _ => None,
            }
        }
        StoreError::Postgres(error) => {
            use tokio_postgres::error::SqlState;
            let Some(db) = error.as_db_error() else {
                // No answer from the server: a connection that failed or closed.
                return Some("the database cannot be reached");
            };
            let code = db.code();
            if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
                Some("the database is out of space")
            } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
                Some("the database is read-only (a standby?)")
            } else if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::TOO_MANY_CONNECTIONS
            {
                Some("the database is restarting or busy")
            } else if *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
            {
                Some("another change got in the way")
            } else {
                None
            }
        }
    }
}
