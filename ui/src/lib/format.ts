import { untrack } from "svelte";
import { clock } from "./clock.svelte";

// Times as people read them. Every instant the app sends for a countdown
// is on this machine's clock already (Rust converts the broker's), and
// which grants are live or urgent is decided there: this file only writes
// numbers as words.

/** `1:02:03`, `41:07`, `0:09`. */
export function countdown(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const mm = hours > 0 ? String(minutes).padStart(2, "0") : String(minutes);
  const ss = String(seconds).padStart(2, "0");
  return hours > 0 ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** `2 h 05 min`, `42 min`: whole minutes rounded up, so it never reads
 *  "0 min" while time remains; the tray rounds the same way
 *  (`TimeLeft::minutes_rounded_up` in hourglass-core). */
export function minutesLeft(ms: number): string {
  const minutes = Math.max(0, Math.ceil(ms / 60000));
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return hours > 0 ? `${hours} h ${String(rest).padStart(2, "0")} min` : `${rest} min`;
}

/** Local wall-clock time of an RFC 3339 instant: `14:32`, with the day when not today. */
export function clockTime(iso: string): string {
  const at = new Date(iso);
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  // Read, not followed: the text changes with the instant, not every tick.
  const today = new Date(untrack(() => clock.now)).toDateString() === at.toDateString();
  return today ? time : `${at.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

/** `30m` → `30 min`, `1h30m` → `1 h 30 min`. */
export function spokenDuration(text: string): string {
  return text
    .replace(/(\d+)d/, "$1 d ")
    .replace(/(\d+)h/, "$1 h ")
    .replace(/(\d+)m/, "$1 min ")
    .replace(/(\d+)s/, "$1 s ")
    .trim();
}
