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
import process from "node:process";
import { ByteSlab, randomBytes } from "../lib/bytes.ts";
import { libcrypto } from "../lib/crypto/libcrypto.ts";
import { OpenSslSymmetric } from "../lib/crypto/openssl_symmetric.ts";
import { groupRoot, leafHash, LOBBY, type MessageRecord } from "../lib/message/record.ts";

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

/** Process CPU µs since `before`. */
function cpuMicros(before: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(before);
  return used.user + used.system;
}

let kept: unknown;
const perCall = {
  fresh_array_ns: () => kept = new Uint8Array(32),
  slab_view_ns: () => kept = slab.take(32),
  sha256_fresh_ns: () => kept = native.sha256([ct], new Uint8Array(32)),
  sha256_slab_ns: () => kept = native.sha256([ct], slab.take(32)),
};
const best: Record<string, number> = {};
for (let round = 0; round < rounds; round++) {
  for (const [name, call] of Object.entries(perCall)) {
    const n = 200_000;
    const before = process.cpuUsage();
    for (let i = 0; i < n; i++) call();
    const ns = cpuMicros(before) * 1000 / n;
    if (round >= 2) best[name] = Math.min(best[name] ?? Infinity, ns);
  }
  const n = 2000;
  const before = process.cpuUsage();
  for (let i = 0; i < n; i++) kept = groupRoot(records.map(leafHash), indices, 32, []);
  const us = cpuMicros(before) / n;
  if (round >= 2) best.msg_hashing_us = Math.min(best.msg_hashing_us ?? Infinity, us);
}
if (kept === undefined) throw new Error("digest_bench: nothing was made");
console.log(JSON.stringify(
  Object.fromEntries(Object.entries(best).map(([name, value]) => [name, Number(value.toFixed(1))])),
));
