/**
 * What one yield of lib/turn.ts costs (nextTurn: a server yields at the end of every turn that
 * made records, and when a turn's budget is spent), in CPU time of this process over all its
 * threads (schedstat, ns: V8's helpers free what a yield leaves behind), beside a yield on a
 * fresh MessageChannel each time, as nextTurn yielded until session 14. Rounds alternate the two;
 * Node's MessageChannel is the global one, as in `serve` and `connect` (any npm package loads
 * Deno's Node compatibility, which replaces it).
 *
 *   deno run -A bench/yield_bench.ts [--yields N] [--rounds N]
 */
import "node:worker_threads";
import { parseArgs } from "node:util";
import { nextTurn } from "../lib/turn.ts";
import { threadCpu } from "./_proc.ts";
import { percentile, round } from "./_util.ts";

/** A yield as nextTurn made it before: a channel of its own, closed once its message came. */
function freshChannelYield(): Promise<void> {
  return new Promise((resolve) => {
    const { port1, port2 } = new MessageChannel();
    port1.addEventListener("message", () => {
      port1.close();
      port2.close();
      resolve();
    }, { once: true });
    port1.start();
    port2.postMessage(null);
  });
}

async function cpuSeconds(): Promise<number> {
  return Object.values(await threadCpu(Deno.pid)).reduce((a, b) => a + b, 0);
}

/** CPU µs per yield over `n` yields, one after another (as a busy server's turns). */
async function perYield(yieldOnce: () => Promise<void>, n: number): Promise<number> {
  const before = await cpuSeconds();
  for (let i = 0; i < n; i++) await yieldOnce();
  return ((await cpuSeconds() - before) / n) * 1e6;
}

if (import.meta.main) {
  const args = parseArgs({
    args: Deno.args,
    options: {
      yields: { type: "string", default: "20000" },
      rounds: { type: "string", default: "5" },
    },
  }).values;
  const n = Number(args.yields);
  const ways = { next_turn: nextTurn, fresh_channel: freshChannelYield };
  const samples: Record<string, number[]> = { next_turn: [], fresh_channel: [] };
  for (const f of Object.values(ways)) await perYield(f, 2000); // the JIT compiles both first
  for (let r = 0; r < Number(args.rounds); r++) {
    for (const [name, f] of Object.entries(ways)) {
      samples[name].push(round(await perYield(f, n), 2));
    }
  }
  console.log(JSON.stringify(
    {
      cpu_us_per_yield: samples,
      median: Object.fromEntries(
        Object.entries(samples).map(([name, s]) => [name, round(percentile(s, 50), 2)]),
      ),
      yields_per_round: n,
    },
    null,
    2,
  ));
}
