/**
 * The real `serve` and `connect` commands as subprocesses (testkit/cli.ts), for
 * tests that must prove behaviour through processes and TCP rather than in-process
 * calls. `serve` runs with `--log-format json`; its log lines are parsed as they
 * arrive so a test can wait for the code the server logged.
 */
import assert from "node:assert/strict";
import { type CliResult, runCli, spawnCli } from "./cli.ts";

/** One `serve --log-format json` line. */
export interface LogEvent {
  time: string;
  event: string;
  peer?: string;
  user?: string;
  session?: string;
  detail?: string;
  [key: string]: unknown;
}

export type LogPredicate = (event: LogEvent) => boolean;

/** Matches an event word (or code) and, optionally, some fields exactly. */
export function logIs(event: string, fields: Record<string, unknown> = {}): LogPredicate {
  return (e) => e.event === event && Object.entries(fields).every(([k, v]) => e[k] === v);
}

/** Reads a byte stream line by line, calling `onLine` for each complete line. */
async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  try {
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    }
  } catch {
    // the process went away; keep what we have
  }
  pending += decoder.decode();
  if (pending !== "") onLine(pending);
}

/** Resolves when `test()` holds, polling; rejects with `describe()` after `timeoutMs`. */
export async function pollUntil<T>(
  test: () => T | undefined,
  timeoutMs: number,
  describe: () => string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = test();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `child`'s exit status within `timeoutMs`; null if it had to be SIGKILLed instead. */
async function exitWithin(
  child: Deno.ChildProcess,
  timeoutMs: number,
): Promise<Deno.CommandStatus | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    child.status,
    new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), timeoutMs)),
  ]);
  clearTimeout(timer);
  if (status === null) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
  }
  return status;
}

export interface ServerStartOptions {
  /** Directory holding ca.pem and the server certificate (a makePki dir). */
  pkiDir: string;
  /** Certificate / key file names in pkiDir (default server.pem / server.key). */
  cert?: string;
  key?: string;
  /** CA file (default `${pkiDir}/ca.pem`). */
  ca?: string;
  /** Extra `serve` flags, e.g. ["--handshake-timeout", "1000"]. */
  args?: string[];
  /** Pass `--console` so lines written with `say()` reach the lobby as the operator. */
  console?: boolean;
  /** Where the database and transcripts go; by default a fresh temp dir removed by dispose(). */
  workDir?: string;
  /** Called as soon as the process exists, before its LISTEN (to signal a server starting). */
  spawned?: (child: Deno.ChildProcess) => void;
  /** The `deno run` flags, by default the start task's (testkit/cli.ts). */
  flags?: readonly string[];
}

/** A running `securechat serve`. */
export class ServerProcess {
  readonly logs: LogEvent[] = [];
  /** stdout lines that were not JSON, and every stderr line. */
  readonly otherOutput: string[] = [];
  port = 0;
  #exit?: Promise<Deno.CommandStatus>;
  #pumps: Promise<void>[] = [];
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #ownsDir: boolean;

