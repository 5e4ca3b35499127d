/**
 * verify throughput next to the raw signature-verification rate, measured in the
 * same run with the same keys (RSA-2048 by default, the project's default key).
 *
 *   deno run --allow-all bench/verify_bench.ts [--messages 20000] [--alg rsa|p256|ed25519]
 *
 * Prints one JSON object on stdout.
 */
import { parseArgs } from "node:util";
import { randomBytes } from "../lib/bytes.ts";
import { importVerifyingKeySpki, sign, verify } from "../lib/crypto/signature.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { type KeyAlg, makePki, writeSession } from "../testkit/transcript_fixtures.ts";

export interface VerifyBenchOptions {
  messages: number;
  alg: KeyAlg;
  concurrency: number;
}

export interface VerifyBenchResult {
  alg: KeyAlg;
  messages: number;
  concurrency: number;
  cpus: number;
  transcript_bytes: number;
  verify_seconds: number;
  verify_messages_per_second: number;
  raw_signature_verifications_per_second_sequential: number;
  raw_signature_verifications_per_second_concurrent: number;
  verify_vs_raw_concurrent: number;
  deno: string;
}

/** Writes a transcript of `messages` lines, verifies it, and times the raw verify rate beside it. */
export async function runVerifyBench(
  { messages: n, alg, concurrency }: VerifyBenchOptions,
): Promise<VerifyBenchResult> {
  const pki = await makePki({ alg });
  const dir = await Deno.makeTempDir({ prefix: "sc-bench-" });
  const session = await writeSession(pki, { dir, messages: n, receipts: "own", batch: 1000 });
  const trust = await TrustStore.fromPem(pki.caPem);

  // Raw rate: the same verify() over 32-byte digests, sequential and with the same
  // concurrency window verify uses.
  const key = await importVerifyingKeySpki(parseCertificate(pki.client.certDer).spki);
  const samples = await Promise.all(
    Array.from({ length: 512 }, async () => {
      const digest = randomBytes(160); // a record statement's size
      return { digest, sig: await sign(pki.client.signer, digest) };
    }),
  );
  const rawN = Math.min(n, 20_000);
  let t = performance.now();
  for (let i = 0; i < rawN; i++) {
    const s = samples[i % samples.length];
    if (!await verify(key, s.digest, s.sig)) throw new Error("raw verify failed");
  }
  const rawSequential = rawN / ((performance.now() - t) / 1000);
  t = performance.now();
  const inFlight = new Set<Promise<unknown>>();
  for (let i = 0; i < rawN; i++) {
    const s = samples[i % samples.length];
    const p = verify(key, s.digest, s.sig).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= concurrency) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  const rawConcurrent = rawN / ((performance.now() - t) / 1000);

  t = performance.now();
  const report = await verifyTranscript(session.logPath, { trust, concurrency });
  const seconds = (performance.now() - t) / 1000;
  if (!report.ok) throw new Error(`bench transcript did not verify: ${report.reason}`);

  const result: VerifyBenchResult = {
    alg,
    messages: n,
    concurrency,
    cpus: navigator.hardwareConcurrency,
    transcript_bytes: (await Deno.stat(session.logPath)).size,
    verify_seconds: Number(seconds.toFixed(3)),
    verify_messages_per_second: Math.round(n / seconds),
    raw_signature_verifications_per_second_sequential: Math.round(rawSequential),
    raw_signature_verifications_per_second_concurrent: Math.round(rawConcurrent),
    verify_vs_raw_concurrent: Number(((n / seconds) / rawConcurrent).toFixed(3)),
    deno: Deno.version.deno,
  };
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(pki.dir, { recursive: true });
  return result;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      messages: { type: "string", default: "20000" },
      alg: { type: "string", default: "rsa" },
      concurrency: { type: "string", default: "32" },
    },
  });
  const result = await runVerifyBench({
    messages: Number(values.messages),
    alg: values.alg as KeyAlg,
    concurrency: Number(values.concurrency),
  });
  console.log(JSON.stringify(result, null, 2));
}
