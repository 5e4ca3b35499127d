/**
 * Session setup (issue 7): the full handshake of PROTOCOL §5 (hello, certificate
 * validation, both signed key agreements, login) over loopback, server in a child
 * process, several concurrent clients in this one; with the real store (PBKDF2
 * 600,000 iterations per login) and with an in-memory authenticate().
 *
 * References measured in the same run:
 *  - openssl s_server / s_time, TLS 1.3, mutual authentication (-Verify 1, client
 *    certificate), the same RSA-2048 keys and CA, same number of concurrent clients;
 *  - the raw crypto operations one session needs (both sides), timed alone and run
 *    at the same concurrency.
 *
 *   deno run -A bench/setup_bench.ts [--quick]
 */
import { sessionCryptoOps } from "./_crypto_ops.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import { hashPassword, PBKDF2_ITERATIONS } from "../lib/crypto/password.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { rsaPki, type TestPki } from "./_pki.ts";
import {
  BENCH_PASSWORD,
  commandOutput,
  figure,
  JsonChild,
  type Options,
  percentile,
  rateOf,
  ref,
  round,
  type Section,
  sleep,
  summary,
  timeOp,
} from "./_util.ts";
import type { Identity } from "../lib/handshake/common.ts";

const SERVER = new URL("./_setup_server.ts", import.meta.url).pathname;

interface LoadResult {
  rate: number;
  latenciesMs: number[];
  failures: number;
}

/** `concurrency` clients, each handshaking in a loop for `ms`; per-handshake latency. */
async function clientLoad(
  port: number,
  pki: TestPki,
  identities: { name: string; identity: Identity }[],
  concurrency: number,
  ms: number,
  noDelay: boolean,
): Promise<LoadResult> {
  const latenciesMs: number[] = [];
  let failures = 0;
  const once = async (w: number) => {
    const { name, identity } = identities[w % identities.length];
    const t0 = performance.now();
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    if (noDelay) tcp.setNoDelay(true);
    const conn = new FrameConnection(tcp);
    try {
      await clientHandshake(conn, {
        identity,
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: name, password: BENCH_PASSWORD },
      });
      return performance.now() - t0;
    } finally {
      conn.close();
    }
  };
  await once(0); // warm-up: first-use code paths on both sides
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    while (performance.now() - start < ms) {
      try {
        latenciesMs.push(await once(w));
      } catch {
        failures++;
      }
    }
  }));
  const seconds = (performance.now() - start) / 1000;
  return { rate: latenciesMs.length / seconds, latenciesMs, failures };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`nothing listening on ${port}`);
}

/**
 * TLS 1.3 full handshakes per second, mutual authentication with the same RSA-2048
 * certificates: one s_server, `concurrency` s_time clients in parallel.
 */
export async function opensslRate(
  pki: TestPki,
  user: string,
  concurrency: number,
  seconds: number,
): Promise<{ rate: number; version: string } | null> {
  const version = await commandOutput("openssl", ["version"]);
  if (!version) return null;
  const port = freePort();
  const server = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      `127.0.0.1:${port}`,
      "-cert",
      `${pki.dir}/server.pem`,
      "-key",
      `${pki.dir}/server.key`,
      "-CAfile",
      `${pki.dir}/ca.pem`,
      "-Verify",
      "1",
      "-tls1_3",
      "-quiet",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitForPort(port, 5000);
    const runs = await Promise.all(Array.from({ length: concurrency }, async () => {
      const t0 = performance.now();
      const out = await new Deno.Command("openssl", {
        args: [
          "s_time",
          "-connect",
          `127.0.0.1:${port}`,
          "-new",
          "-tls1_3",
          "-time",
          String(seconds),
          "-cert",
          `${pki.dir}/${user}.pem`,
          "-key",
          `${pki.dir}/${user}.key`,
          "-CAfile",
          `${pki.dir}/ca.pem`,
          "-verify",
          "1",
        ],
        stdout: "piped",
        stderr: "null",
      }).output();
      const wall = (performance.now() - t0) / 1000;
      const text = new TextDecoder().decode(out.stdout);
      const m = text.match(/(\d+) connections in [\d.]+ real seconds/) ??
        text.match(/(\d+) connections in [\d.]+s/);
      return m ? Number(m[1]) / wall : 0;
    }));
    const rate = runs.reduce((a, b) => a + b, 0);
    return rate > 0 ? { rate, version } : null;
  } finally {
    try {
      server.kill("SIGTERM");
    } catch {
      // exited
    }
    await server.status;
  }
}

/** Event-loop stall while password hashes run: the longest gap between 1 ms timer ticks. */
async function pbkdf2LoopLag(parallel: number): Promise<{ hashMs: number; maxLagMs: number }> {
  let maxLag = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxLag = Math.max(maxLag, now - last);
    last = now;
  }, 1);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: parallel }, () => hashPassword("correct horse battery")));
  const hashMs = performance.now() - t0;
  clearInterval(timer);
  return { hashMs: round(hashMs), maxLagMs: round(maxLag) };
}

