/**
 * The messages section's "direct messages/s, one at a time" figure (issue 12: ≥ 0.5× the raw
 * per-message crypto) alone, firm enough to compare trees: the same shape as
 * bench/message_bench.ts's direct(): one client ChatSession to one server ChatSession over
 * loopback in this process, each `send` awaited before the next, counted until the server
 * accepted the last line; beside the same raw crypto (one sign + seal + verify + open of a
 * statement-sized input and a one-granule record, in sequence).
 *
 * Each round runs one child per tree (`--tree DIR`, repeatable; this checkout first unless
 * `--no-self`), one after the other: the child imports lib/ from its tree, logs in, sends
 * `--warm` lines (the JIT), then alternates the raw crypto (0.5 s) and `--messages` lines,
 * `--pairs` times. Besides the rates it reads the main thread's CPU time from
 * /proc/self/task/<pid>/schedstat (nanoseconds): the lone line's path is one JavaScript
 * thread, and its CPU per line beside the raw crypto's moves less with other processes' load
 * than the wall-clock rate does. Then `--messages` / 4 lines alone, each awaited until the
 * server's handler has it before the next: the latency of a line alone. Prints one JSON line per child on stderr and, on stdout, the
 * medians per tree and each round's ratio to the first tree's.
 *
 *   deno run -A bench/lone_line_bench.ts [--tree DIR]… [--no-self] [--rounds 5] [--pairs 3]
 *     [--messages 2000] [--warm 2000] [--keys ed25519|rsa2048]
 */
import { parseArgs } from "node:util";
import { benchOptions, percentile, round } from "./_util.ts";

const SELF = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const TEXT = "the quick brown fox jumps over the lazy dog, 64 bytes of chat..";

interface ChildResult {
  tree: string;
  /** Lines per second, one at a time, per pair. */
  rates: number[];
  /** The raw crypto per second, in sequence, per pair. */
  raw_rates: number[];
  /** Main-thread CPU µs per line, and per raw crypto operation, per pair. */
  line_cpu_us: number[];
  raw_cpu_us: number[];
  /** A line alone: `send` to the server's handler, then the next (ms, median and p90). */
  latency_ms: { p50: number; p90: number };
}