  private constructor(
    readonly child: Deno.ChildProcess,
    readonly workDir: string,
    ownsDir: boolean,
  ) {
    this.#ownsDir = ownsDir;
    this.#stdin = child.stdin.getWriter();
    this.#pumps.push(
      pumpLines(child.stdout, (line) => {
        try {
          const parsed = JSON.parse(line);
          if (parsed && typeof parsed.event === "string") return void this.logs.push(parsed);
        } catch {
          // not a log line
        }
        this.otherOutput.push(line);
      }),
      pumpLines(child.stderr, (line) => void this.otherOutput.push(line)),
    );
    this.#exit = child.status;
  }

  get db(): string {
    return `sqlite:${this.workDir}/t.db`;
  }

  get transcripts(): string {
    return `${this.workDir}/transcripts`;
  }

  /** Starts `serve --port 0` and waits for its LISTEN line. */
  static async start(opts: ServerStartOptions): Promise<ServerProcess> {
    const ownsDir = opts.workDir === undefined;
    const workDir = opts.workDir ?? await Deno.makeTempDir({ prefix: "securechat-serve-" });
    const args = [
      "serve",
      "--port",
      "0",
      "--log-format",
      "json",
      "--ca",
      opts.ca ?? `${opts.pkiDir}/ca.pem`,
      "--cert",
      `${opts.pkiDir}/${opts.cert ?? "server.pem"}`,
      "--key",
      `${opts.pkiDir}/${opts.key ?? "server.key"}`,
      "--db",
      `sqlite:${workDir}/t.db`,
      "--transcripts",
      `${workDir}/transcripts`,
      ...(opts.console ? ["--console"] : []),
      ...(opts.args ?? []),
    ];
    const server = new ServerProcess(
      spawnCli(args, { cwd: workDir, flags: opts.flags }),
      workDir,
      ownsDir,
    );
    opts.spawned?.(server.child);
    const exited = server.#exit!.then((status) => status);
    const listen = server.waitFor(logIs("LISTEN"), 20_000);
    const first = await Promise.race([listen, exited]);
    if (!("event" in first)) {
      await server.dispose();
      throw new Error(`serve exited with ${first.code}:\n${server.otherOutput.join("\n")}`);
    }
    server.port = Number(String(first.detail).split(":").pop());
    assert.ok(server.port > 0, `no port in LISTEN line ${JSON.stringify(first)}`);
    return server;
  }

  /** Index of the next log line: pass it to `waitFor`/`events` to look only at what follows. */
  mark(): number {
    return this.logs.length;
  }

  /** Events matching `predicate` logged at or after index `from`. */
  events(predicate: LogPredicate, from = 0): LogEvent[] {
    return this.logs.slice(from).filter(predicate);
  }

  /** The first event at or after `from` matching `predicate`, waiting up to `timeoutMs`. */
  waitFor(predicate: LogPredicate, timeoutMs = 10_000, from = 0): Promise<LogEvent> {
    return pollUntil(
      () => this.logs.slice(from).find(predicate),
      timeoutMs,
      () =>
        `no matching server log line; seen since #${from}:\n${
          this.logs.slice(from).map((e) => JSON.stringify(e)).join("\n")
        }\nother output:\n${this.otherOutput.join("\n")}`,
    );
  }

  /** One operator console line (needs `console: true`). */
  async say(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(line + "\n"));
  }

  /** SIGTERM, then waits for the exit; returns the exit status. Idempotent. */
  async stop(timeoutMs = 20_000): Promise<Deno.CommandStatus> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // already exited
    }
    const status = await exitWithin(this.child, timeoutMs);
    const final = await this.#exit!;
    try {
      await this.#stdin.close();
    } catch {
      // the pipe is already closed
    }
    await Promise.all(this.#pumps);
    return status ?? final;
  }

  /** Stops the server and removes its work dir if this helper created it. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.#ownsDir) await Deno.remove(this.workDir, { recursive: true }).catch(() => {});
  }
}

export interface ConnectOptions {
  port: number;
  user: string;
  password?: string;
  /** Directory with ca.pem and `<user>.pem`/`<user>.key` unless cert/key/ca are given. */
  pkiDir: string;
  cert?: string;
  key?: string;
  ca?: string;
  /** Where the client writes its transcript and receipts. */
  transcripts: string;
  /** Register with this email first. */
  registerEmail?: string;
  args?: string[];
  env?: Record<string, string>;
  /** The `deno run` flags, by default the start task's (testkit/cli.ts). */
  flags?: readonly string[];
}

/** `name`'s options for `connect` to `server` with `password`, transcripts in its work dir. */
export function userOn(
  server: ServerProcess,
  pkiDir: string,
  name: string,
  password: string,
): ConnectOptions {
  return {
    port: server.port,
    user: name,
    password,
    pkiDir,
    transcripts: `${server.workDir}/${name}`,
  };
}

