/**
 * Startup (issue 7): wall time of `securechat --help` (a `deno run main.ts --help`
 * subprocess, the permission flags of `deno task start`) and of `serve` from spawn to
 * its first accepted connection. References in the same run: the bare runtime
 * (`deno run` of an empty module) and a minimal Deno TCP server accepting one
 * connection.
 *
 *   deno run -A bench/startup_bench.ts [--quick]
 */
import { cliCommand } from "../testkit/cli.ts";
import { rsaPki, type TestPki } from "./_pki.ts";
import {
  figure,
  lines,
  type Options,
  percentile,
  ref,
  round,
  type Section,
  sleep,
} from "./_util.ts";

async function timeRun(cmd: string[], cwd?: string): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd,
    stdout: "null",
    stderr: "null",
  }).output();
  if (!out.success) throw new Error(`${cmd.join(" ")} exited with ${out.code}`);
  return performance.now() - t0;
}

/** Spawns a server, reads its port from stdout, connects; returns [ms to listen, ms to accepted]. */
async function timeServer(
  cmd: string[],
  portOf: (line: string) => number | null,
  acceptedOf: (line: string) => boolean,
  cwd: string,
): Promise<[number, number]> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let listenMs = NaN;
  let acceptedMs = NaN;
  let conn: Deno.TcpConn | undefined;
  try {
    for await (const line of lines(child.stdout)) {
      const port = portOf(line);
      if (port !== null) {
        listenMs = performance.now() - t0;
        conn = await Deno.connect({ hostname: "127.0.0.1", port });
      }
      if (acceptedOf(line)) {
        acceptedMs = performance.now() - t0;
        break;
      }
    }
  } finally {
    conn?.close();
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
  return [listenMs, acceptedMs];
}

const MINIMAL_SERVER = `
const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(JSON.stringify({ port: l.addr.port }));
const c = await l.accept();
console.log("accepted");
c.close();
`;

export async function run(opts: Options, pki?: TestPki): Promise<Section> {
  const reps = opts.quick ? 3 : 7;
  const work = await Deno.makeTempDir({ prefix: "sc-bench-startup-" });
  const ownPki = !pki;
  pki ??= await rsaPki([]);
  try {
    const empty = `${work}/empty.ts`;
    const minimal = `${work}/minimal_server.ts`;
    await Deno.writeTextFile(empty, "");
    await Deno.writeTextFile(minimal, MINIMAL_SERVER);
    const help = cliCommand(["--help"]);
    const bare = [Deno.execPath(), "run", "--quiet", empty];
    await timeRun(help); // warm the module cache once
    await timeRun(bare);
    const helpMs: number[] = [];
    const bareMs: number[] = [];
    for (let i = 0; i < reps; i++) {
      helpMs.push(await timeRun(help));
      bareMs.push(await timeRun(bare));
    }

    const serve = cliCommand([
      "serve",
      "--port",
      "0",
      "--log-format",
      "json",
      "--cert",
      `${pki.dir}/server.pem`,
      "--key",
      `${pki.dir}/server.key`,
      "--ca",
      `${pki.dir}/ca.pem`,
      "--db",
      `sqlite:${work}/startup.db`,
      "--transcripts",
      `${work}/transcripts`,
    ]);
    const servePort = (line: string) => {
      try {
        const e = JSON.parse(line);
        return e.event === "LISTEN" ? Number(String(e.detail).split(":").pop()) : null;
      } catch {
        return null;
      }
    };
    const serveAccepted = (line: string) => line.includes('"CONNECT"');
    const minimalCmd = [Deno.execPath(), "run", "--quiet", "--allow-net", minimal];
    const minimalPort = (line: string) => line.startsWith("{") ? JSON.parse(line).port : null;
    const minimalAccepted = (line: string) => line === "accepted";
    const serveListen: number[] = [];
    const serveAccept: number[] = [];
    const minListen: number[] = [];
    const minAccept: number[] = [];
    for (let i = 0; i < reps; i++) {
      const [l, a] = await timeServer(serve, servePort, serveAccepted, work);
      serveListen.push(l);
      serveAccept.push(a);
      const [ml, ma] = await timeServer(minimalCmd, minimalPort, minimalAccepted, work);
      minListen.push(ml);
      minAccept.push(ma);
      await sleep(50);
    }
    const med = (xs: number[]) => percentile(xs, 50);
    return {
      title: "Startup",
      figures: [
        figure(
          "securechat --help (median)",
          med(helpMs),
          "ms",
          ref("deno run of an empty module", med(bareMs), "ms"),
        ),
        figure(
          "serve: spawn to LISTEN (median)",
          med(serveListen),
          "ms",
          ref("minimal Deno TCP server: spawn to listening", med(minListen), "ms"),
        ),
        figure(
          "serve: spawn to first accepted connection (median)",
          med(serveAccept),
          "ms",
          ref("minimal Deno TCP server: spawn to accept", med(minAccept), "ms"),
        ),
      ],
      details: {
        repetitions: reps,
        help_ms: helpMs.map((x) => round(x)),
        bare_ms: bareMs.map((x) => round(x)),
        serve_listen_ms: serveListen.map((x) => round(x)),
        serve_accept_ms: serveAccept.map((x) => round(x)),
        minimal_listen_ms: minListen.map((x) => round(x)),
        minimal_accept_ms: minAccept.map((x) => round(x)),
        note: "serve opens a fresh SQLite store each time; accepted = its CONNECT log line",
      },
    };
  } finally {
    await Deno.remove(work, { recursive: true });
    if (ownPki) await Deno.remove(pki.dir, { recursive: true });
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await run({ quick: Deno.args.includes("--quick") }), null, 2));
}
