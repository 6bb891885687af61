// The only way the front end reaches Rust: typed wrappers around the app's
// commands and events. Types come from ui/src/bindings, generated from the
// Rust types (a test fails when they are stale).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { AccessRequest } from "../bindings/AccessRequest";
import type { Account } from "../bindings/Account";
import type { ApiError } from "../bindings/ApiError";
import type { AppView } from "../bindings/AppView";
import type { AuditRecord } from "../bindings/AuditRecord";
import type { Catalog } from "../bindings/Catalog";
import type { CreateRequest } from "../bindings/CreateRequest";
import type { Grant } from "../bindings/Grant";
import type { HookShell } from "../bindings/HookShell";
import type { IntegrationStatus } from "../bindings/IntegrationStatus";
import type { RenewOutcome } from "../bindings/RenewOutcome";
import type { RequestOutcome } from "../bindings/RequestOutcome";
import type { Settings } from "../bindings/Settings";
import type { ShellIntegration } from "../bindings/ShellIntegration";

export type Tab = "grants" | "request" | "approvals" | "history" | "settings";

/** Every failed command rejects with the broker's `{code, message}`. */
export function isApiError(value: unknown): value is ApiError {
  return typeof value === "object" && value !== null && "code" in value && "message" in value;
}

export function messageOf(error: unknown): string {
  if (isApiError(error)) return error.message;
  return String(error);
}

export const api = {
  view: () => invoke<AppView>("view"),
  settings: () => invoke<Settings>("settings"),
  saveSettings: (settings: Settings) => invoke<Settings>("save_settings", { settings }),
  catalog: () => invoke<Catalog>("catalog"),
  requestAccess: (body: CreateRequest) => invoke<RequestOutcome>("request_access", { body }),
  approve: (id: string, comment: string | null) => invoke<RequestOutcome>("approve", { id, comment }),
  deny: (id: string, comment: string | null) => invoke<RequestOutcome>("deny", { id, comment }),
  cancel: (id: string) => invoke<AccessRequest>("cancel", { id }),
  renew: (grant: string, duration: string) => invoke<RenewOutcome>("renew", { grant, duration }),
  revoke: (grant: string) => invoke<Grant>("revoke", { grant }),
  history: (limit: number) => invoke<AuditRecord[]>("history", { limit }),
  shellSnippet: (grant: string) => invoke<string>("shell_snippet", { grant }),
  openTerminal: (grant: string) => invoke<null>("open_terminal", { grant }),
  hideWindow: () => invoke<null>("hide_window"),
  reconnect: () => invoke<null>("reconnect"),
  login: () => invoke<Account>("login"),
  cancelLogin: () => invoke<null>("cancel_login"),
  logout: () => invoke<Account>("logout"),
  account: () => invoke<Account>("account"),
  integration: () => invoke<IntegrationStatus>("integration"),
  installHook: (shell: HookShell) => invoke<ShellIntegration>("install_hook", { shell }),
};

/** The login page the browser was sent to (shown in case it did not open). */
export type LoginPrompt = { url: string; opened: boolean };

export function onLoginPrompt(handler: (prompt: LoginPrompt) => void): Promise<UnlistenFn> {
  return listen<LoginPrompt>("login-prompt", (event) => handler(event.payload));
}

export function onView(handler: (view: AppView) => void): Promise<UnlistenFn> {
  return listen<AppView>("view", (event) => handler(event.payload));
}

export function onNavigate(handler: (tab: Tab) => void): Promise<UnlistenFn> {
  return listen<Tab>("navigate", (event) => handler(event.payload));
}
