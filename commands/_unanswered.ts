/**
 * The user's lines the server has not answered, for what `connect` says when a cluster node ends
 * the session because it could not learn whether a record was stored (CLUSTER_UNAVAILABLE,
 * PROTOCOL §6.5). The record the node gave up on, and the unanswered ones sent after it, may or
 * may not have reached their recipients. A client sees when it sent a record, not when the node
 * published it: on a cluster healthy until the outage, the open ones are the unanswered lines
 * sent in the last OUTCOME_WAIT plus a round trip, so those are listed as the likely ones, never
 * as a proof (on a cluster slow before it, older ones may be open too).
 */
import { recipientUser } from "../lib/message/record.ts";

/** OUTCOME_WAIT (30 s, DEPLOY.md §4.1) plus a round trip of up to 5 s (PROTOCOL §6.5). */
export const OPEN_WINDOW_MS = 35_000;

/** One line the user sent in this session and the server has not answered. */
export interface UnansweredLine {
  seqno: number;
  /** When it left (ms). */
  at: number;
  to: string;
  text: string;
}

export class UnansweredLines {
  /** By seqno; insertion order is the order the lines left, so the oldest come first. */
  readonly #lines = new Map<number, UnansweredLine>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The user's line `seqno` to `to` has left. */
  sent(seqno: number, to: string, text: string): void {
    this.#forgetOld();
    this.#lines.set(seqno, { seqno, at: this.#now(), to, text });
  }

  /** The server answered line `of` (`refused`, `queued`, or a private one to ourselves back). */
  answered(of: number): void {
    this.#lines.delete(of);
  }

  /** The unanswered lines sent in the last OPEN_WINDOW_MS, in seqno order. */
  open(): UnansweredLine[] {
    this.#forgetOld();
    return [...this.#lines.values()].sort((a, b) => a.seqno - b.seqno);
  }

  #forgetOld(): void {
    const oldest = this.#now() - OPEN_WINDOW_MS;
    for (const [seqno, line] of this.#lines) {
      if (line.at >= oldest) break;
      this.#lines.delete(seqno);
    }
  }
}

/** Lines listed one by one, at most; the rest are counted. */
const LISTED = 20;
/** A listed line's text is cut here (the user wrote it: only a reminder of which one). */
const TEXT_START = 40;

/**
 * What to tell the user when the session ended CLUSTER_UNAVAILABLE (PROTOCOL §6.5): why, and
 * the lines that may or may not have arrived. Not the server's text: the line that follows
 * these (the error connect ends with, or its "reconnecting") carries it.
 */
export function clusterUncertainty(open: UnansweredLine[]): string[] {
  const out = ["the session ended because the chat cluster could not confirm delivery"];
  if (open.length === 0) {
    out.push(
      `none of your lines of its last ${OPEN_WINDOW_MS / 1000} s went unanswered; ` +
        "on a cluster that was slow before, an older one may still be open",
    );
    return out;
  }
  out.push(
    `your unanswered lines of its last ${OPEN_WINDOW_MS / 1000} s may or may not have ` +
      "reached their recipients (likely, not proven; do not assume either way):",
  );
  for (const line of open.slice(0, LISTED)) {
    const user = recipientUser(line.to);
    const where = user === null ? "to the lobby" : `to ${user}`;
    const text = line.text.length > TEXT_START ? `${line.text.slice(0, TEXT_START)}…` : line.text;
    out.push(`  message ${line.seqno} ${where}: ${text}`);
  }
  if (open.length > LISTED) {
    const rest = open.slice(LISTED);
    out.push(
      `  and ${rest.length} more (messages ${rest[0].seqno}–${rest[rest.length - 1].seqno})`,
    );
  }
  return out;
}
