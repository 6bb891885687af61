//! The socket: `agent.sock` (0600) in the private directory, the peer's uid
//! checked on every connection, then JSON lines (see [`super::protocol`]).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use super::Shared;
use super::paths::{Paths, my_uid};
use super::protocol::{AgentError, AgentErrorCode, Answer, MAX_LINE, Reply, Request, RequestLine, Status, VERSION};
use crate::clock::local_now;
use crate::pgpass;

/// A connection idle this long is closed.
const IDLE: StdDuration = StdDuration::from_secs(60);

fn failed(message: String) -> crate::Error {
    crate::Error::Agent(AgentError::new(AgentErrorCode::Failed, message))
}

/// Binds the socket, refusing if an agent already answers on it; a socket
/// file nobody listens on (a crashed agent's) is replaced.
pub(crate) fn bind(paths: &Paths) -> crate::Result<UnixListener> {
    let socket = paths.socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(failed(format!(
            "an hourglass agent is already running on {} (`hourglass agent --status`)",
            socket.display()
        )));
    }
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(format!("cannot remove the stale socket {}: {error}", socket.display()))),
    }
    let listener = UnixListener::bind(&socket)
        .map_err(|error| failed(format!("cannot listen on {}: {error}", socket.display())))?;
    // The directory is 0700 already, so nobody else could reach the socket
    // between bind and this; 0600 says the same on the socket itself.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| failed(format!("cannot restrict {}: {error}", socket.display())))?;
    Ok(listener)
}

pub(crate) async fn serve(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(shared.clone(), stream));
            }
            Err(error) => {
                shared.note(&format!("agent socket: accept failed: {error}"));
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        }
    }
}

async fn write_reply(stream: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = Zeroizing::new(serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec()));
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn connection(shared: Arc<Shared>, stream: UnixStream) {
    // INVARIANT: nothing a peer sends is parsed, and nothing is answered but
    // a refusal, before its uid is checked.
    let me = my_uid();
    let peer = stream.peer_cred().map(|cred| cred.uid());
    let (reader, mut writer) = stream.into_split();
    match peer {
        Ok(uid) if uid == me => {}
        Ok(uid) => {
            shared.note(&format!("refused a connection from uid {uid}"));
            let error = AgentError::new(
                AgentErrorCode::Forbidden,
                format!("this agent serves uid {me} only; you are uid {uid}"),
            );
            let _ = write_reply(&mut writer, &Reply::Error(error)).await;
            let _ = writer.shutdown().await;
            // Unread input would turn the close into a reset that loses the
            // answer: take (and discard, unparsed) what the peer sent.
            let mut sink = reader.take(MAX_LINE as u64);
            let _ = tokio::time::timeout(StdDuration::from_secs(1), tokio::io::copy(&mut sink, &mut tokio::io::sink()))
                .await;
            return;
        }
        Err(error) => {
            shared.note(&format!("refused a connection whose peer is unknown: {error}"));
            return;
        }
    }
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = Zeroizing::new(Vec::new());
        let read = tokio::time::timeout(IDLE, read_line(&mut reader, &mut line)).await;
        let reply = match read {
            Err(_) | Ok(Ok(false)) | Ok(Err(_)) => return,
            Ok(Ok(true)) => match serde_json::from_slice::<RequestLine>(&line) {
                Ok(request) if request.version != VERSION => Reply::Error(AgentError::new(
                    AgentErrorCode::UnsupportedVersion,
                    format!("this agent speaks protocol version {VERSION}, not {}", request.version),
                )),
                Ok(request) => answer(&shared, request.request),
                Err(error) => {
                    // The line may hold a secret: report the position only.
                    let at = format!("line {} column {}", error.line(), error.column());
                    Reply::Error(AgentError::new(AgentErrorCode::InvalidRequest, format!("malformed request at {at}")))
                }
            },
        };
        if write_reply(&mut writer, &reply).await.is_err() {
            return;
        }
    }
}

/// Reads one line (without its newline) of at most [`MAX_LINE`] bytes.
/// `false` at the end of the stream; an error for a longer line.
async fn read_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut Zeroizing<Vec<u8>>,
) -> std::io::Result<bool> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request line too long"));
        }
        line.extend_from_slice(chunk);
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(true);
        }
    }
}

fn answer(shared: &Arc<Shared>, request: Request) -> Reply {
    let result = match request {
        Request::Status => Ok(Answer::Status(status(shared))),
        Request::Credential { grant } => shared.lock().credential(&grant).map(Answer::Credential),
        Request::HookState => Ok(Answer::HookState(shared.lock().hook_snapshot())),
        Request::StoreSecret { request_id, grant_id, secret, confirm_ready } => shared
            .update(|state| match state.store_secret(request_id, grant_id, &secret, confirm_ready, local_now()) {
                Ok(changed) => (changed, Ok(())),
                Err(error) => (false, Err(error)),
            })
            .map(|()| Answer::Done),
        Request::GitCredential { protocol, host } => {
            Ok(Answer::GitCredential(shared.lock().git(protocol.as_deref(), &host)))
        }
        Request::Pgpass { enabled } => set_pgpass(shared, enabled).map(|()| Answer::Done),
        Request::Stop => {
            shared.stop.notify_one();
            Ok(Answer::Done)
        }
    };
    match result {
        Ok(answer) => Reply::Ok(answer),
        Err(error) => Reply::Error(error),
    }
}

fn status(shared: &Arc<Shared>) -> Status {
    let state = shared.lock();
    Status {
        version: VERSION,
        pid: std::process::id(),
        broker: shared.client().base_url().to_owned(),
        principal: state.principal.clone(),
        online: state.online,
        skew_ms: state.clock.offset_ms(),
        grants: state.held_grants(),
        waiting_secrets: state.waiting_secrets(),
        ssh_auth_sock: shared.ssh_auth_sock.as_ref().map(|p| p.display().to_string()),
        pgpass: shared
            .pgpass
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .is_some_and(|text| pgpass::is_enabled(&text)),
        hook_state: state.hook_line(),
    }
}

fn set_pgpass(shared: &Arc<Shared>, enabled: bool) -> Result<(), AgentError> {
    let Some(path) = &shared.pgpass else {
        return Err(AgentError::new(AgentErrorCode::Failed, "the agent knows no .pgpass path (HOME is not set)"));
    };
    let changed = {
        let _file = shared.pgpass_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if enabled { pgpass::enable(path) } else { pgpass::disable(path) }
    };
    changed.map_err(|error| AgentError::new(AgentErrorCode::Failed, format!("{}: {error}", path.display())))?;
    if enabled {
        shared.refresh_effects();
    }
    Ok(())
}
