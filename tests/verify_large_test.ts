/**
 * A 100,000-message transcript verifies (streamed, bounded concurrency). Ed25519
 * keys keep generation fast; the time is printed, never asserted.
 */
import assert from "node:assert/strict";
import { TrustStore } from "../lib/pki/validate.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { makePki, writeSession } from "../testkit/transcript_fixtures.ts";

const N = 100_000;

Deno.test(`verify: a ${N.toLocaleString("en")}-message transcript`, async () => {
  const pki = await makePki({ alg: "ed25519" });
  const dir = await Deno.makeTempDir({ prefix: "sc-large-" });
  let t = performance.now();
  const s = await writeSession(pki, { dir, messages: N, receipts: "own", batch: 2000 });
  const written = performance.now() - t;
  t = performance.now();
  const report = await verifyTranscript(s.logPath, { trust: await TrustStore.fromPem(pki.caPem) });
  const checked = performance.now() - t;
  assert.equal(report.ok, true, report.reason ?? "");
  assert.deepEqual(report.confirmedBy, ["client"]);
  assert.deepEqual(report.messages, { c2s: N / 2, s2c: N / 2 });
  const size = (await Deno.stat(s.logPath)).size;
  console.log(
    `  wrote ${N} signed lines (${(size / 1e6).toFixed(1)} MB) in ${
      (written / 1000).toFixed(1)
    } s; ` +
      `verified in ${(checked / 1000).toFixed(1)} s (${Math.round(N / (checked / 1000))} msg/s)`,
  );
  await Deno.remove(dir, { recursive: true });
});
