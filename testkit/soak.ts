/**
 * The soak (issue 8): many concurrent in-process clients chatting through one ChatServer
 * for a bounded time, then checks that
 *   - every message sent was delivered exactly once to every other lobby member, with its
 *     author's verified signature (relay, PROTOCOL §6.4);
 *   - every session closed with receipts on both sides, and every transcript (client and
 *     server side) verifies and is confirmed by its receipts (lib/transcript/verify.ts);
 *   - the server's state is empty after everyone left, and the process heap returned near
 *     its baseline (exact after a full GC with --v8-flags=--expose-gc, as `deno task soak`
 *     runs it; a generous bound otherwise).
 *
 * `deno task soak --clients 300 --seconds 120 [--rate 1]` (scripts/soak.ts) runs a long one;
 * tests/soak_test.ts a short one.
 * ed25519 keys and an in-memory store (no PBKDF2) keep the handshakes cheap.
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { ChatServer } from "../lib/server/server.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import {
  fullGc,
  HonestClient,
  type LoggedEvent,
  type MemorySample,
  memorySample,
  MiB,
  Rng,
} from "./fuzz.ts";
import { sharedPasswordStore } from "./memory_store.ts";
import { makePki } from "./pki.ts";

export interface SoakOptions {
  clients: number;
  seconds: number;
  /** Messages per second per client, on average (random gaps). */
  rate: number;
  seed?: number;
  /** How many transcripts to verify at once. */
  verifyConcurrency?: number;
  log?: (line: string) => void;
}

export interface SoakReport {
  clients: number;
  seconds: number;
  sent: number;
  /** relays expected (each message times the other members) and received */
  expectedDeliveries: number;
  deliveries: number;
  /** per (recipient, message): missing, duplicated, misattributed */
  missing: number;
  duplicates: number;
  misattributed: number;
  closedCleanly: number;
  serverCloses: number;
  transcriptsVerified: number;
  transcriptsBad: string[];
  lobbyAfter: number;
  queuedAfter: number;
  internalLogged: number;
  baseline: MemorySample;
  peak: MemorySample;
  after: MemorySample;
  gcAvailable: boolean;
  timings: Record<string, number>;
}

async function pool<T>(items: T[], n: number, work: (item: T, i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await work(items[i], i);
      }
    }),
  );
}

