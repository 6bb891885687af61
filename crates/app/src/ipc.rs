//! The contract between the window and the app, written once: every
//! command with its arguments and answer, every event with its payload.
//! The Tauri crate implements [`Commands`] and emits [`AppEvent`]s; the
//! front end calls through `ui/src/bindings/ipc.ts`, typed by the
//! TypeScript this generates (`tests/bindings.rs` fails when it is stale).
//! A command or event renamed or retyped here breaks the build on both
//! sides, not the app at run time.
//!
//! On the wire one Tauri command, [`IPC_COMMAND`], carries a [`Call`]
//! (`{"command": "renew", "grant": …, "duration": …}`) and answers the
//! command's type, or an [`ApiError`] `{code, message}`.

use std::future::Future;

use hourglass_core::api::{ApiError, CreateRequest, ErrorCode, PersonalChannel, RenewOutcome, RequestOutcome};
use hourglass_core::audit::AuditRecord;
use hourglass_core::review::ReviewVerdict;
use hourglass_core::{AccessRequest, Duration, Grant, GrantId, RequestId};
use serde::{Deserialize, Serialize};

use crate::integration::{HookShell, IntegrationStatus, ShellIntegration};
use crate::offer::Offer;
use crate::settings::Settings;
use crate::view::{Account, AppView};

/// The name of the one Tauri command that carries every [`Call`].
pub const IPC_COMMAND: &str = "call";

/// What a command answers: its value, or `{code, message}`.
pub type Answer<T> = Result<T, ApiError>;

