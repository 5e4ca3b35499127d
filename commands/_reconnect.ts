/**
 * `connect` across drops (docs/DEPLOY.md §6): the servers to try, jittered exponential backoff,
 * the input lines carried from one session to the next (which endings are worth a new login is
 * lib/session/reconnect.ts, shared with the browser page),
 * and dropping relayed messages a replay after a failover shows twice.
 */
import { SecureChatError } from "../lib/errors.ts";

export interface ServerAddress {
  host: string;
  port: number;
}

/**
 * `--server host:port` values (`[v6addr]:port`; a bare host takes `defaultPort`), or the single
 * `--host/--port` pair when there are none.
 * @throws USAGE a malformed value
 */
export function parseServers(
  values: readonly string[] | undefined,
  host: string,
  defaultPort: number,
): ServerAddress[] {
  if (!values?.length) return [{ host, port: defaultPort }];
  return values.map((value) => {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s\[\]]+))(?::(\d{1,5}))?$/.exec(value);
    const port = match?.[3] === undefined ? defaultPort : Number(match[3]);
    if (!match || port < 1 || port > 65535) {
      throw new SecureChatError("USAGE", `--server takes host:port, not "${value}"`, {
        hint: "e.g. --server chat.example.com:65432 --server 10.0.0.12:65432",
      });
    }
    return { host: match[1] ?? match[2], port };
  });
}

export const describeServer = (s: ServerAddress) =>
  s.host.includes(":") ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;

/**
 * Exponential backoff with jitter: attempt n waits a random time in [d/2, d], d = base·2^n
 * capped at max, so users cut off together do not all come back in the same instant.
 */
export class Backoff {
  #attempt = 0;
  constructor(
    readonly baseMs = 250,
    readonly maxMs = 10_000,
    readonly random: () => number = Math.random,
  ) {}

  get failures(): number {
    return this.#attempt;
  }

  next(): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** this.#attempt++);
    return Math.round(ceiling / 2 + this.random() * (ceiling / 2));
  }

  reset(): void {
    this.#attempt = 0;
  }
}

/**
 * The servers in the order to try them: from a random one onward, so clients given the same
 * list spread over it, then round the list on each failure.
 */
export class ServerRotation {
  #index: number;
  constructor(readonly servers: readonly ServerAddress[], random: () => number = Math.random) {
    this.#index = Math.floor(random() * servers.length);
  }
  current(): ServerAddress {
    return this.servers[this.#index];
  }
  advance(): void {
    this.#index = (this.#index + 1) % this.servers.length;
  }
}

export const STOPPED: unique symbol = Symbol("stopped");

/**
 * Input lines that outlive a session: a read still waiting when the session ends is kept and
 * its line goes to the next session, never lost.
 */
export class LineSource {
  readonly #lines: AsyncIterator<string>;
  #pending?: Promise<IteratorResult<string>>;
  /** Lines taken and given back unsent (see unread), oldest first: read before new ones. */
  readonly #unsent: string[] = [];
  constructor(lines: AsyncIterable<string>) {
    this.#lines = lines[Symbol.asyncIterator]();
  }

  /** The next line; null at the end of input; STOPPED if `until` settles first. */
  async next(until: Promise<unknown>): Promise<string | null | typeof STOPPED> {
    if (this.#unsent.length > 0) return this.#unsent.shift()!;
    this.#pending ??= this.#lines.next();
    const stopped = until.then((): typeof STOPPED => STOPPED, (): typeof STOPPED => STOPPED);
    const result = await Promise.race([this.#pending, stopped]);
    if (result === STOPPED) return STOPPED;
    this.#pending = undefined;
    return result.done ? null : result.value;
  }

  /**
   * Gives back a line taken from next() that its session ended before sending (a node killed
   * under the user's typing): the next read returns it, so a reconnection sends it.
   */
  unread(line: string): void {
    this.#unsent.push(line);
  }

  /** The lines given back and never read again: what the user must be told was not sent. */
  get unsent(): readonly string[] {
    return this.#unsent;
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
