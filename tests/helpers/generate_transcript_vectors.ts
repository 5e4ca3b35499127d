/**
 * Writes tests/vectors/transcript/golden.*: a real v2 client transcript (Ed25519
 * certificates valid only during 2020, session time 2020-06-01, relays from a second
 * user) with both receipts and its `.keys`, and golden.json whose transcript_sha256
 * comes from the independent Python implementation (transcript_hash_v2.py).
 *
 *   deno run -A tests/helpers/generate_transcript_vectors.ts
 *
 * A script, not part of the test suite; every run makes new keys, so commit its output.
 */
import { join } from "node:path";
import { makePki, writeSession } from "../../testkit/transcript_fixtures.ts";

const out = new URL("../vectors/transcript/", import.meta.url).pathname;
const pki = await makePki({
  alg: "ed25519",
  notBefore: "20200101000000Z",
  notAfter: "20210101000000Z",
  others: ["bob"],
});
const work = await Deno.makeTempDir({ prefix: "sc-golden-" });
const s = await writeSession(pki, {
  dir: work,
  messages: 6,
  startedAt: Date.UTC(2020, 5, 1),
  relayAuthor: pki.others[0],
});
const base = s.logPath.replace(/\.log$/, "");
for (
  const [from, to] of [
    [`${base}.log`, "golden.log"],
    [`${base}.receipt.json`, "golden.receipt.json"],
    [`${base}.peer-receipt.json`, "golden.peer-receipt.json"],
    [`${base}.keys`, "golden.keys"],
    [pki.caPath, "golden_ca.pem"],
  ]
) await Deno.copyFile(from, join(out, to));
const python = await new Deno.Command("python3", {
  args: [join(out, "transcript_hash_v2.py"), "log", join(out, "golden.log")],
  stdout: "piped",
}).output();
const hash = new TextDecoder().decode(python.stdout).trim();
if (hash !== s.ownReceipt!.transcript_sha256) throw new Error(`Python says ${hash}`);
await Deno.writeTextFile(
  join(out, "golden.json"),
  JSON.stringify(
    {
      description: "A real v2 client transcript (Ed25519 certificates valid only during 2020, " +
        "session time 2020-06-01, two relays from bob) with both receipts and its .keys; " +
        "transcript_sha256 recomputed independently in Python (transcript_hash_v2.py)",
      ca: "golden_ca.pem",
      log: "golden.log",
      receipts: ["golden.receipt.json", "golden.peer-receipt.json"],
      keys: "golden.keys",
      c2s: 3,
      s2c: 3,
      transcript_sha256: hash,
    },
    null,
    2,
  ) + "\n",
);
await Deno.remove(work, { recursive: true });
await Deno.remove(pki.dir, { recursive: true });
console.log(`golden transcript written, transcript_sha256 ${hash}`);
