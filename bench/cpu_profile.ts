/**
 * Where a V8 CPU profile's time goes (`deno run --cpu-prof` writes one at exit):
 * self time by function and by area of the code (our lib/ directories, zod, Deno's
 * crypto and I/O bindings, GC, idle). It sees the JavaScript thread only: work a
 * binding hands to another thread (WebCrypto's sign and verify) shows as that
 * thread's CPU in /proc (bench/_proc.ts threadCpu), not here.
 *
 *   deno run -A bench/cpu_profile.ts <file.cpuprofile> [--top N]
 */
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Sampled milliseconds, idle excluded. */
  busyMs: number;
  idleMs: number;
  areas: { area: string; ms: number; share: number }[];
  functions: { fn: string; area: string; ms: number; share: number }[];
}

/** The first matching rule names a frame's area; order matters (most specific first). */
const AREAS: [RegExp, string][] = [
  [/^\((garbage collector)\)$/, "GC"],
  [/^\(idle\)$/, "idle"],
  [/^\((program|root)\)$/, "V8 runtime / natives"],
  [/\/lib\/transcript\//, "lib/transcript (transcript writes)"],
  [/\/lib\/wire\//, "lib/wire (framing, JSON, schemas)"],
  [/\/lib\/session\//, "lib/session (message layer)"],
  [/\/lib\/server\//, "lib/server (lobby, admission)"],
  [/\/lib\/handshake\//, "lib/handshake"],
  [/\/lib\/crypto\//, "lib/crypto (wrappers)"],
  [/\/lib\/pki\/|@peculiar|asn1|pvtsutils|tslib/, "certificate parsing/validation"],
  [/\/lib\/bytes\.ts|\/lib\/der\.ts/, "lib/bytes, lib/der (base64, DER)"],
  [/\/lib\//, "lib (other)"],
  [/zod/, "zod (schema validation)"],
  [/ext:deno_crypto|node\/internal\/crypto|ext:deno_node\/.*crypto/, "Deno crypto bindings"],
  [/ext:deno_(net|node|web|io)|ext:core|ext:runtime/, "Deno I/O, streams, timers"],
];

/** Frames without a URL are V8's own: builtins (JSON, typed arrays), GC, idle. */
function areaOf({ functionName, url }: ProfileNode["callFrame"]): string {
  const subject = url || functionName;
  for (const [re, area] of AREAS) if (re.test(subject)) return area;
  return url ? "other" : "V8 builtins (JSON, typed arrays, ...)";
}

export function summarize(profile: CpuProfile, top = 25): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const areas = new Map<string, number>();
  const functions = new Map<string, { area: string; us: number }>();
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    const area = areaOf(frame);
    if (area === "idle") {
      idleUs += us;
      continue;
    }
    areas.set(area, (areas.get(area) ?? 0) + us);
    const file = frame.url.replace(/^.*\/(lib|bench|tests|npm|node_modules)\//, "$1/");
    const fn = `${frame.functionName || "(anonymous)"} ${file}:${frame.lineNumber + 1}`;
    const entry = functions.get(fn) ?? { area, us: 0 };
    entry.us += us;
    functions.set(fn, entry);
  }
  const busyUs = [...areas.values()].reduce((a, b) => a + b, 0);
  const share = (us: number) => Math.round((us / busyUs) * 1000) / 10;
  return {
    busyMs: Math.round(busyUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    areas: [...areas].sort((a, b) => b[1] - a[1]).map(([area, us]) => ({
      area,
      ms: Math.round(us / 1000),
      share: share(us),
    })),
    functions: [...functions].sort((a, b) => b[1].us - a[1].us).slice(0, top).map((
      [fn, { area, us }],
    ) => ({ fn, area, ms: Math.round(us / 1000), share: share(us) })),
  };
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { top: { type: "string", default: "25" } },
  });
  if (positionals.length !== 1) {
    console.error("usage: deno run -A bench/cpu_profile.ts <file.cpuprofile> [--top N]");
    Deno.exit(2);
  }
  const profile = JSON.parse(await Deno.readTextFile(positionals[0])) as CpuProfile;
  const s = summarize(profile, Number(values.top));
  console.log(`busy ${s.busyMs} ms, idle ${s.idleMs} ms (JavaScript thread)`);
  for (const a of s.areas) console.log(`${String(a.share).padStart(5)}%  ${a.ms} ms  ${a.area}`);
  console.log("");
  for (const f of s.functions) {
    console.log(`${String(f.share).padStart(5)}%  ${f.ms} ms  ${f.fn}  [${f.area}]`);
  }
}
