/**
 * Lobby sender cost (issue 13: "1→50 costs the sender ≤ 2× of 1→1", once keys are
 * distributed). The author is a real `securechat connect` process; the other members are
 * end-to-end devices of lib/ (testkit/e2e_device.ts) in this process, behind a real `serve`.
 * After the author's sender chain went out (its first lobby lines), the figure is the author
 * process's CPU time (/proc: utime + stime) per lobby line with 50 other members, beside the
 * same with 1 other member, measured in this run. Under sender keys (PROTOCOL §12.5) a line
 * costs its author one chain step, one wrap and one signature whatever the lobby's size.
 *
 *   deno task bench --only lobby [--quick]
 */
import { join } from "node:path";
import { openUserStore } from "../lib/store/open.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { type DeviceClient, deviceLogin } from "../testkit/e2e_device.ts";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, logIs, pollUntil, ServerProcess } from "../testkit/server_process.ts";
import { cpuDuring } from "./_proc.ts";
import { figure, type Options, ref, round, type Section } from "./_util.ts";

const PASSWORD = "lobby-bench-password";

interface LobbyRun {
  members: number;
  lines: number;
  cpu_seconds: number;
  wall_seconds: number;
  cpu_ms_per_line: number;
}

export async function run(opts: Options): Promise<Section> {
  // Enough lines that the author's CPU is many 10 ms ticks, not a handful; --quick only checks
  // that the bench works, with a smaller lobby.
  const lines = opts.quick ? 200 : 1500;
  const many = opts.quick ? 5 : 50;
  const one = await authorCost(1, lines);
  const fifty = await authorCost(many, lines);
  return {
    title: "Lobby (sender keys: the author's cost per line)",
    figures: [
      figure(
        `lobby: author's CPU per line, ${many} other members`,
        fifty.cpu_ms_per_line,
        "ms",
        ref("the same, 1 other member", one.cpu_ms_per_line, "ms"),
        { goal: "≤ 2 (issue 13)" },
      ),
    ],
    details: {
      what: "CPU time of the author's `connect` process (Ed25519 certificates) over N lobby " +
        "lines after its sender chain was distributed, divided by N; every member received " +
        "every line before the second sample",
      one_member: one,
      many_members: fifty,
    },
  };
}

/** The author's CPU per lobby line with `members` other members (end-to-end devices). */
async function authorCost(members: number, lines: number): Promise<LobbyRun> {
  const names = Array.from({ length: members }, (_, i) => `member${i + 1}`);
  const pki = await makePki(["author", ...names], "ed25519");
  const workDir = await Deno.makeTempDir({ prefix: "securechat-lobby-bench-" });
  // Accounts straight into the server's store: no registration round trips to wait for.
  const store = await openUserStore({ url: `sqlite:${workDir}/t.db` });
  for (const username of ["author", ...names]) {
    await store.register({ email: `${username}@example.com`, username, password: PASSWORD });
  }
  await store.close();
  // The author sends as fast as it can: no per-user message rate in the way.
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    workDir,
    args: ["--message-rate", "100000"],
  });
  const devices: DeviceClient[] = [];
  let author: LiveClient | undefined;
  try {
    for (const user of names) {
      const mark = server.mark();
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      devices.push(
        await deviceLogin(new FrameConnection(tcp), {
          pki,
          user,
          password: PASSWORD,
          transcriptDir: join(workDir, `${user}-transcripts`),
        }),
      );
      await server.waitFor(logIs("KEYS_PUBLISHED", { user }), 20_000, mark);
    }
    author = await LiveClient.login({
      port: server.port,
      user: "author",
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: join(workDir, "author-transcripts"),
    }, 30_000);
    const everyoneHas = (text: string) =>
      pollUntil(
        () =>
          // Lines arrive in the author's order: the last thing each member got.
          devices.every((d) => {
              const last = d.received.at(-1);
              return last?.type === "relay" && last.relayed.text === text;
            })
            ? true
            : undefined,
        120_000,
        () => `not every member received ${JSON.stringify(text)}`,
      );
    // The first line sends the sender chain to each member (PROTOCOL §12.5); a few more warm
    // the author up.
    for (let i = 1; i <= 5; i++) await author.send(`warm-up ${i}`);
    await everyoneHas("warm-up 5");
    const measured = await cpuDuring(author.child.pid, async () => {
      for (let i = 1; i <= lines; i++) await author!.send(`line ${i}`);
      await everyoneHas(`line ${lines}`);
    });
    const refused = author.stderr.find((l) => l.includes("refused by the server"));
    if (refused) throw new Error(`the bench's own lines were refused: ${refused}`);
    return {
      members,
      lines,
      cpu_seconds: round(measured.cpuSeconds),
      wall_seconds: round(measured.wallSeconds),
      cpu_ms_per_line: round((measured.cpuSeconds * 1000) / lines, 4),
    };
  } finally {
    await author?.end().catch(() => {});
    for (const d of devices) {
      await d.session.close().catch(() => {});
      await d.running; // its receipts written before the directory goes
    }
    await server.dispose();
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
}
