/**
 * The peer bench's handshake figure (issue 18) alone, firm enough to compare trees: the
 * server's CPU per handshake + login (`_setup_server.ts`: the real serverHandshake, in-memory
 * password check, RSA-2048 certificates) beside InspIRCd's per TLS 1.3 handshake with a
 * client certificate, 8 clients at once as in the peer bench, a fixed number of handshakes.
 *
 * In each round every server is started fresh and they take turns in slices of `--slice`
 * handshakes (50): the load of this shared machine drifts within seconds, and whole runs one
 * after the other differed by more than the changes measured. The first `--cold` handshakes
 * after one warm-up (JIT compilation included: what the peer bench's 3-second phase mostly
 * is) are counted apart from the `--warm` ones after them. `--tree DIR` (repeatable) adds the
 * server child of another checkout (its own lib/ and deno.json): A/B of commits in one
 * sitting; the clients are always this checkout's.
 *
 *   deno run -A bench/handshake_bench.ts [--rounds 5] [--cold 200] [--warm 600] [--slice 50]
 *     [--tree DIR]… [--no-peer] [--no-self] [--cpu-prof DIR] [--server-deno-flag=FLAG]…
 *
 * `--cpu-prof DIR`: V8 CPU profiles of our server children (wall-time samples: on a loaded
 * machine they charge waiting to whatever ran last); `--server-deno-flag=--v8-flags=--perf-basic-prof`
 * with `perf record` for where the CPU really goes, native threads and the kernel included.
 * Run it under `nice -n -15` on a shared machine (never `chrt -f`). Prints one JSON line per
 * server per round on stderr and a summary on stdout: medians over rounds, their spread, each
 * round's ratio to InspIRCd's and to the first tree's, and the medians of those.
 */
import { parseArgs } from "node:util";
import type { Identity } from "../lib/handshake/common.ts";
import { findInspircd, Inspircd, ircTlsOf } from "./_inspircd.ts";
import { IrcClient } from "./_irc_client.ts";
import { rsaPki, type TestPki } from "./_pki.ts";
import { sampleProcess, threadCpu } from "./_proc.ts";
import { JsonChild, loginLikeClient, round } from "./_util.ts";

const CLIENTS = 8;
const SELF = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

interface Window {
  handshakes: number;
  cpuSeconds: number;
  threads: Record<string, number>;
}

const emptyWindow = (): Window => ({ handshakes: 0, cpuSeconds: 0, threads: {} });

/** A server under test: started, driven one handshake at a time, stopped. */
interface Target {
  readonly name: string;
  readonly pid: number;
  /** One handshake from connect to the client's end of it. */
  one(): Promise<void>;
  /** Resolves once the server has finished its side of every handshake so far. */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

/** Runs `count` handshakes, `CLIENTS` at once, and adds what the server spent to `into`. */
async function measure(target: Target, count: number, into: Window): Promise<void> {
  const [before, threads0] = await Promise.all([
    sampleProcess(target.pid),
    threadCpu(target.pid),
  ]);
  let started = 0;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (started < count) {
      started++;
      await target.one();
    }
  }));
  await target.settled();
  const [after, threads1] = await Promise.all([sampleProcess(target.pid), threadCpu(target.pid)]);
  into.handshakes += count;
  into.cpuSeconds += after.cpuSeconds - before.cpuSeconds;
  for (const [name, s] of Object.entries(threads1)) {
    into.threads[name] = round((into.threads[name] ?? 0) + s - (threads0[name] ?? 0), 2);
  }
}

interface Run {
  server: string;
  cold: Window;
  warm: Window;
}