export function connectArgs(o: ConnectOptions): string[] {
  return [
    "connect",
    "--user",
    o.user,
    "--port",
    String(o.port),
    "--ca",
    o.ca ?? `${o.pkiDir}/ca.pem`,
    "--cert",
    o.cert ?? `${o.pkiDir}/${o.user}.pem`,
    "--key",
    o.key ?? `${o.pkiDir}/${o.user}.key`,
    "--transcripts",
    o.transcripts,
    ...(o.registerEmail ? ["--register", "--email", o.registerEmail] : []),
    ...(o.args ?? []),
  ];
}

function connectEnv(o: ConnectOptions): Record<string, string> {
  return { SECURECHAT_PASSWORD: o.password ?? "", ...o.env };
}

/** Runs `connect` with the given stdin lines (then end of input) and waits for it to exit. */
export function runConnect(o: ConnectOptions, lines: string[] = []): Promise<CliResult> {
  return runCli(connectArgs(o), {
    env: connectEnv(o),
    flags: o.flags,
    stdin: lines.map((l) => l + "\n").join(""),
  });
}

/** The `securechat: error: CODE:` a failed command printed, if any. */
export function errorCodeOf(result: CliResult): string | undefined {
  return /securechat: error: ([A-Z_]+):/.exec(result.stderr)?.[1];
}

/** A `connect` that stays up: write lines while it runs, watch its stdout, end its input. */
/** What `connect` says on stderr when the server stored a line for a recipient offline. */
export const STORED_NOTICE = "stored: the recipient is not online";

export class LiveClient {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #pumps: Promise<void>[];