async function logFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await logFiles(`${dir}/${e.name}`));
    else if (e.name.endsWith(".log")) out.push(`${dir}/${e.name}`);
  }
  return out;
}

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const log = o.log ?? ((line: string) => console.log(line));
  const rng = new Rng(o.seed ?? 1);
  const timings: Record<string, number> = {};
  let t = performance.now();
  const lap = (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - t);
    t = now;
  };
  const users = Array.from({ length: o.clients }, (_, i) => `user${i}`);
  const pki = await makePki(users, "ed25519");
  const dir = await Deno.makeTempDir({ prefix: "securechat-soak-" });
  const logs: LoggedEvent[] = [];
  const password = "soak-password";
  lap("pki");
  const baseline = await memorySample();
  let peak = baseline;
  const server = ChatServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    identity: await pki.identity("server"),
    trust: pki.trust,
    store: sharedPasswordStore(password),
    log: (event, fields = {}) => {
      // Only what the checks need: an in-memory log of every relay would itself be a leak.
      if (event !== "CONNECT" && event !== "LOGIN") logs.push({ event, ...fields });
    },
    session: { transcripts: transcriptDirectory(`${dir}/server`) },
    admission: {
      maxConnections: o.clients + 64,
      maxConnectionsPerAddress: o.clients + 64,
      handshakeBurst: o.clients * 2,
      handshakesPerSecond: o.clients * 2,
    },
  });
  try {
    let clients: (HonestClient | undefined)[] = new Array(o.clients);
    await pool(users, 16, async (user, i) => {
      clients[i] = await HonestClient.login(server.port, pki, user, password, `${dir}/${user}`);
    });
    while (server.lobby.names().length < o.clients) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    lap("login");
    log(`soak: ${o.clients} clients logged in (${timings.login} ms)`);

    // Chat: random gaps, every client for the same wall-clock time.
    const sent: string[][] = users.map(() => []);
    const until = Date.now() + o.seconds * 1000;
    const meanGap = 1000 / o.rate;
    const sampler = setInterval(() => {
      const m = Deno.memoryUsage();
      if (m.heapUsed > peak.heapUsed) peak = { heapUsed: m.heapUsed, rss: m.rss };
    }, 250);
    await Promise.all(clients.map(async (c, i) => {
      const r = rng.fork();
      await new Promise((resolve) => setTimeout(resolve, r.int(meanGap)));
      for (let k = 1; Date.now() < until; k++) {
        const text = `${users[i]}#${k}`;
        await c!.session.send({ kind: "text", text });
        sent[i].push(text);
        const gap = meanGap * (0.5 + r.u32() / 2 ** 32);
        await new Promise((resolve) =>
          setTimeout(resolve, Math.max(0, Math.min(gap, until - Date.now())))
        );
      }
    }));
    lap("chat");
    const total = sent.reduce((a, s) => a + s.length, 0);
    const expectedDeliveries = total * (o.clients - 1);
    const relays = () =>
      clients.reduce((a, c) => a + c!.received.filter((m) => m.kind === "relay").length, 0);
    const drainUntil = Date.now() + 60_000;
    while (relays() < expectedDeliveries && Date.now() < drainUntil) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    clearInterval(sampler);
    lap("drain");
    const deliveries = relays();
    log(`soak: ${total} messages sent, ${deliveries}/${expectedDeliveries} relays received`);

    // Exactly once, from the right author, to everyone else.
    let missing = 0, duplicates = 0, misattributed = 0;
    for (const [i, c] of clients.entries()) {
      const seen = new Map<string, number>();
      for (const m of c!.received) {
        if (m.kind !== "relay") continue;
        const text = m.text!;
        seen.set(text, (seen.get(text) ?? 0) + 1);
        if (text.split("#")[0] !== m.author) misattributed++;
      }
      for (const [j, texts] of sent.entries()) {
        if (j === i) continue;
        for (const text of texts) {
          const n = seen.get(text) ?? 0;
          if (n === 0) missing++;
          if (n > 1) duplicates += n - 1;
        }
      }
      if (seen.has(sent[i][0])) duplicates++; // never one's own message back
    }

    // Everyone leaves cleanly: close/receipt on both sides.
    let closedCleanly = 0;
    await pool(clients, 32, async (c) => {
      const end = await c!.session.close().then(() => c!.running);
      if (end.outcome === "closed") closedCleanly++;
    });
    clients = [];
    const leaveUntil = Date.now() + 20_000;
    while (
      (server.lobby.names().length > 0 ||
        logs.filter((e) => e.event === "CLOSE").length < o.clients) && Date.now() < leaveUntil
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    lap("close");
    const serverCloses = logs.filter((e) => e.event === "CLOSE" && e.outcome === "closed").length;

    const after = await memorySample();
    lap("gc");

    // Every transcript, both sides, verifies and is confirmed by its receipts.
    const files = await logFiles(dir);
    const bad: string[] = [];
    await pool(files, o.verifyConcurrency ?? 8, async (file) => {
      const report = await verifyTranscript(file, { trust: pki.trust, concurrency: 64 });
      if (!report.ok || report.confirmedBy.length !== 2) {
        bad.push(`${file}: ${report.code} line ${report.firstBadLine}: ${report.reason}`);
      }
    });
    lap("verify");
    return {
      clients: o.clients,
      seconds: o.seconds,
      sent: total,
      expectedDeliveries,
      deliveries,
      missing,
      duplicates,
      misattributed,
      closedCleanly,
      serverCloses,
      transcriptsVerified: files.length,
      transcriptsBad: bad,
      lobbyAfter: server.lobby.names().length,
      queuedAfter: server.lobby.queueStats().queuedBytes,
      internalLogged: logs.filter((e) => e.event === "INTERNAL").length,
      baseline,
      peak,
      after,
      gcAvailable: fullGc !== undefined,
      timings,
    };
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
}

export function formatSoak(r: SoakReport): string {
  const mb = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
  return [
    `clients ${r.clients}, ${r.seconds} s: ${r.sent} messages, ${r.deliveries}/${r.expectedDeliveries} relays`,
    `missing ${r.missing}, duplicates ${r.duplicates}, misattributed ${r.misattributed}`,
    `closed cleanly ${r.closedCleanly} (server CLOSE outcome=closed: ${r.serverCloses})`,
    `transcripts verified ${r.transcriptsVerified}, bad ${r.transcriptsBad.length}`,
    `after: lobby ${r.lobbyAfter}, queued ${r.queuedAfter} B, INTERNAL ${r.internalLogged}`,
    `heap: baseline ${mb(r.baseline.heapUsed)}, peak ${mb(r.peak.heapUsed)}, after ${
      mb(r.after.heapUsed)
    } (${r.gcAvailable ? "after full GCs" : "no GC available: V8 collects lazily"})`,
    `rss: baseline ${mb(r.baseline.rss)}, after ${mb(r.after.rss)}`,
    `timings (ms): ${JSON.stringify(r.timings)}`,
  ].join("\n");
}