/** CPU time of this process's main thread, ns (the scheduler's own count: no 10 ms ticks). */
function mainThreadNs(): number {
  const schedstat = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/schedstat`);
  return Number(schedstat.split(" ")[0]);
}

/** One tree's measurement, in this process: its lib/ imported by path. */
async function child(
  tree: string,
  opts: { keys: string; messages: number; warm: number; pairs: number },
): Promise<ChildResult> {
  const lib = (path: string) => import(`${tree}/${path}`);
  const { transcriptDirectory } = await lib("lib/transcript/file_storage.ts");
  const { randomBytes } = await lib("lib/bytes.ts");
  const { importVerifyingKeySpki, sign, verify } = await lib("lib/crypto/signature.ts");
  const { openRecord, RECORD_PADDING, sealRecord } = await lib("lib/handshake/record.ts");
  const { parseCertificate } = await lib("lib/pki/certificate.ts");
  const { clientHandshake } = await lib("lib/handshake/client.ts");
  const { serverHandshake } = await lib("lib/handshake/server.ts");
  const { ChatSession } = await lib("lib/session/session.ts");
  const { ed25519Pki, rsaPki } = await lib("bench/_pki.ts");
  const { BENCH_PASSWORD, loopbackPair } = await lib("bench/_util.ts");

  const pki = await (opts.keys === "rsa2048" ? rsaPki : ed25519Pki)(["user1"]);
  const transcripts = await Deno.makeTempDir({ prefix: "sc-bench-lone-" });
  try {
    const client = await pki.identity("user1");
    const server = await pki.identity("server");
    const senderKey = await importVerifyingKeySpki(parseCertificate(client.certDer).spki);
    const statement = randomBytes(128);
    const record = randomBytes(RECORD_PADDING);
    const keys = { key: randomBytes(32), iv: randomBytes(12) };
    const rawMessage = async () => {
      const signature = await sign(client.signingKey, statement);
      const sealed = sealRecord(keys, 0, record);
      if (!await verify(senderKey, statement, signature)) throw new Error("bench: verify");
      openRecord(keys, 0, sealed);
    };

    const { server: sConn, client: cConn } = await loopbackPair();
    const [s, c] = await Promise.all([
      serverHandshake(sConn, {
        identity: server,
        trust: pki.trust,
        authenticate: () => Promise.resolve({ registered: false }),
      }),
      clientHandshake(cConn, {
        identity: client,
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: "user1", password: BENCH_PASSWORD },
      }),
    ]);
    const serverSession = await ChatSession.start(s, {
      transcripts: transcriptDirectory(transcripts),
    });
    const clientSession = await ChatSession.start(c, {
      transcripts: transcriptDirectory(transcripts),
    });
    let accepted = 0;
    let waiting: { n: number; resolve: () => void } | undefined;
    const serverRun = serverSession.run({
      onMessage: () => {
        accepted++;
        if (waiting && accepted >= waiting.n) waiting.resolve();
      },
    });
    const clientRun = clientSession.run({ onMessage: () => {} });
    const until = (n: number) =>
      accepted >= n ? Promise.resolve() : new Promise<void>((resolve) => waiting = { n, resolve });
    const lines = async (n: number) => {
      const target = accepted + n;
      for (let i = 0; i < n; i++) await clientSession.send({ kind: "text", text: TEXT });
      await until(target);
    };

    await lines(opts.warm);
    const result: ChildResult = {
      tree,
      rates: [],
      raw_rates: [],
      line_cpu_us: [],
      raw_cpu_us: [],
      latency_ms: { p50: 0, p90: 0 },
    };
    for (let pair = 0; pair < opts.pairs; pair++) {
      let ns = mainThreadNs();
      let t0 = performance.now();
      let raws = 0;
      while (performance.now() - t0 < 500) {
        for (let i = 0; i < 50; i++) await rawMessage();
        raws += 50;
      }
      result.raw_rates.push(raws / ((performance.now() - t0) / 1000));
      result.raw_cpu_us.push((mainThreadNs() - ns) / 1000 / raws);
      ns = mainThreadNs();
      t0 = performance.now();
      await lines(opts.messages);
      result.rates.push(opts.messages / ((performance.now() - t0) / 1000));
      result.line_cpu_us.push((mainThreadNs() - ns) / 1000 / opts.messages);
    }
    const latencies: number[] = [];
    for (let i = 0; i < opts.messages / 4; i++) {
      const t0 = performance.now();
      await lines(1);
      latencies.push(performance.now() - t0);
    }
    result.latency_ms = {
      p50: round(percentile(latencies, 50), 4),
      p90: round(percentile(latencies, 90), 4),
    };
    await clientSession.close();
    await Promise.all([serverRun, clientRun]);
    return result;
  } finally {
    await Deno.remove(transcripts, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
}

const median = (values: number[]) => percentile(values, 50);

const USAGE = `usage: deno run -A bench/lone_line_bench.ts [OPTIONS]

  --tree DIR        (repeatable) also measure this checkout (its lib/ and deno.json)
  --no-self         not this checkout
  --rounds N        children per tree, alternated (default 5)
  --pairs N         raw crypto then lines, N times per child (default 3)
  --messages N      lines per pair, sent one at a time (default 2000; N / 4 alone for latency)
  --warm N          lines first, not measured (default 2000)
  --keys K          ed25519 (default) or rsa2048
  --help            this text`;

if (import.meta.main) {
  const args = benchOptions(USAGE, () =>
    parseArgs({
      args: Deno.args,
      options: {
        child: { type: "string" },
        tree: { type: "string", multiple: true },
        "no-self": { type: "boolean" },
        rounds: { type: "string" },
        pairs: { type: "string" },
        messages: { type: "string" },
        warm: { type: "string" },
        keys: { type: "string" },
        help: { type: "boolean" },
      },
    }).values);
  const opts = {
    keys: args.keys ?? "ed25519",
    messages: Number(args.messages ?? 2000),
    warm: Number(args.warm ?? 2000),
    pairs: Number(args.pairs ?? 3),
  };
  if (!["ed25519", "rsa2048"].includes(opts.keys)) throw new Error("--keys ed25519 or rsa2048");
  if (args.child) {
    console.log(JSON.stringify(await child(args.child, opts)));
  } else {
    const trees = [
      ...(args["no-self"] ? [] : [SELF]),
      ...(args.tree ?? []).map((t) => t.replace(/\/$/, "")),
    ];
    const rounds = Number(args.rounds ?? 5);
    const self = new URL(import.meta.url).pathname;
    const byTree = new Map(trees.map((t) => [t, [] as ChildResult[]]));
    for (let r = 1; r <= rounds; r++) {
      for (const tree of trees) {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            `--config=${tree}/deno.json`,
            self,
            `--child=${tree}`,
            `--keys=${opts.keys}`,
            `--messages=${opts.messages}`,
            `--warm=${opts.warm}`,
            `--pairs=${opts.pairs}`,
          ],
          stdout: "piped",
          stderr: "inherit",
        }).output();
        if (!out.success) throw new Error(`the child for ${tree} failed`);
        const result = JSON.parse(new TextDecoder().decode(out.stdout)) as ChildResult;
        byTree.get(tree)!.push(result);
        console.error(JSON.stringify({ round: r, ...result }));
      }
    }
    /** Per child: the medians of its pairs' rate ratio and CPU ratio (raw ÷ line). */
    const ratios = (c: ChildResult) => ({
      rate: median(c.rates.map((rate, i) => rate / c.raw_rates[i])),
      cpu: median(c.line_cpu_us.map((us, i) => c.raw_cpu_us[i] / us)),
      line_cpu_us: median(c.line_cpu_us),
      raw_cpu_us: median(c.raw_cpu_us),
    });
    const first = byTree.get(trees[0])!.map(ratios);
    const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
    console.log(JSON.stringify(
      {
        command: `deno run -A bench/lone_line_bench.ts ${Deno.args.join(" ")}`,
        ...opts,
        rounds,
        load_average_at_end: load,
        trees: Object.fromEntries(trees.map((tree) => {
          const rs = byTree.get(tree)!.map(ratios);
          return [tree, {
            one_at_a_time_rate_per_raw: round(median(rs.map((x) => x.rate)), 3),
            raw_cpu_per_line_cpu: round(median(rs.map((x) => x.cpu)), 3),
            line_cpu_us: round(median(rs.map((x) => x.line_cpu_us)), 1),
            raw_cpu_us: round(median(rs.map((x) => x.raw_cpu_us)), 1),
            latency_p50_ms: round(median(byTree.get(tree)!.map((c) => c.latency_ms.p50)), 4),
            rounds_rate_per_raw: rs.map((x) => round(x.rate, 3)),
            rounds_cpu_ratio_vs_first_tree: rs.map((x, i) => round(x.cpu / first[i].cpu, 3)),
          }];
        })),
      },
      null,
      2,
    ));
  }
}
