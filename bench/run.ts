/**
 * The securechat benchmark suite (issue 7): signing, session setup, messages, scale,
 * verify, startup, cluster, reconnect storm, peer (against InspIRCd, issue 18), lobby (the author's
 * cost per line under sender keys, issue 13) — every figure beside a
 * reference measured in the same run, as a ratio. Setup and messages run with RSA-2048
 * (the default) and Ed25519 keys.
 * Prints a table and writes bench/results.json.
 *
 *   deno task bench            full run (several minutes: includes 10,000 sessions)
 *   deno task bench --quick    under a minute; what CI runs (checks the bench works)
 *   deno task bench --only setup,messages --out /tmp/r.json
 *   deno task bench --only peer --merge   re-measure one section, keep the others in the file
 */
import { parseArgs } from "node:util";
import { benchPkis, removePkis } from "./_pki.ts";
import { benchOptions, commandOutput, type Figure, type Section } from "./_util.ts";
import * as signing from "./signing_bench.ts";
import * as setup from "./setup_bench.ts";
import * as messages from "./message_bench.ts";
import * as scale from "./scale_bench.ts";
import * as startup from "./startup_bench.ts";
import * as cluster from "./cluster_bench.ts";
import * as storm from "./storm_bench.ts";
import * as peer from "./peer_bench.ts";
import * as lobby from "./lobby_bench.ts";
import { runVerifyBench } from "./verify_bench.ts";
import { figure, ref } from "./_util.ts";
import { type SectionName, SECTIONS } from "../testkit/bench_sections.ts";

const USAGE = `usage: deno task bench [--quick] [--only SECTION,...] [--out FILE] [--merge]

  --quick        a short run of every section: checks the bench works (what CI runs), not speed
  --only LIST    run only these sections, comma-separated: ${SECTIONS.join(", ")}
  --out FILE     write the results there (default bench/results.json)
  --merge        keep the sections of FILE this run does not measure
  --help         this text`;

const values = benchOptions(USAGE, () => {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      merge: { type: "boolean", default: false },
      out: { type: "string", default: new URL("./results.json", import.meta.url).pathname },
      help: { type: "boolean", default: false },
    },
  });
  const only = values.only?.split(",") ?? [...SECTIONS];
  // Checked before anything runs: a typo in the last name must not cost the sections before it.
  const unknown = only.filter((name) => !(SECTIONS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`unknown section ${unknown.join(", ")}`);
  return { ...values, only: only as SectionName[] };
});
const quick = values.quick;
const only = values.only;

async function verifySection(): Promise<Section> {
  const r = await runVerifyBench({
    messages: quick ? 1000 : 20000,
    alg: "rsa",
    concurrency: 32,
  });
  return {
    title: "Verify (offline transcript verification)",
    figures: [
      figure(
        `verify: messages verified/s (${r.messages}-line transcript)`,
        r.verify_messages_per_second,
        "messages/s",
        ref(
          "raw RSA-2048 verifications/s, 32 in flight",
          r.raw_signature_verifications_per_second_concurrent,
          "verifications/s",
        ),
      ),
      figure(
        "verify: messages verified/s",
        r.verify_messages_per_second,
        "messages/s",
        ref(
          "raw RSA-2048 verifications/s, sequential",
          r.raw_signature_verifications_per_second_sequential,
          "verifications/s",
        ),
      ),
    ],
    details: { ...r },
  };
}

const started = performance.now();
const pkis = await benchPkis(Array.from({ length: 8 }, (_, i) => `user${i + 1}`));
const sections: Partial<Record<SectionName, Section>> = {};
try {
  for (const name of only) {
    const t0 = performance.now();
    console.error(`bench: ${name}...`);
    switch (name) {
      case "signing":
        sections.signing = await signing.run({ quick }, pkis);
        break;
      case "setup":
        sections.setup = await setup.run({ quick }, pkis);
        break;
      case "messages":
        sections.messages = await messages.run({ quick }, pkis);
        break;
      case "scale":
        sections.scale = await scale.run({ quick });
        break;
      case "verify":
        sections.verify = await verifySection();
        break;
      case "startup":
        sections.startup = await startup.run({ quick }, pkis.rsa2048);
        break;
      case "cluster":
        sections.cluster = await cluster.run({ quick }, pkis);
        break;
      case "storm":
        sections.storm = await storm.run({ quick }, pkis);
        break;
      case "peer":
        sections.peer = await peer.run({ quick }, pkis.rsa2048);
        break;
      case "lobby":
        sections.lobby = await lobby.run({ quick });
        break;
    }
    sections[name]!.measured_at = new Date().toISOString();
    console.error(`bench: ${name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
} finally {
  await removePkis(pkis);
}

// --merge: the sections of this run replace theirs in the existing file; the others
// stay, each with its own measured_at.
const kept = values.merge
  ? JSON.parse(await Deno.readTextFile(values.out!).catch(() => "{}")).sections ?? {}
  : {};
const results = {
  machine: {
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    arch: Deno.build.arch,
    cpus: navigator.hardwareConcurrency,
    cpu_model: await cpuModel(),
    memory_bytes: Deno.systemMemoryInfo().total,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    openssl: await commandOutput("openssl", ["version"]),
  },
  date: new Date().toISOString(),
  quick,
  duration_seconds: Math.round((performance.now() - started) / 100) / 10,
  sections: { ...kept, ...sections } as Partial<Record<SectionName, Section>>,
};
await Deno.writeTextFile(values.out!, JSON.stringify(results, null, 2) + "\n");
printTable(sections);
console.log(`\nwrote ${values.out} (${results.duration_seconds} s${quick ? ", --quick" : ""})`);

async function cpuModel(): Promise<string | null> {
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    return info.match(/model name\s*:\s*(.*)/)?.[1] ?? null;
  } catch {
    return null;
  }
}

function fmt(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "-";
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  return x.toFixed(2);
}

function printTable(all: Partial<Record<SectionName, Section>>): void {
  for (const section of Object.values(all)) {
    if (!section) continue;
    console.log(`\n== ${section.title}`);
    if (section.skipped) {
      console.log(`SKIPPED: ${section.skipped}`);
      continue;
    }
    const rows = section.figures.map((f: Figure) => [
      f.name,
      `${fmt(f.value)} ${f.unit}`,
      f.reference ? `${f.reference.name}: ${fmt(f.reference.value)} ${f.reference.unit}` : "-",
      f.ratio === null ? "-" : Math.abs(f.ratio) >= 1 ? f.ratio.toFixed(3) : `${f.ratio}`,
      f.goal ?? "",
    ]);
    const head = ["figure", "value", "reference (same run)", "ratio", "goal"];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join(" | ").trimEnd();
    console.log(line(head));
    console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
    for (const r of rows) console.log(line(r));
  }
}
