/**
 * What one yield of lib/turn.ts costs (nextTurn: a server yields at the end of every turn that
 * made records, and when a turn's budget is spent), in CPU time of this process over all its
 * threads (schedstat, ns: V8's helpers free what a yield leaves behind), beside a message on one
 * kept MessageChannel, as nextTurn yielded in sessions 14–17; and how many yields of each run
 * before a read that became ready as they started completes (the runtime learns of it only when
 * it polls I/O). Rounds alternate the two; Node's MessageChannel is the global one, as in `serve`
 * and `connect` (any npm package loads Deno's Node compatibility, which replaces it).
 *
 *   deno run -A bench/yield_bench.ts [--yields N] [--rounds N]
 */
import "node:worker_threads";
import { parseArgs } from "node:util";
import { nextTurn } from "../lib/turn.ts";
import { threadCpu } from "./_proc.ts";
import { percentile, round } from "./_util.ts";

type Port = MessagePort & { ref?(): void; unref?(): void };
let kept: { in: Port; out: Port; waiting: (() => void)[] } | undefined;

/** A yield as nextTurn made it in sessions 14–17: a message on one kept channel. */
function keptChannelYield(): Promise<void> {
  if (!kept) {
    const { port1, port2 } = new MessageChannel();
    const waiting: (() => void)[] = [];
    port1.addEventListener("message", () => {
      waiting.shift()!();
      if (waiting.length === 0) (port1 as Port).unref?.();
    });
    port1.start();
    kept = { in: port1, out: port2, waiting };
  }
  const channel = kept;
  return new Promise((resolve) => {
    if (channel.waiting.push(resolve) === 1) channel.in.ref?.();
    channel.out.postMessage(null);
  });
}

/** Yields run before a read of data written just before them completes, `rounds` times. */
async function yieldsBeforeRead(yieldOnce: () => Promise<void>, rounds: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [a, b] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
  ]);
  const counts: number[] = [];
  for (let r = 0; r < rounds; r++) {
    await b.write(new Uint8Array(8));
    let yields = 0;
    let readAfter = -1;
    const read = a.read(new Uint8Array(64)).then(() => readAfter = yields);
    while (readAfter < 0) {
      await yieldOnce();
      yields++;
    }
    await read;
    counts.push(readAfter);
  }
  a.close();
  b.close();
  listener.close();
  return counts;
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
  const ways = { next_turn: nextTurn, kept_channel: keptChannelYield };
  const samples: Record<string, number[]> = { next_turn: [], kept_channel: [] };
  const beforeRead: Record<string, number[]> = { next_turn: [], kept_channel: [] };
  for (const f of Object.values(ways)) await perYield(f, 2000); // the JIT compiles both first
  for (let r = 0; r < Number(args.rounds); r++) {
    for (const [name, f] of Object.entries(ways)) {
      samples[name].push(round(await perYield(f, n), 2));
      beforeRead[name].push(...await yieldsBeforeRead(f, 3));
    }
  }
  console.log(JSON.stringify(
    {
      cpu_us_per_yield: samples,
      median: Object.fromEntries(
        Object.entries(samples).map(([name, s]) => [name, round(percentile(s, 50), 2)]),
      ),
      yields_per_round: n,
      yields_before_a_ready_read: beforeRead,
    },
    null,
    2,
  ));
}
