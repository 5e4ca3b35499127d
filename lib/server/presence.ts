/**
 * What the lobby says about who is online, bounded so that it stays cheap and valid however
 * many are (issue 15, N = 1,000 reconnecting at once): join and leave notices coalesced per
 * window, a welcome that names at most WELCOME_NAMES, and a `/who` answered in pages that each
 * fit one notice (PROTOCOL §6.2: a notice's text is at most MAX_TEXT_CHARS).
 *
 * Why: with every join told to every member at once, N users logging in cost N² sealed
 * notices (and transcript lines); a welcome or `/who` listing everyone exceeds the notice limit
 * from about 360 users, which a client refuses as malformed.
 */
import { MAX_TEXT_CHARS } from "../message/record.ts";

/** A notice of joins or leaves within this window goes out as one (the first one at once). */
export const PRESENCE_NOTICE_WINDOW_MS = 1000;
/** Names a join or leave notice lists; the rest are counted. */
export const NOTICE_NAMES = 20;
/** Names the welcome lists; the rest are counted, and `/who` lists them. */
export const WELCOME_NAMES = 50;
/** Pages one `/who` answers with at most (a user name is at most 32 characters). */
export const MAX_WHO_PAGES = 8;

export type PresenceChange = "joined" | "left";

/**
 * Joins and leaves, coalesced: the first change after a quiet window is sent at once; later
 * ones wait for the window's end and go out as one notice per run of the same kind, in order
 * (so "alice left" after "alice joined" still reads right).
 */
export class PresenceNotices {
  /** `at`: when the run's last change happened (a member who came later is not told of it). */
  #runs: { change: PresenceChange; names: string[]; at: number }[] = [];
  #lastFlush = -Infinity;
  #timer?: ReturnType<typeof setTimeout>;

  /**
   * @param windowMs 0 sends every change at once
   * @param send one notice's text, the one user it names (if it names only one), and when
   *   its last change happened: it is for the members who were there by then
   */
  constructor(
    readonly windowMs: number,
    readonly send: (text: string, sole: string | undefined, at: number) => void,
  ) {}

  add(change: PresenceChange, name: string): void {
    const at = Date.now();
    const last = this.#runs.at(-1);
    if (last?.change === change) {
      if (!last.names.includes(name)) last.names.push(name);
      last.at = at;
    } else {
      this.#runs.push({ change, names: [name], at });
    }
    if (this.#timer !== undefined) return;
    const wait = this.#lastFlush + this.windowMs - Date.now();
    if (wait <= 0) this.flush();
    else this.#timer = setTimeout(() => this.flush(), wait);
  }

  /** Sends what is pending now (before a member's message, so notices keep their order). */
  flush(): void {
    // Before every message of every member: nothing to do unless a change is pending.
    if (this.#runs.length === 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const runs = this.#runs;
    this.#runs = [];
    this.#lastFlush = Date.now();
    for (const { change, names, at } of runs) {
      this.send(
        `${listed(names, NOTICE_NAMES)} ${change}`,
        names.length === 1 ? names[0] : undefined,
        at,
      );
    }
  }

  /** Drops what is pending and the timer (the lobby is closing). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#runs = [];
  }
}

/** "a", "a and b", "a, b and c", "a, b, … and 7 others". */
function listed(names: readonly string[], max: number): string {
  if (names.length > max) {
    return `${names.slice(0, max).join(", ")} and ${names.length - max} others`;
  }
  if (names.length === 1) return names[0];
  return `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

/** The newcomer's welcome: everyone online when few are, else the first WELCOME_NAMES. */
export function welcomeText(user: string, online: readonly string[]): string {
  if (online.length <= WELCOME_NAMES) return `welcome ${user}; online: ${online.join(", ")}`;
  const more = online.length - WELCOME_NAMES;
  return `welcome ${user}; ${online.length} online: ${
    online.slice(0, WELCOME_NAMES).join(", ")
  } and ${more} more (/who lists everyone)`;
}

/**
 * The answer to `/who`: "online: a, b" when it fits one notice, else pages
 * "online (1/3): …", at most MAX_WHO_PAGES, the last saying how many it could not list.
 * `label` names another list the same way ("reconnecting": lib/server/lobby.ts).
 */
export function whoPages(online: readonly string[], label = "online"): string[] {
  // Room for the longest page head and tail: "online (8/8): " and " and 1234567 more not listed".
  const room = MAX_TEXT_CHARS - 64;
  const pages: string[][] = [[]];
  let used = 0;
  for (const name of online) {
    if (used + name.length + 2 > room && pages.at(-1)!.length > 0) {
      pages.push([]);
      used = 0;
    }
    pages.at(-1)!.push(name);
    used += name.length + 2;
  }
  if (pages.length === 1) return [`${label}: ${online.join(", ")}`];
  const shown = pages.slice(0, MAX_WHO_PAGES);
  const unlisted = online.length - shown.reduce((n, page) => n + page.length, 0);
  return shown.map((page, i) => {
    const tail = i === shown.length - 1 && unlisted > 0 ? ` and ${unlisted} more not listed` : "";
    return `${label} (${i + 1}/${shown.length}): ${page.join(", ")}${tail}`;
  });
}
