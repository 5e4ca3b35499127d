/**
 * The peer bench's handshake figure (issue 18) alone, firm enough to compare trees: the
 * server's CPU per handshake + login (`_setup_server.ts`: the real serverHandshake, in-memory
 * password check, RSA-2048 certificates) beside InspIRCd's per TLS 1.3 handshake with a
 * client certificate, in rounds that alternate the servers, a fixed number of handshakes
 * each, 8 clients at once as in the peer bench.
 *
 * Each server is started fresh; its first handshakes are measured apart ("cold": after one
 * warm-up handshake, what the peer bench's 3-second phase mostly is, JIT compilation
 * included) from the ones after them ("warm"), so a difference in either shows where it is.
 * `--tree DIR` (repeatable) runs the server child of another checkout (its own lib/, its own
 * deno.json) beside this one's, alternating them in every round: A/B comparisons of two
 * commits in one sitting. The clients are always this checkout's.
 *
 *   deno run -A bench/handshake_bench.ts [--rounds 5] [--cold 200] [--warm 600] [--tree DIR]…
 *     [--no-peer] [--no-self] [--cpu-prof DIR] [--server-deno-flag=FLAG]…
 *
 * `--cpu-prof DIR`: V8 CPU profiles of our server children (wall-time samples: on a loaded
 * machine they charge waiting to whatever ran last); `--server-deno-flag=--v8-flags=--perf-basic-prof`
 * with `perf record` for where the CPU really goes, native threads and the kernel included.
 *
 * Run it under `nice -n -15` on a shared machine (never `chrt -f`). Prints one JSON line per
 * server per round on stderr and a summary (medians, spread, ratios) on stdout.
 */
import { parseArgs } from "node:util";
import { clientHandshake } from "../lib/handshake/client.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { findInspircd, Inspircd } from "./_inspircd.ts";
import { IrcClient, type IrcTls } from "./_irc_client.ts";
import { rsaPki, type TestPki } from "./_pki.ts";
import { sampleProcess, threadCpu } from "./_proc.ts";
import { BENCH_PASSWORD, connectLikeClient, JsonChild, round } from "./_util.ts";

const CLIENTS = 8;
const SELF = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

interface Window {
  handshakes: number;
  cpuSeconds: number;
  threads: Record<string, number>;
}

/** Runs `count` handshakes, `CLIENTS` at once, and what the server spent meanwhile. */
async function measured(
  pid: number,
  count: number,
  one: () => Promise<void>,
  settled: (n: number) => Promise<void>,
): Promise<Window> {
  const [before, threads0] = await Promise.all([sampleProcess(pid), threadCpu(pid)]);
  let started = 0;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (started < count) {
      started++;
      await one();
    }
  }));
  await settled(count);
  const [after, threads1] = await Promise.all([sampleProcess(pid), threadCpu(pid)]);
  const threads: Record<string, number> = {};
  for (const [name, s] of Object.entries(threads1)) {
    threads[name] = round(s - (threads0[name] ?? 0), 2);
  }
  return { handshakes: count, cpuSeconds: after.cpuSeconds - before.cpuSeconds, threads };
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
  cold: number,
  warm: number,
  denoFlags: string[],
): Promise<Run> {
  const work = await Deno.makeTempDir({ prefix: "sc-bench-hs-" });
  const names = [...ids.keys()];
  const child = new JsonChild(
    `${tree}/bench/_setup_server.ts`,
    [pki.dir, "memory", work, names.join(",")],
    denoFlags,
    tree,
  );
  try {
    const { port } = await child.next() as { port: number };
    let next = 0;
    const one = async () => {
      const name = names[next++ % names.length];
      const conn = new FrameConnection(await connectLikeClient(port));
      try {
        await clientHandshake(conn, {
          identity: ids.get(name)!,
          trust: pki.trust,
          serverName: "localhost",
          credentials: { mode: "login", username: name, password: BENCH_PASSWORD },
        });
      } finally {
        conn.close();
      }
    };
    let total = 0;
    // The server's side of a handshake ends after the client's: wait for its count.
    const settled = async (n: number) => {
      total += n;
      const t0 = performance.now();
      while (performance.now() - t0 < 10_000) {
        const s = await child.request({ cmd: "stats" }) as { handshakes: number; failures: number };
        if (s.failures > 0) throw new Error(`handshake bench: ${s.failures} server-side failures`);
        if (s.handshakes >= total) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      throw new Error("handshake bench: the server did not finish its handshakes");
    };
    await one();
    await settled(1);
    const c = await measured(child.pid, cold, one, settled);
    const w = await measured(child.pid, warm, one, settled);
    return { server: tree, cold: c, warm: w };
  } finally {
    await child.stop();
    await Deno.remove(work, { recursive: true });
  }
}

async function inspircd(
  binary: string,
  pki: TestPki,
  cold: number,
  warm: number,
): Promise<Run> {
  const files = {
    certFile: `${pki.dir}/server.pem`,
    keyFile: `${pki.dir}/server.key`,
    caFile: `${pki.dir}/ca.pem`,
  };
  const tls: IrcTls = {
    caCert: await Deno.readTextFile(files.caFile),
    cert: await Deno.readTextFile(`${pki.dir}/user1.pem`),
    key: await Deno.readTextFile(`${pki.dir}/user1.key`),
  };
  const server = await Inspircd.start(binary, files);
  try {
    const one = async () => await (await IrcClient.connect(server.port, tls)).quit();
    // quit() returns once the server closed the connection: nothing of it is left to wait for.
    const settled = () => Promise.resolve();
    await one();
    const c = await measured(server.pid, cold, one, settled);
    const w = await measured(server.pid, warm, one, settled);
    return { server: "inspircd", cold: c, warm: w };
  } finally {
    await server.stop();
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
    for (let r = 1; r <= rounds; r++) {
      // Alternate the order within a round too, so no server always follows the same one.
      const order = r % 2 ? trees : [...trees].reverse();
      if (binary) {
        const run = await inspircd(binary, pki, cold, warm);
        runs.push(run);
        console.error(JSON.stringify({ round: r, ...run }));
      }
      for (const tree of order) {
        const profile = args["cpu-prof"];
        const flags = [
          ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}/${tree.split("/").pop()}`] : []),
          ...(args["server-deno-flag"] ?? []),
        ];
        const run = await ours(tree, pki, ids, cold, warm, flags);
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
