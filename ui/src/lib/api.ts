// The only way the front end reaches Rust: `call` and `on`, generated from
// crates/app/src/ipc.rs (ui/src/bindings/ipc.ts) and typed by the
// generated Call, Answers and Events: a command, argument or event that
// does not exist in Rust does not type-check here.
import type { ApiError } from "../bindings/ApiError";

export { call, on } from "../bindings/ipc";

/** Every failed command rejects with `{code, message}`. */
export function isApiError(value: unknown): value is ApiError {
  return typeof value === "object" && value !== null && "code" in value && "message" in value;
}

export function messageOf(error: unknown): string {
  if (isApiError(error)) return error.message;
  return String(error);
}
