/**
 * Shared pieces of the benchmark suite (issue 7): figures with their same-run
 * reference, percentiles, a loopback pair, child processes.
 */
import { type ByteStreamConn, FrameConnection } from "../lib/wire/connection.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import type { EstablishedSession, Identity } from "../lib/handshake/common.ts";
import type { TrustStore } from "../lib/pki/validate.ts";
import { readStartTask } from "../testkit/start_task.ts";
import process from "node:process";

export interface Options {
  quick: boolean;
}

/** The figure a measurement is compared with, measured in the same run. */
export interface Reference {
  name: string;
  value: number;
  unit: string;
}

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** null only when the reference tool is missing (reason in `note`). */
  reference: Reference | null;
  /** value / reference.value */
  ratio: number | null;
  /** The target the issue sets for this ratio, if any. */
  goal?: string;
  note?: string;
}

export interface Section {
  title: string;
  /** Why the section did not run (a tool it compares with is missing); figures are then empty. */
  skipped?: string;
  /** When this section was measured (ISO 8601); with --merge, sections of a file differ. */
  measured_at?: string;
  figures: Figure[];
  /** Raw measurements behind the figures (breakdowns, per-op timings, settings). */
  details: Record<string, unknown>;
}

export function figure(
  name: string,
  value: number,
  unit: string,
  reference: Reference | null,
  extra: { goal?: string; note?: string } = {},
): Figure {
  const ratio = reference && reference.value > 0 ? significant(value / reference.value) : null;
  return { name, value: round(value, 3), unit, reference, ratio, ...extra };
}

export function ref(name: string, value: number, unit: string): Reference {
  return { name, value: round(value, 3), unit };
}

/**
 * Three decimals, or three significant digits below 1: a ratio of 0.0007 (our relay
 * rate beside InspIRCd's) must not print as 0.
 */
function significant(x: number): number {
  return Math.abs(x) >= 1 || x === 0 ? round(x, 3) : Number(x.toPrecision(3));
}

/**
 * This process's CPU µs per call of `op` over `n` calls, after a warm-up: every thread's (what V8
 * does for the calls on its helpers, sweeping their arrays, counts too).
 */
export function cpuPerCall(op: () => unknown, n: number): number {
  for (let i = 0; i < 500; i++) op();
  const before = process.cpuUsage();
  for (let i = 0; i < n; i++) op();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / n;
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function summary(samples: number[]) {
  return {
    n: samples.length,
    p50: round(percentile(samples, 50)),
    p99: round(percentile(samples, 99)),
    max: round(Math.max(...samples)),
    mean: round(samples.reduce((a, b) => a + b, 0) / samples.length),
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Times `op` alone: sequential calls for about `ms` milliseconds; returns ms per call. */
export async function timeOp(op: () => unknown, ms: number, min = 5): Promise<number> {
  await op(); // warm-up
  let n = 0;
  const start = performance.now();
  while (n < min || performance.now() - start < ms) {
    await op();
    n++;
  }
  return (performance.now() - start) / n;
}

/** Runs `op` with `concurrency` loops for `ms` milliseconds; returns calls per second. */
export async function rateOf(
  op: () => Promise<unknown>,
  concurrency: number,
  ms: number,
): Promise<number> {
  await op();
  let n = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() - start < ms) {
      await op();
      n++;
    }
  }));
  return n / ((performance.now() - start) / 1000);
}

/**
 * A client's TCP connection as `securechat connect` makes it: TCP_NODELAY on
 * (commands/connect.ts); ChatServer sets it on every accepted socket too.
 */
export async function connectLikeClient(port: number): Promise<Deno.TcpConn> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true);
  return tcp;
}

/**
 * A client's handshake and login as `name` (the bench password) to the server on `port`, over
 * `tcp` if given, as `connect` dials it: the one client login every bench uses.
 */
export async function loginLikeClient(
  port: number,
  trust: TrustStore,
  identity: Identity,
  name: string,
  tcp?: ByteStreamConn,
): Promise<EstablishedSession> {
  const conn = new FrameConnection(tcp ?? await connectLikeClient(port));
  return await clientHandshake(conn, {
    identity,
    trust,
    serverName: "localhost",
    credentials: { mode: "login", username: name, password: BENCH_PASSWORD },
  });
}

/**
 * Two framed ends of one loopback TCP connection, both with TCP_NODELAY as the shipped
 * ends have it (ChatServer on accept, `connect` after dialling).
 */
export async function loopbackPair(): Promise<
  { server: FrameConnection; client: FrameConnection }
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [serverTcp, clientTcp] = await Promise.all([
    listener.accept(),
    connectLikeClient(listener.addr.port),
  ]);
  serverTcp.setNoDelay(true);
  listener.close();
  return { server: new FrameConnection(serverTcp), client: new FrameConnection(clientTcp) };
}

/**
 * OpenSSL's own signing rate for one key type on this machine (`openssl speed`, one
 * core): the sign/s column. Null when openssl is missing or prints something else.
 */