async function ours(
  tree: string,
  pki: TestPki,
  ids: Map<string, Identity>,
  denoFlags: string[],
): Promise<Target> {
  const work = await Deno.makeTempDir({ prefix: "sc-bench-hs-" });
  const names = [...ids.keys()];
  const child = new JsonChild(
    `${tree}/bench/_setup_server.ts`,
    [pki.dir, "memory", work, names.join(",")],
    denoFlags,
    tree,
  );
  const { port } = await child.next() as { port: number };
  let next = 0;
  let total = 0;
  return {
    name: tree,
    pid: child.pid,
    async one() {
      total++;
      const name = names[next++ % names.length];
      (await loginLikeClient(port, pki.trust, ids.get(name)!, name)).conn.close();
    },
    // The server's side of a handshake ends after the client's: wait for its count.
    async settled() {
      const t0 = performance.now();
      while (performance.now() - t0 < 10_000) {
        const s = await child.request({ cmd: "stats" }) as { handshakes: number; failures: number };
        if (s.failures > 0) throw new Error(`handshake bench: ${s.failures} server-side failures`);
        if (s.handshakes >= total) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      throw new Error("handshake bench: the server did not finish its handshakes");
    },
    async stop() {
      await child.stop();
      await Deno.remove(work, { recursive: true });
    },
  };
}

async function inspircd(binary: string, pki: TestPki): Promise<Target> {
  const { files, tls } = await ircTlsOf(pki);
  const server = await Inspircd.start(binary, files);
  return {
    name: "inspircd",
    pid: server.pid,
    one: async () => await (await IrcClient.connect(server.port, tls)).quit(),
    // quit() returns once the server closed the connection: nothing of it is left to wait for.
    settled: () => Promise.resolve(),
    stop: () => server.stop(),
  };
}

/**
 * One round: every server started fresh, warmed by one handshake, then `cold` and `warm`
 * handshakes each in slices of `slice`, the servers taking turns slice by slice (the order
 * reversed every other slice), so that the machine's load, which drifts within seconds here,
 * falls on all of them alike.
 */
async function interleavedRound(
  starts: (() => Promise<Target>)[],
  cold: number,
  warm: number,
  slice: number,
): Promise<Run[]> {
  const targets: Target[] = [];
  try {
    for (const start of starts) targets.push(await start());
    const runs = targets.map((t) => ({ server: t.name, cold: emptyWindow(), warm: emptyWindow() }));
    for (const t of targets) {
      await t.one();
      await t.settled();
    }
    let turn = 0;
    for (const phase of ["cold", "warm"] as const) {
      for (let done = 0; done < (phase === "cold" ? cold : warm); done += slice) {
        const order = turn++ % 2 ? [...targets.keys()].reverse() : [...targets.keys()];
        for (const i of order) await measure(targets[i], slice, runs[i][phase]);
      }
    }
    return runs;
  } finally {
    for (const t of targets) await t.stop();
  }
}

const perHandshake = (w: Window) => (w.cpuSeconds / w.handshakes) * 1e6;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function summary(runs: Run[], servers: string[]) {
  const out: Record<string, unknown> = {};
  const irc = runs.filter((r) => r.server === "inspircd");
  for (const server of servers) {
    const mine = runs.filter((r) => r.server === server);
    const row: Record<string, unknown> = {};
    for (const phase of ["cold", "warm"] as const) {
      const us = mine.map((r) => perHandshake(r[phase]));
      row[`${phase}_us`] = round(median(us), 0);
      row[`${phase}_us_runs`] = us.map((x) => round(x, 0));
      row[`${phase}_spread`] = round((Math.max(...us) - Math.min(...us)) / median(us), 3);
      const first = runs.filter((r) => r.server === servers.find((s) => s !== "inspircd"));
      if (server !== "inspircd" && first[0]?.server !== server) {
        // Paired by round against the first of our trees: the machine's drift cancels.
        const ratios = mine.map((r, i) => perHandshake(r[phase]) / perHandshake(first[i][phase]));
        row[`${phase}_vs_${first[0].server.split("/").pop()}`] = round(median(ratios), 3);
        row[`${phase}_vs_runs`] = ratios.map((x) => round(x, 3));
      }
      if (server !== "inspircd" && irc.length > 0) {
        // Each round's ratio to the InspIRCd run of that round, then their median.
        const ratios = mine.map((r, i) => perHandshake(r[phase]) / perHandshake(irc[i][phase]));
        row[`${phase}_ratio`] = round(median(ratios), 3);
        row[`${phase}_ratio_runs`] = ratios.map((x) => round(x, 2));
      }
    }
    out[server] = row;
  }
  return out;
}

if (import.meta.main) {
  const { values: args } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string" },
      cold: { type: "string" },
      warm: { type: "string" },
      slice: { type: "string" },
      tree: { type: "string", multiple: true },
      "cpu-prof": { type: "string" },
      "server-deno-flag": { type: "string", multiple: true },
      "no-peer": { type: "boolean" },
      "no-self": { type: "boolean" },
    },
  });
  const rounds = Number(args.rounds ?? 5);
  const cold = Number(args.cold ?? 200);
  const warm = Number(args.warm ?? 600);
  const slice = Number(args.slice ?? 50);
  const trees = [
    ...(args["no-self"] ? [] : [SELF]),
    ...(args.tree ?? []).map((t) => t.replace(/\/$/, "")),
  ];
  const binary = args["no-peer"] ? undefined : await findInspircd();
  if (!args["no-peer"] && !binary) throw new Error("inspircd not found (or pass --no-peer)");
  const users = Array.from({ length: CLIENTS }, (_, i) => `user${i + 1}`);
  const pki = await rsaPki(users);
  try {
    const ids = new Map(
      await Promise.all(users.map(async (n) => [n, await pki.identity(n)] as const)),
    );
    const runs: Run[] = [];
    const flags = (tree: string) => [
      ...(args["cpu-prof"]
        ? ["--cpu-prof", `--cpu-prof-dir=${args["cpu-prof"]}/${tree.split("/").pop()}`]
        : []),
      ...(args["server-deno-flag"] ?? []),
    ];
    const starts = [
      ...(binary ? [() => inspircd(binary, pki)] : []),
      ...trees.map((tree) => () => ours(tree, pki, ids, flags(tree))),
    ];
    for (let r = 1; r <= rounds; r++) {
      for (const run of await interleavedRound(starts, cold, warm, slice)) {
        runs.push(run);
        console.error(JSON.stringify({ round: r, ...run }));
      }
    }
    const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
    console.log(JSON.stringify(
      {
        command: `deno run -A bench/handshake_bench.ts ${Deno.args.join(" ")}`,
        rounds,
        cold,
        warm,
        slice,
        clients: CLIENTS,
        load_average_at_end: load,
        servers: summary(runs, [...(binary ? ["inspircd"] : []), ...trees]),
      },
      null,
      2,
    ));
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
}
