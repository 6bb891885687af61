// Times as people read them. Deadlines are the broker's: a countdown is
// deadline − (local clock + offset to the broker's clock).

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

/** `2 h 05 min`, `42 min`: time left in whole minutes, rounded up, so it
 *  never reads "0 min" while time remains. */
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
  const today = new Date().toDateString() === at.toDateString();
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

/** Durations (as the broker writes them) between `min` and `max`, for a picker. */
export function durationChoices(min: string, max: string, preferred: string): string[] {
  const seconds = (text: string): number => {
    let total = 0;
    for (const [, value, unit] of text.matchAll(/(\d+)([smhd])/g)) {
      total += Number(value) * ({ s: 1, m: 60, h: 3600, d: 86400 }[unit as "s" | "m" | "h" | "d"]);
    }
    return total;
  };
  const candidates = ["5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d"];
  const low = seconds(min);
  const high = seconds(max);
  const picked = candidates.filter((c) => seconds(c) >= low && seconds(c) <= high);
  for (const extra of [preferred, max]) {
    if (!picked.includes(extra)) picked.push(extra);
  }
  return picked.sort((a, b) => seconds(a) - seconds(b));
}