export async function opensslSignRate(
  alg: "rsa2048" | "ed25519",
  seconds: number,
): Promise<{ signPerSecond: number; verifyPerSecond: number; command: string } | null> {
  const args = ["speed", "-seconds", String(seconds), alg];
  const out = await commandOutput("openssl", args);
  if (!out) return null;
  // "rsa 2048 bits 0.000251s 0.000016s   3991.0  61325.0"
  // " 253 bits EdDSA (Ed25519)   0.0000s   0.0001s  26382.0   9791.0"
  const line = out.split("\n").find((l) =>
    alg === "rsa2048" ? /^rsa\s+2048 bits/.test(l) : /\(Ed25519\)/.test(l)
  );
  const m = line?.match(/([\d.]+)\s+([\d.]+)\s*$/);
  if (!m) return null;
  return {
    signPerSecond: Number(m[1]),
    verifyPerSecond: Number(m[2]),
    command: `openssl ${args.join(" ")}`,
  };
}

export const BENCH_PASSWORD = "bench password 123";

/** Reads a child's stdout line by line. */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let i: number;
    while ((i = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, i);
      pending = pending.slice(i + 1);
    }
  }
  if (pending) yield pending;
}

/**
 * A bench child process speaking JSON lines: `send(cmd)` writes one line to its stdin,
 * `next()` returns its next JSON stdout line.
 */
export class JsonChild {
  readonly #child: Deno.ChildProcess;
  readonly #out: AsyncGenerator<string>;
  readonly #in: WritableStreamDefaultWriter<Uint8Array>;

  /** `cwd`: where Deno looks for its configuration (another checkout's deno.json). */
  constructor(script: string, args: string[], denoFlags: string[] = [], cwd?: string) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-all", ...denoFlags, script, ...args],
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#out = lines(this.#child.stdout);
    this.#in = this.#child.stdin.getWriter();
  }

  get pid(): number {
    return this.#child.pid;
  }

  async next(): Promise<Record<string, unknown>> {
    while (true) {
      const { value, done } = await this.#out.next();
      if (done) throw new Error("bench child exited early");
      try {
        return JSON.parse(value);
      } catch {
        // Not ours (a stray log line, V8's --trace-gc): passed on, as the child's stderr is.
        console.error(value);
      }
    }
  }

  async request(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    await this.#in.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
    return await this.next();
  }

  async stop(): Promise<void> {
    try {
      await this.#in.close();
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // exited
      }
    }, 10_000);
    await this.#child.status;
    clearTimeout(timer);
    // drained so the stream resources are released; a stray line is passed on as in next()
    for await (const line of this.#out) console.error(line);
  }
}

/** The commands a child reads from its stdin, one JSON object a line. */
export async function* commands(): AsyncGenerator<Record<string, unknown>> {
  for await (const line of lines(Deno.stdin.readable)) {
    if (line.trim()) yield JSON.parse(line);
  }
}

export function reply(value: unknown): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}

/** The soft RLIMIT_NOFILE this process (and its children) run under. */
export async function openFileLimit(): Promise<number> {
  try {
    const out = await new Deno.Command("sh", { args: ["-c", "ulimit -n"], stdout: "piped" })
      .output();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    return Number.isFinite(n) && n > 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

export async function commandOutput(cmd: string, args: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/**
 * The V8 flags `securechat serve` is launched with (deno.json's start task,
 * testkit/start_task.ts; not its permissions: bench children run with --allow-all), so a server
 * child measures the memory settings that ship.
 */
export async function serveV8Flags(): Promise<string[]> {
  const flags = await readStartTask(new URL("../deno.json", import.meta.url).pathname);
  return flags.filter((f) => f.startsWith("--v8-flags="));
}

/**
 * The V8 flags this process runs with (its command line, /proc/self/cmdline) beside those
 * `securechat` ships with (serveV8Flags): a bench that measures lib/ in its own process says
 * whether it ran as the shipped command does.
 */
export async function v8FlagsOfThisProcess(): Promise<
  { this_process: string[]; shipped: string[] }
> {
  let args: string[] = [];
  try {
    args = (await Deno.readTextFile("/proc/self/cmdline")).split("\0");
  } catch {
    // not Linux: the flags are not known, and say so by an empty list
  }
  return {
    this_process: args.filter((a) => a.startsWith("--v8-flags=")),
    shipped: await serveV8Flags(),
  };
}

/**
 * A bench script's command line: `parse` runs node:util's strict `parseArgs` (its options
 * must include `help`); `--help` prints `usage` and exits, and an unknown or malformed option
 * is refused with the usage (exit 2) before anything is measured.
 */
export function benchOptions<T extends { help?: boolean }>(usage: string, parse: () => T): T {
  let values: T;
  try {
    values = parse();
  } catch (error) {
    console.error(`${error instanceof Error ? error.message : error}\n\n${usage}`);
    Deno.exit(2);
  }
  if (values.help) {
    console.log(usage);
    Deno.exit(0);
  }
  return values;
}
