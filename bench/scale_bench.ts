/**
 * Scale (issue 7): how many concurrent authenticated idle sessions one server process
 * holds, its memory per session (Deno.memoryUsage() rss / heap deltas after a full
 * GC), and the relay latency between two probe users while they are all connected.
 *
 * The server is bench/_scale_server.ts in a child process (see there what it runs and
 * why idle sessions are held outside the Lobby). This process is the load generator:
 * real client handshakes (RSA-2048 certificates, one per user, all sharing one key
 * pair so 10,000 users need no 10,000 key generations), 32 at a time; it keeps each
 * established connection open and idle.
 *
 *   deno run -A bench/scale_bench.ts [--quick] [--levels 1000,10000]
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { ChatSession, type SessionEnd } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { mintClientIdentities, rsaPki } from "./_pki.ts";
import {
  BENCH_PASSWORD,
  connectLikeClient,
  type Figure,
  figure,
  JsonChild,
  openFileLimit,
  type Options,
  percentile,
  ref,
  round,
  type Section,
  sleep,
  summary,
} from "./_util.ts";

const SERVER = new URL("./_scale_server.ts", import.meta.url).pathname;
const TEXT = "ping from probe1, 40 bytes of chat text.";

interface Mem {
  sessions: number;
  failures: number;
  lastError: string;
  memory: Deno.MemoryUsage;
}

export async function run(opts: Options & { levels?: number[] }): Promise<Section> {
  const requested = opts.levels ?? (opts.quick ? [100] : [1000, 10000]);
  const limit = await openFileLimit();
  // Server side: one socket and one open transcript per session, plus ~100 of its own.
  const cap = Math.floor((limit - 100) / 2);
  const levels = requested.map((n) => Math.min(n, cap));
  const total = Math.max(...levels);

  const pki = await rsaPki(["probe1", "probe2"]);
  const work = await Deno.makeTempDir({ prefix: "sc-bench-scale-" });
  const names = Array.from({ length: total }, (_, i) => `idle${String(i).padStart(5, "0")}`);
  const t0 = performance.now();
  const identities = await mintClientIdentities(pki.dir, names);
  const mintSeconds = (performance.now() - t0) / 1000;

  const child = new JsonChild(SERVER, [pki.dir, `${work}/transcripts`], [
    "--v8-flags=--expose-gc",
  ]);
  const idle: FrameConnection[] = [];
  const probes: { session: ChatSession; run: Promise<SessionEnd> }[] = [];
  const arrivals: number[] = [];
  let arrivalWaiter: (() => void) | undefined;
  try {
    const { port } = await child.next() as { port: number };
    const connect = async (name: string, identity: Identity) => {
      const conn = new FrameConnection(await connectLikeClient(port));
      try {
        const est = await clientHandshake(conn, {
          identity,
          trust: pki.trust,
          serverName: "localhost",
          credentials: { mode: "login", username: name, password: BENCH_PASSWORD },
          timeoutMs: 60_000,
        });
        return { conn, est };
      } catch (error) {
        conn.close();
        throw error;
      }
    };

    for (const name of ["probe1", "probe2"]) {
      const { est } = await connect(name, await pki.identity(name));
      const session = await ChatSession.start(est, {
        transcripts: transcriptDirectory(`${work}/${name}`),
        relayTrust: pki.trust,
      });
      const run = session.run({
        onMessage: (m) => {
          if (name === "probe2" && m.type === "relay") {
            arrivals.push(performance.now());
            arrivalWaiter?.();
          }
        },
      });
      probes.push({ session, run });
    }
    await sleep(300);
    const latency = async (k: number) => {
      const out: number[] = [];
      for (let i = 0; i < k; i++) {
        const got = new Promise<void>((resolve) => arrivalWaiter = resolve);
        const t = performance.now();
        await probes[0].session.send({ kind: "text", text: TEXT }, "user:probe2");
        await got;
        out.push(arrivals[arrivals.length - 1] - t);
      }
      return out;
    };
    const k = opts.quick ? 20 : 100;
    await latency(5); // warm-up
    const mem0 = await child.request({ cmd: "mem" }) as unknown as Mem;
    const lat0 = await latency(k);

    const atLevel: {
      level: number;
      held: number;
      connectSeconds: number;
      mem: Mem;
      latency: number[];
      clientFailures: number;
    }[] = [];
    let next = 0;
    let clientFailures = 0;
    for (const level of levels) {
      const t = performance.now();
      const start = next;
      await Promise.all(Array.from({ length: 32 }, async () => {
        while (next < level) {
          const i = next++;
          try {
            idle.push((await connect(names[i], identities[i])).conn);
          } catch {
            clientFailures++;
          }
        }
      }));
      const connectSeconds = (performance.now() - t) / 1000;
      await sleep(500);
      const mem = await child.request({ cmd: "mem" }) as unknown as Mem;
      atLevel.push({
        level,
        held: mem.sessions - 2,
        connectSeconds: round(connectSeconds),
        mem,
        latency: await latency(k),
        clientFailures,
      });
      if (level - start > 0 && opts.quick === false) await sleep(200);
    }

    const figures: Figure[] = [];
    const p50at0 = percentile(lat0, 50);
    for (const a of atLevel) {
      const n = Math.max(a.held, 1);
      const rss = (a.mem.memory.rss - mem0.memory.rss) / n;
      const heap = (a.mem.memory.heapUsed - mem0.memory.heapUsed) / n;
      const ext = (a.mem.memory.external - mem0.memory.external) / n;
      const note = a.level < requested[atLevel.indexOf(a)]
        ? `requested ${
          requested[atLevel.indexOf(a)]
        }; capped by RLIMIT_NOFILE ${limit} (2 fds/session)`
        : undefined;
      figures.push(
        figure(
          `idle sessions held (target ${a.level})`,
          Math.max(a.held, 0.001),
          "sessions",
          ref("sessions requested", a.level, "sessions"),
          note ? { note } : {},
        ),
        figure(
          `RSS per session at ${a.level}`,
          Math.max(rss, 1),
          "bytes",
          ref("server RSS with 0 idle sessions", mem0.memory.rss, "bytes"),
        ),
        figure(
          `JS heap per session at ${a.level}`,
          Math.max(heap, 1),
          "bytes",
          ref("server heapUsed with 0 idle sessions", mem0.memory.heapUsed, "bytes"),
          { note: `external (ArrayBuffers etc.) per session: ${round(ext, 0)} bytes` },
        ),
        figure(
          `relay latency p50 with ${a.level} idle sessions`,
          percentile(a.latency, 50),
          "ms",
          ref("relay latency p50 with 0 idle sessions", p50at0, "ms"),
        ),
        figure(
          `relay latency p99 with ${a.level} idle sessions`,
          percentile(a.latency, 99),
          "ms",
          ref("relay latency p99 with 0 idle sessions", percentile(lat0, 99), "ms"),
        ),
      );
    }
    return {
      title: "Scale (idle authenticated sessions)",
      figures,
      details: {
        note:
          "in-memory authenticate() (no PBKDF2) for the scale bench only; idle sessions are real " +
          "protocol sessions (full handshake, ChatSession with open transcript) held outside the " +
          "Lobby; latency = probe1 -> server Lobby relay -> probe2 (private message)",
        open_file_limit: limit,
        levels_requested: requested,
        levels_run: levels,
        certificate_minting_seconds: round(mintSeconds),
        baseline: { memory: mem0.memory, latency_ms: summary(lat0) },
        levels: atLevel.map((a) => ({
          level: a.level,
          held: a.held,
          server_failures: a.mem.failures,
          server_last_error: a.mem.lastError || undefined,
          client_failures: a.clientFailures,
          connect_seconds: a.connectSeconds,
          memory: a.mem.memory,
          latency_ms: summary(a.latency),
        })),
      },
    };
  } finally {
    for (const conn of idle) conn.close();
    for (const p of probes) void p.session.close().catch(() => {});
    await Promise.race([Promise.allSettled(probes.map((p) => p.run)), sleep(3000)]);
    await child.stop();
    await Deno.remove(work, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--levels");
  const levels = i >= 0 ? Deno.args[i + 1].split(",").map(Number) : undefined;
  console.log(
    JSON.stringify(await run({ quick: Deno.args.includes("--quick"), levels }), null, 2),
  );
}
