//! Talking to the agent: blocking I/O on the Unix socket, no runtime, so a
//! prompt hook or a credential helper costs one connect and one line each
//! way.

use std::io::{BufRead, BufReader, Write};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::Duration as StdDuration;

use hourglass_core::{GrantId, RequestId};

use super::paths::{Paths, not_running};
use super::protocol::{
    AgentError, AgentErrorCode, Answer, ClientSecretValue, GitAnswer, HeldCredential, HookSnapshot, Reply, Request,
    RequestLine, Selector, Status, VERSION,
};

/// Elsewhere there is no agent to connect to (`Paths::verify` refuses
/// first): a stream type only so that the client compiles.
#[cfg(not(unix))]
type UnixStream = std::net::TcpStream;

pub struct AgentClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn agent_error(code: AgentErrorCode, message: impl Into<String>) -> crate::Error {
    crate::Error::Agent(AgentError::new(code, message))
}

impl AgentClient {
    /// Connects to the agent of this user. The directory is checked first:
    /// a socket in a directory another user controls is never used.
    pub fn connect(paths: &Paths) -> crate::Result<AgentClient> {
        AgentClient::connect_with_timeout(paths, StdDuration::from_secs(30))
    }

    pub fn connect_with_timeout(paths: &Paths, timeout: StdDuration) -> crate::Result<AgentClient> {
        paths.verify()?;
        let socket = paths.socket();
        let stream = match UnixStream::connect(&socket) {
            Ok(stream) => stream,
            Err(error) => {
                return Err(match error.kind() {
                    std::io::ErrorKind::NotFound => crate::Error::Agent(not_running(paths, "no socket at")),
                    std::io::ErrorKind::ConnectionRefused => {
                        crate::Error::Agent(not_running(paths, "nothing listens at"))
                    }
                    std::io::ErrorKind::PermissionDenied => agent_error(
                        AgentErrorCode::Forbidden,
                        format!("cannot connect to {}: permission denied", socket.display()),
                    ),
                    _ => {
                        agent_error(AgentErrorCode::Failed, format!("cannot connect to {}: {error}", socket.display()))
                    }
                });
            }
        };
        let io = |error: std::io::Error| agent_error(AgentErrorCode::Failed, format!("agent socket: {error}"));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(AgentClient { reader: BufReader::new(stream), writer })
    }

    /// Sends one request and reads its answer.
    pub fn call(&mut self, request: Request) -> crate::Result<Answer> {
        let mut line = serde_json::to_vec(&RequestLine { version: VERSION, request })
            .map_err(|error| agent_error(AgentErrorCode::InvalidRequest, error.to_string()))?;
        line.push(b'\n');
        let sent = self.writer.write_all(&line);
        zeroize::Zeroize::zeroize(&mut line);
        sent.map_err(|error| agent_error(AgentErrorCode::Failed, format!("writing to the agent: {error}")))?;
        let mut answer = zeroize::Zeroizing::new(String::new());
        match self.reader.read_line(&mut answer) {
            Ok(0) => return Err(agent_error(AgentErrorCode::Failed, "the agent closed the connection")),
            Ok(_) => {}
            Err(error) => return Err(agent_error(AgentErrorCode::Failed, format!("reading from the agent: {error}"))),
        }
        match serde_json::from_str::<Reply>(&answer) {
            Ok(Reply::Ok(answer)) => Ok(answer),
            Ok(Reply::Error(error)) => Err(crate::Error::Agent(error)),
            Err(error) => {
                Err(agent_error(AgentErrorCode::Failed, format!("the agent's answer is not understood: {error}")))
            }
        }
    }

    pub fn status(&mut self) -> crate::Result<Status> {
        match self.call(Request::Status)? {
            Answer::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    pub fn credential(&mut self, grant: Selector) -> crate::Result<HeldCredential> {
        match self.call(Request::Credential { grant })? {
            Answer::Credential(held) => Ok(held),
            other => Err(unexpected(&other)),
        }
    }

    pub fn hook_state(&mut self) -> crate::Result<HookSnapshot> {
        match self.call(Request::HookState)? {
            Answer::HookState(snapshot) => Ok(snapshot),
            other => Err(unexpected(&other)),
        }
    }

    pub fn store_secret(
        &mut self,
        request: &RequestId,
        grant: Option<&GrantId>,
        secret: ClientSecretValue,
        confirm_ready: bool,
    ) -> crate::Result<()> {
        let request =
            Request::StoreSecret { request_id: request.clone(), grant_id: grant.cloned(), secret, confirm_ready };
        match self.call(request)? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub fn git_credential(&mut self, protocol: Option<String>, host: String) -> crate::Result<Option<GitAnswer>> {
        match self.call(Request::GitCredential { protocol, host })? {
            Answer::GitCredential(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    pub fn pgpass(&mut self, enabled: bool) -> crate::Result<()> {
        match self.call(Request::Pgpass { enabled })? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub fn stop(&mut self) -> crate::Result<()> {
        match self.call(Request::Stop)? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &Answer) -> crate::Error {
    let kind = match answer {
        Answer::Status(_) => "status",
        Answer::Credential(_) => "credential",
        Answer::HookState(_) => "hook_state",
        Answer::GitCredential(_) => "git_credential",
        Answer::Done => "done",
    };
    agent_error(AgentErrorCode::Failed, format!("the agent answered with {kind}, not what was asked"))
}
