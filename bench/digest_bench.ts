/**
 * What a digest's array costs (session 24): in Deno 2.9 every typed array, whatever its size, is a
 * native backing store V8 allocates, zeroes, counts as external and sweeps; a view of a slab is a
 * small object on V8's heap. Same run, same process: a fresh 32-byte array beside a view of a
 * shared slab (lib/bytes.ts ByteSlab), then libcrypto's SHA-256 of a lobby record's `ct` (140
 * bytes) into each, then a goal-row msg's hashing as the server does it (32 leaves and their root:
 * lib/message/record.ts leafHash, groupRoot), whose digests come from the slab.
 *
 *   deno run -A bench/digest_bench.ts [--rounds 8]
 *
 * Prints one JSON object on stdout: the best process CPU (every thread: V8 sweeps the arrays on
 * its helpers) in ns per call, µs per msg for the msg's hashing, over the rounds, the first two
 * warm-up.
 */
import { parseArgs } from "node:util";
import { ByteSlab, randomBytes } from "../lib/bytes.ts";
import { libcrypto } from "../lib/crypto/libcrypto.ts";
import { OpenSslSymmetric } from "../lib/crypto/openssl_symmetric.ts";
import { groupRoot, leafHash, LOBBY, type MessageRecord } from "../lib/message/record.ts";
import { cpuPerCall } from "./_util.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "8" } } });
const rounds = Number(values.rounds);
const opened = libcrypto();
if ("reason" in opened) throw new Error(`digest_bench: libcrypto: ${opened.reason}`);
const native = new OpenSslSymmetric(opened);
const slab = new ByteSlab(1024);
const ct = randomBytes(140);
const records: MessageRecord[] = Array.from({ length: 32 }, (_, j) => ({
  sid: "0f".repeat(16),
  dir: "c2s",
  to: LOBBY,
  seqno: 1000 + j,
  ts: 1_796_000_000_000 + j,
  ct: randomBytes(140),
  c: randomBytes(32),
}));
const indices = records.map((_, j) => j);

let kept: unknown;
const CALLS = 200_000;
const MSGS = 2000;
/** Each figure's measurement, in its unit: ns per call, µs per msg. */
const figures: Record<string, () => number> = {
  fresh_array_ns: () => 1000 * cpuPerCall(() => kept = new Uint8Array(32), CALLS),
  slab_view_ns: () => 1000 * cpuPerCall(() => kept = slab.take(32), CALLS),
  sha256_fresh_ns: () => 1000 * cpuPerCall(() => kept = native.sha256([ct]), CALLS),
  sha256_slab_ns: () => 1000 * cpuPerCall(() => kept = native.sha256([ct], slab.take(32)), CALLS),
  msg_hashing_us: () =>
    cpuPerCall(() => kept = groupRoot(records.map(leafHash), indices, 32, []), MSGS),
};
const best: Record<string, number> = {};
for (let round = 0; round < rounds; round++) {
  for (const [name, measure] of Object.entries(figures)) {
    const value = measure();
    if (round >= 2) best[name] = Math.min(best[name] ?? Infinity, value);
  }
}
if (kept === undefined) throw new Error("digest_bench: nothing was made");
console.log(JSON.stringify(
  Object.fromEntries(Object.entries(best).map(([name, value]) => [name, Number(value.toFixed(1))])),
));
