/**
 * The long fuzz run (issue 8): `deno task fuzz --seconds 300 [--seed N] [--workers 4]`.
 * Splits the time between the frame reader, every schema and a live in-process server
 * (see testkit/fuzz.ts), prints the seed first and the outcome counts and memory
 * at the end. Exits 1 on any failure; an unhandled rejection kills the process (exit 1).
 * Replay: `--seed N` or SECURECHAT_FUZZ_SEED=N.
 */
import { parseArgs } from "node:util";
import {
  formatStats,
  fuzzFrameReaderOnce,
  fuzzSchemasOnce,
  fuzzSeed,
  fuzzServerLoop,
  memorySample,
  MiB,
  Rng,
  startFuzzServer,
  type Stats,
} from "../testkit/fuzz.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "60" },
    seed: { type: "string" },
    workers: { type: "string", default: "4" },
  },
});
const seconds = Number(values.seconds);
const workers = Number(values.workers);
if (!(seconds > 0) || !(workers >= 1)) {
  console.error("usage: deno task fuzz [--seconds N] [--seed U32] [--workers N]");
  Deno.exit(2);
}
const seed = fuzzSeed(values.seed);
console.log(`fuzz seed ${seed} (replay: --seed ${seed}); ${seconds} s, ${workers} live workers`);

const slice = (seconds * 1000) / 4;
let failed = false;

async function phase(name: string, ms: number, body: (rng: Rng, stats: Stats) => unknown) {
  const rng = new Rng(seed ^ [...name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7));
  const stats: Stats = {};
  const start = Date.now();
  let n = 0;
  try {
    while (Date.now() - start < ms) {
      await body(rng, stats);
      n++;
    }
    console.log(`${name}: ${n} cases ok; ${formatStats(stats).slice(0, 600)}`);
  } catch (error) {
    failed = true;
    console.error(`${name}: FAILED after ${n} cases (seed ${seed}):`, error);
  }
}

await phase("frame reader", slice, (rng, stats) => fuzzFrameReaderOnce(rng, stats));
await phase("schemas", slice, (rng, stats) => fuzzSchemasOnce(rng, stats));

const fs = await startFuzzServer([
  ...Array.from({ length: workers }, (_, i) => `fuzz${i}`),
  "bob",
  "carol",
]);
try {
  const bob = await fs.login("bob");
  const rng = new Rng(seed ^ 0x11fe);
  const before = await memorySample();
  const start = Date.now();
  const samples: string[] = [];
  let nextSample = start + 30_000;
  const result = await fuzzServerLoop(
    rng,
    fs,
    workers,
    () => Date.now() - start > slice * 2,
    () => {
      if (Date.now() > nextSample) {
        nextSample += 30_000;
        const { heapUsed, rss } = Deno.memoryUsage();
        samples.push(
          `${Math.round((Date.now() - start) / 1000)}s heap ${(heapUsed / MiB).toFixed(0)} rss ${
            (rss / MiB).toFixed(0)
          }`,
        );
      }
    },
  ).catch((error) => {
    failed = true;
    console.error(`live server: FAILED (seed ${seed}):`, error);
    return undefined;
  });
  const after = await memorySample();
  if (result) {
    console.log(
      `live server: ${result.done} connections, ${result.closedByServer} closed by the server; ${
        formatStats(result.stats)
      }`,
    );
  }
  console.log(
    `memory (MiB): heap ${(before.heapUsed / MiB).toFixed(1)} -> ${
      (after.heapUsed / MiB).toFixed(1)
    }, rss ${(before.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)}${
      samples.length ? `; samples: ${samples.join(", ")}` : ""
    }`,
  );
  if (after.heapUsed - before.heapUsed > 128 * MiB) {
    failed = true;
    console.error("heap grew by more than 128 MiB");
  }
  if (fs.logs.some((e) => e.event === "INTERNAL")) {
    failed = true;
    console.error("INTERNAL logged:", fs.logs.filter((e) => e.event === "INTERNAL"));
  }
  const carol = await fs.login("carol");
  await carol.session.send({ kind: "text", text: "after the fuzz" });
  await bob.waitFor((m) => m.kind === "relay" && m.text === "after the fuzz");
  const ends = [await carol.finish(), await bob.finish()];
  if (ends.some((e) => e.outcome !== "closed")) {
    failed = true;
    console.error("honest sessions did not close cleanly:", ends);
  } else {
    console.log("honest login after the fuzz: ok; bystander session: ok");
  }
} finally {
  await fs.dispose();
}
console.log(failed ? `FAILED (seed ${seed})` : `PASSED (seed ${seed})`);
Deno.exit(failed ? 1 : 0);