  private constructor(readonly child: Deno.ChildProcess) {
    this.#stdin = child.stdin.getWriter();
    this.#pumps = [
      pumpLines(child.stdout, (line) => void this.stdout.push(line)),
      pumpLines(child.stderr, (line) => void this.stderr.push(line)),
    ];
  }

  static start(o: ConnectOptions): LiveClient {
    return new LiveClient(spawnCli(connectArgs(o), { env: connectEnv(o) }));
  }

  /**
   * Starts the client and waits until the lobby's welcome notice is on its stdout and its
   * end-to-end device is published (so a contact's next fetch finds it, PROTOCOL §12.6).
   */
  static async login(o: ConnectOptions, timeoutMs = 15_000): Promise<LiveClient> {
    const client = LiveClient.start(o);
    try {
      await client.waitForLine((l) => l.includes(`* welcome ${o.user}`), timeoutMs);
      await client.waitForInfo((l) => l.includes("end-to-end keys published"), timeoutMs);
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
    return client;
  }

  async send(line: string): Promise<void> {
    try {
      await this.#stdin.write(new TextEncoder().encode(line + "\n"));
    } catch (error) {
      // The client exited: what it printed says why, which a bare BrokenPipe does not.
      throw new Error(
        `client gone (${error}); stdout:\n${this.stdout.join("\n")}\nstderr:\n${
          this.stderr.join("\n")
        }`,
      );
    }
  }

  waitForLine(test: (line: string) => boolean, timeoutMs = 10_000, from = 0): Promise<string> {
    return pollUntil(
      () => this.stdout.slice(from).find(test),
      timeoutMs,
      () =>
        `no matching client line; stdout:\n${this.stdout.join("\n")}\nstderr:\n${
          this.stderr.join("\n")
        }`,
    );
  }

  /** Waits for a line on stderr, where `connect` says what is not chat (refusals, warnings). */
  waitForInfo(test: (line: string) => boolean, timeoutMs = 10_000, from = 0): Promise<string> {
    return pollUntil(
      () => this.stderr.slice(from).find(test),
      timeoutMs,
      () => `no matching stderr line:\n${this.stderr.join("\n")}`,
    );
  }

  /** Waits until `connect` has said `count` of its lines were stored for a recipient offline. */
  async waitForStored(count: number, timeoutMs = 60_000): Promise<void> {
    await pollUntil(
      () => this.stderr.filter((l) => l.includes(STORED_NOTICE)).length >= count || undefined,
      timeoutMs,
      () => `not ${count} stored:\n${this.stderr.slice(-5).join("\n")}`,
    );
  }

  /** Lines (after `from`) matching `test`. */
  lines(test: (line: string) => boolean, from = 0): string[] {
    return this.stdout.slice(from).filter(test);
  }

  /** Ends its input (a clean close with receipts) and waits for the exit. */
  async end(timeoutMs = 20_000): Promise<CliResult> {
    try {
      await this.#stdin.close();
    } catch {
      // already closed
    }
    const status = await exitWithin(this.child, timeoutMs);
    const final = await this.child.status;
    await Promise.all(this.#pumps);
    return {
      code: status === null ? -1 : final.code,
      stdout: this.stdout.join("\n"),
      stderr: this.stderr.join("\n"),
    };
  }
}

/**
 * How a test logs users in on a server's (or a cluster node's) port: with `password(user)`,
 * transcripts (and so the end-to-end state) in `<workDir>/<user>-transcripts`, and every client
 * kept in `clients` so the test's `finally` ends it.
 */
export function liveLogins(
  opts: { pkiDir: string; workDir: string; password: (user: string) => string },
  clients: LiveClient[],
): (user: string, port: number) => Promise<LiveClient> {
  return async (user, port) => {
    const client = await LiveClient.login({
      port,
      user,
      password: opts.password(user),
      pkiDir: opts.pkiDir,
      transcripts: `${opts.workDir}/${user}-transcripts`,
    });
    clients.push(client);
    return client;
  };
}

/** Registers `user` (its cert in pkiDir) through the real CLI, then closes; asserts success. */
export async function registerUser(
  server: ServerProcess,
  pkiDir: string,
  user: string,
  password: string,
  /**
   * The client's transcripts directory, where its end-to-end state lives: give the one later
   * logins use when the registering device must be the same device (PROTOCOL §12.6).
   */
  transcripts = server.transcripts + "-clients",
): Promise<void> {
  const mark = server.mark();
  const result = await runConnect({
    port: server.port,
    user,
    password,
    pkiDir,
    transcripts,
    registerEmail: `${user}@example.com`,
  });
  assert.equal(result.code, 0, `register ${user} failed:\n${result.stderr}`);
  // The client may exit before the server has ended the session: until the server logs
  // its CLOSE, the connection still holds a slot the caller may be about to count on.
  await server.waitFor((e) => e.event === "CLOSE" && e.user === user, 10_000, mark);
}

/**
 * An honest user's session kept open across a hostile test: logged in before, asked
 * `/who` after (the answer proves the session still works), then closed cleanly.
 * Asserts exit 0, receipts on both sides, and the server's CLOSE outcome=closed.
 */
export class Bystander {
  private constructor(
    readonly client: LiveClient,
    readonly server: ServerProcess,
    readonly user: string,
  ) {}

  static async join(
    server: ServerProcess,
    o: Omit<ConnectOptions, "port">,
  ): Promise<Bystander> {
    return new Bystander(
      await LiveClient.login({ ...o, port: server.port }),
      server,
      o.user,
    );
  }

  /** Proves the session is alive: `/who` is answered. */
  async ping(): Promise<void> {
    const from = this.client.stdout.length;
    await this.client.send("/who");
    await this.client.waitForLine((l) => l.includes("* online:"), 10_000, from);
  }

  async finish(): Promise<void> {
    await this.ping();
    const from = this.server.mark();
    const result = await this.client.end();
    assert.equal(result.code, 0, `bystander ${this.user} did not close cleanly:\n${result.stderr}`);
    assert.match(result.stderr, /receipt: .*\.receipt\.json/);
    assert.match(result.stderr, /server's receipt: .*\.peer-receipt\.json/);
    const close = await this.server.waitFor(
      (e) => e.event === "CLOSE" && e.user === this.user && e.outcome === "closed",
      10_000,
      from,
    );
    assert.notEqual(close.receipt, "none");
  }
}