export async function run(opts: Options, pki?: TestPki): Promise<Section> {
  const concurrency = opts.quick ? 4 : 8;
  const seconds = opts.quick ? 2 : 6;
  const users = Array.from({ length: concurrency }, (_, i) => `user${i + 1}`);
  pki ??= await rsaPki(users);
  const identities = await Promise.all(
    users.map(async (name) => ({ name, identity: await pki.identity(name) })),
  );
  const workDir = await Deno.makeTempDir({ prefix: "sc-bench-setup-" });

  const measured: Record<string, { c1: LoadResult; cN: LoadResult; serverRss: number }> = {};
  try {
    for (
      const [mode, tcp] of [
        ["memory", "nagle"],
        ["memory", "nodelay"],
        ["store", "nagle"],
        ["store", "nodelay"],
      ] as const
    ) {
      const dir = `${workDir}/${mode}-${tcp}`;
      await Deno.mkdir(dir);
      const child = new JsonChild(SERVER, [pki.dir, mode, dir, users.join(","), tcp]);
      const noDelay = tcp === "nodelay";
      try {
        const { port } = await child.next() as { port: number };
        const c1 = await clientLoad(port, pki, identities, 1, (seconds * 1000) / 2, noDelay);
        const cN = await clientLoad(port, pki, identities, concurrency, seconds * 1000, noDelay);
        const stats = await child.request({ cmd: "stats" }) as {
          memory: Deno.MemoryUsage;
        };
        measured[`${mode}-${tcp}`] = { c1, cN, serverRss: stats.memory.rss };
      } finally {
        await child.stop();
      }
    }
  } finally {
    await Deno.remove(workDir, { recursive: true });
  }

  // Raw crypto of one session, per side, each operation timed alone.
  const ops = await sessionCryptoOps(pki);
  const opMs = opts.quick ? 150 : 600;
  const perOp: Record<string, { ms: number; perSide: number }> = {};
  for (const [name, { op, perSide }] of Object.entries(ops.ops)) {
    perOp[name] = { ms: round(await timeOp(op, opMs), 4), perSide };
  }
  const sideMs = Object.values(perOp).reduce((s, o) => s + o.ms * o.perSide, 0);
  const pbkdf2Ms = await timeOp(() => hashPassword("correct horse battery"), opMs, 3);
  // The same operations run as a whole session at the bench's concurrency: the bound
  // if a handshake were nothing but its crypto.
  const rawRateMemory = await rateOf(ops.session, concurrency, seconds * 500);
  // With the real store every login is one PBKDF2: its rate alone bounds setup.
  const rawRateStore = await rateOf(
    () => hashPassword("correct horse battery"),
    concurrency,
    seconds * 500,
  );
  const openssl = await opensslRate(pki, users[0], concurrency, seconds);
  const openssl1 = await opensslRate(pki, users[0], 1, Math.max(1, seconds / 2));
  const lag = await pbkdf2LoopLag(4);

  const mem = measured["memory-nagle"];
  const memNd = measured["memory-nodelay"];
  const sto = measured["store-nagle"];
  const stoNd = measured["store-nodelay"];
  const opensslRef = openssl
    ? ref(
      `openssl s_time TLS1.3 mTLS RSA-2048, ${concurrency} clients`,
      openssl.rate,
      "handshakes/s",
    )
    : null;
  const noTls = openssl ? {} : { note: "openssl not found: no TLS reference" };
  const goal = { goal: ">= 0.5 of openssl (issue 7)", ...noTls };
  const rawMem = ref(
    `raw crypto of one session (both sides), ${concurrency} in parallel`,
    rawRateMemory,
    "sessions/s",
  );
  const rawSto = ref(`PBKDF2 alone, ${concurrency} in parallel`, rawRateStore, "hashes/s");
  const p = (r: LoadResult, q: number) => percentile(r.latenciesMs, q);
  const N = `${concurrency} clients`;
  const figures = [
    figure(
      `setup rate, in-memory auth, ${N} (as shipped)`,
      mem.cN.rate,
      "sessions/s",
      opensslRef,
      goal,
    ),
    figure(`setup rate, in-memory auth, ${N} (as shipped)`, mem.cN.rate, "sessions/s", rawMem),
    figure(
      `setup rate, in-memory auth, ${N}, TCP_NODELAY`,
      memNd.cN.rate,
      "sessions/s",
      opensslRef,
      goal,
    ),
    figure(`setup rate, in-memory auth, ${N}, TCP_NODELAY`, memNd.cN.rate, "sessions/s", rawMem),
    figure(
      `setup rate, real store (PBKDF2 ${PBKDF2_ITERATIONS}), ${N} (as shipped)`,
      sto.cN.rate,
      "sessions/s",
      opensslRef,
      goal,
    ),
    figure(`setup rate, real store, ${N} (as shipped)`, sto.cN.rate, "sessions/s", rawSto),
    figure(`setup rate, real store, ${N}, TCP_NODELAY`, stoNd.cN.rate, "sessions/s", rawSto),
    figure(
      "setup latency p50, in-memory auth, 1 client (as shipped)",
      p(mem.c1, 50),
      "ms",
      ref("raw crypto of one session (both sides), sequential", 2 * sideMs, "ms"),
    ),
    figure(
      "setup latency p50, in-memory auth, 1 client, TCP_NODELAY",
      p(memNd.c1, 50),
      "ms",
      ref("raw crypto of one session (both sides), sequential", 2 * sideMs, "ms"),
    ),
    figure(
      `setup latency p50, in-memory auth, ${N} (as shipped)`,
      p(mem.cN, 50),
      "ms",
      ref("same, 1 client", p(mem.c1, 50), "ms"),
    ),
    figure(
      `setup latency p99, in-memory auth, ${N} (as shipped)`,
      p(mem.cN, 99),
      "ms",
      ref("same, 1 client", p(mem.c1, 99), "ms"),
    ),
    figure(
      `setup latency p50, in-memory auth, ${N}, TCP_NODELAY`,
      p(memNd.cN, 50),
      "ms",
      ref("same, 1 client", p(memNd.c1, 50), "ms"),
    ),
    figure(
      `setup latency p99, in-memory auth, ${N}, TCP_NODELAY`,
      p(memNd.cN, 99),
      "ms",
      ref("same, 1 client", p(memNd.c1, 99), "ms"),
    ),
    figure(
      `setup latency p50, real store, ${N} (as shipped)`,
      p(sto.cN, 50),
      "ms",
      ref("PBKDF2 hash alone", pbkdf2Ms, "ms"),
    ),
    figure(
      `setup latency p99, real store, ${N} (as shipped)`,
      p(sto.cN, 99),
      "ms",
      ref("PBKDF2 hash alone", pbkdf2Ms, "ms"),
    ),
    figure(
      "event-loop stall during 4 parallel PBKDF2 hashes",
      Math.max(lag.maxLagMs, 0.001),
      "ms",
      ref("duration of those hashes", lag.hashMs, "ms"),
      { note: "ratio << 1: hashing runs off the JS thread; it does not block other sessions" },
    ),
  ];

  const load = (r: LoadResult) => ({
    rate: round(r.rate),
    latency_ms: summary(r.latenciesMs),
    failures: r.failures,
  });
  return {
    title: "Session setup (full handshake + login)",
    figures,
    details: {
      concurrency,
      seconds_per_run: seconds,
      key_type: "RSA-2048 (server, clients, CA); X25519 key agreement",
      tcp_note:
        "as shipped = lib's sockets (Nagle on); TCP_NODELAY = set by the bench on both ends",
      openssl: openssl?.version ?? "not found",
      openssl_rate_1_client: openssl1 ? round(openssl1.rate) : null,
      runs: Object.fromEntries(
        Object.entries(measured).map(([k, v]) => [
          k,
          { c1: load(v.c1), cN: load(v.cN), server_rss_bytes: v.serverRss },
        ]),
      ),
      raw_ops_ms_each: perOp,
      raw_crypto_ms_per_side: round(sideMs),
      pbkdf2_ms: round(pbkdf2Ms),
      breakdown_1_client_ms_as_shipped: breakdown(perOp, sideMs, p(mem.c1, 50), pbkdf2Ms),
      breakdown_1_client_ms_nodelay: breakdown(perOp, sideMs, p(memNd.c1, 50), pbkdf2Ms),
      raw_session_rate_memory: round(rawRateMemory),
      pbkdf2_rate_parallel: round(rawRateStore),
      pbkdf2_event_loop: lag,
    },
  };
}

/** Where one handshake's time goes (1 client): crypto per op class, both sides, and the rest. */
function breakdown(
  perOp: Record<string, { ms: number; perSide: number }>,
  sideMs: number,
  latencyMs: number,
  pbkdf2Ms: number,
) {
  const out: Record<string, number> = {};
  for (const [name, o] of Object.entries(perOp)) out[name] = round(2 * o.ms * o.perSide);
  out["crypto total (both sides)"] = round(2 * sideMs);
  out["I/O, JSON/zod, scheduling (rest)"] = round(latencyMs - 2 * sideMs);
  out["measured latency p50"] = round(latencyMs);
  out["+ PBKDF2 per login with the real store"] = round(pbkdf2Ms);
  return out;
}

if (import.meta.main) {
  const pki = await rsaPki([
    "user1",
    "user2",
    "user3",
    "user4",
    "user5",
    "user6",
    "user7",
    "user8",
  ]);
  try {
    const section = await run({ quick: Deno.args.includes("--quick") }, pki);
    console.log(JSON.stringify(section, null, 2));
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
}