macro_rules! commands {
    ($( $(#[doc = $doc:literal])* $name:ident { $($arg:ident : $ty:ty),* $(,)? } -> $answer:ty; )*) => {
        /// A call from the window: the command and its arguments.
        #[derive(Debug, Deserialize, ts_rs::TS)]
        #[serde(tag = "command")]
        #[allow(non_camel_case_types, reason = "the variants are the commands' names on the wire")]
        pub enum Call {
            $( $(#[doc = $doc])* $name { $($arg: $ty),* }, )*
        }

        /// What each command answers, by name (a type for the front end only).
        #[derive(ts_rs::TS)]
        pub struct Answers {
            $( pub $name: $answer, )*
        }

        /// The app's side of every command.
        pub trait Commands: Sync {
            $( $(#[doc = $doc])* fn $name(&self, $($arg: $ty),*) -> impl Future<Output = Answer<$answer>> + Send; )*
        }

        /// Runs `call` on `commands`, its answer as JSON.
        pub async fn dispatch<C: Commands>(commands: &C, call: Call) -> Answer<serde_json::Value> {
            match call {
                $( Call::$name { $($arg),* } => json(commands.$name($($arg),*).await?), )*
            }
        }
    };
}

commands! {
    /// The window's view now.
    view {} -> AppView;
    settings {} -> Settings;
    save_settings { settings: Settings } -> Settings;
    /// What the user may request, with the durations to pick from.
    catalog {} -> Offer;
    /// Files a request; for a PostgreSQL or SSH resource the app makes the
    /// secret and its agent keeps it.
    request_access { body: CreateRequest } -> RequestOutcome;
    approve { id: RequestId, comment: Option<String> } -> RequestOutcome;
    deny { id: RequestId, comment: Option<String> } -> RequestOutcome;
    cancel { id: RequestId } -> AccessRequest;
    /// The channels that can tell me of my requests and access, as I chose them.
    my_channels {} -> Vec<PersonalChannel>;
    /// Turns the `muted` channels off for me, the others on.
    choose_channels { muted: Vec<String> } -> Vec<PersonalChannel>;
    /// Reviews a break-glass grant: justified or not, and why.
    review { grant: GrantId, verdict: ReviewVerdict, comment: String } -> Grant;
    /// Renews for `duration`, or for the role's default duration.
    renew { grant: GrantId, duration: Option<Duration> } -> RenewOutcome;
    revoke { grant: GrantId } -> Grant;
    history { limit: u32 } -> Vec<AuditRecord>;
    /// The shell lines that set a grant's credentials, complete (the
    /// agent's, with the secret this client made), for the clipboard.
    shell_snippet { grant: GrantId } -> String;
    /// Opens a terminal whose environment has the grant's credentials.
    open_terminal { grant: GrantId } -> ();
    hide_window {} -> ();
    /// Retries the broker now (the offline banner's "Retry").
    reconnect {} -> ();
    /// Logs in in the system browser; the session goes to the keyring, or
    /// to the app's memory where there is none.
    login {} -> Account;
    cancel_login {} -> ();
    logout {} -> Account;
    account {} -> Account;
    integration {} -> IntegrationStatus;
    install_hook { shell: HookShell } -> ShellIntegration;
}

fn json<T: Serialize>(answer: T) -> Answer<serde_json::Value> {
    serde_json::to_value(answer).map_err(|error| refused(ErrorCode::Internal, format!("encoding the answer: {error}")))
}

/// Reads a call as the window sent it; a malformed one is refused like a
/// malformed API request.
pub fn parse(call: serde_json::Value) -> Answer<Call> {
    serde_json::from_value(call).map_err(|error| refused(ErrorCode::InvalidRequest, error.to_string()))
}

pub fn refused(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError { code, message: message.into() }
}

/// A client error as the window sees it: the broker's own `{code, message}`
/// when it refused, else a code for what went wrong.
pub fn client_error(error: hourglass_client::Error) -> ApiError {
    let code = match &error {
        hourglass_client::Error::Api(api) => return api.clone(),
        hourglass_client::Error::Unreachable { .. } | hourglass_client::Error::Agent(_) => ErrorCode::Unavailable,
        hourglass_client::Error::Protocol(_) => ErrorCode::Internal,
        hourglass_client::Error::Config(_) | hourglass_client::Error::NoKeyring { .. } => ErrorCode::InvalidRequest,
    };
    ApiError { code, message: error.to_string() }
}

/// A tab of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum Tab {
    Grants,
    Request,
    Approvals,
    History,
    Settings,
}

/// What the login page shows while the browser is out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct LoginPrompt {
    pub url: String,
    /// The system browser was started (else the user must open the URL).
    pub opened: bool,
}

macro_rules! events {
    ($( $(#[doc = $doc:literal])* $name:ident : $payload:ty; )*) => {
        /// What the app tells the window.
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        #[allow(non_camel_case_types, reason = "the variants are the events' names on the wire")]
        pub enum AppEvent {
            $( $(#[doc = $doc])* $name($payload), )*
        }

        impl AppEvent {
            /// The event's name on the wire.
            pub fn name(&self) -> &'static str {
                match self {
                    $( AppEvent::$name(_) => stringify!($name), )*
                }
            }
        }

        /// Each event's payload, by name (a type for the front end only).
        #[derive(ts_rs::TS)]
        pub struct Events {
            $( pub $name: $payload, )*
        }
    };
}

events! {
    /// The view changed. Boxed: it is most of the enum's size otherwise.
    view: Box<AppView>;
    /// Show a tab (the tray's items, a notification's "Open").
    navigate: Tab;
    /// The login page the system browser was sent to.
    login_prompt: LoginPrompt;
}

/// `ui/src/bindings/ipc.ts`: the front end's one way to call the app and
/// hear from it, typed by the generated `Call`, `Answers` and `Events`.
pub fn typescript_api() -> String {
    format!(
        r#"// Generated from crates/app/src/ipc.rs by crates/app/tests/bindings.rs. Do not edit.
import {{ invoke }} from "@tauri-apps/api/core";
import {{ listen, type UnlistenFn }} from "@tauri-apps/api/event";
import type {{ Answers }} from "./Answers";
import type {{ Call }} from "./Call";
import type {{ Events }} from "./Events";

/** A command the app answers. */
export type Command = Call["command"];

/** A command's arguments. */
export type Args<C extends Command> = Omit<Extract<Call, {{ command: C }}>, "command">;

/** Runs `command` in the app. It rejects with an `ApiError` ({{code, message}}). */
export function call<C extends Command>(command: C, args: Args<C>): Promise<Answers[C]> {{
  return invoke<Answers[C]>("{IPC_COMMAND}", {{ call: {{ command, ...args }} }});
}}

/** Calls `handler` with every `event` the app sends. */
export function on<E extends keyof Events>(event: E, handler: (payload: Events[E]) => void): Promise<UnlistenFn> {{
  return listen<Events[E]>(event, (message) => handler(message.payload));
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipc_calls_are_read_by_command_name_with_typed_arguments() {
        let call = parse(serde_json::json!({"command": "renew", "grant": "grt-7k2m9x4q3t", "duration": "30m"}));
        assert!(
            matches!(call, Ok(Call::renew { ref grant, duration }) if grant.as_str() == "grt-7k2m9x4q3t" && duration == Some(Duration::from_mins(30))),
            "{call:?}"
        );
        let unit = parse(serde_json::json!({"command": "view"}));
        assert!(matches!(unit, Ok(Call::view {})), "a command without arguments: {unit:?}");
        let wrong = parse(serde_json::json!({"command": "renew", "grant": "req-7k2m9x4q3t", "duration": "30m"}));
        let error = wrong.expect_err("a request id is not a grant id");
        assert_eq!(error.code, ErrorCode::InvalidRequest, "refused as a malformed request: {}", error.message);
        let unknown = parse(serde_json::json!({"command": "format_disk"})).expect_err("no such command");
        assert!(unknown.message.contains("format_disk"), "names it: {}", unknown.message);
    }

    #[test]
    fn app_events_are_sent_as_their_payload_under_their_name() {
        let event = AppEvent::navigate(Tab::Approvals);
        assert_eq!(event.name(), "navigate");
        assert_eq!(serde_json::to_value(&event).expect("json"), serde_json::json!("approvals"), "the payload alone");
    }
}
