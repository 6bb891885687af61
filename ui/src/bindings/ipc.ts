// Generated from crates/app/src/ipc.rs by crates/app/tests/bindings.rs. Do not edit.
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { Answers } from "./Answers";
import type { Call } from "./Call";
import type { Events } from "./Events";

/** A command the app answers. */
export type Command = Call["command"];

/** A command's arguments. */
export type Args<C extends Command> = Omit<Extract<Call, { command: C }>, "command">;

/** Runs `command` in the app. It rejects with an `ApiError` ({code, message}). */
export function call<C extends Command>(command: C, args: Args<C>): Promise<Answers[C]> {
  return invoke<Answers[C]>("call", { call: { command, ...args } });
}

/** Calls `handler` with every `event` the app sends. */
export function on<E extends keyof Events>(event: E, handler: (payload: Events[E]) => void): Promise<UnlistenFn> {
  return listen<Events[E]>(event, (message) => handler(message.payload));
}
