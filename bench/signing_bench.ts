/**
 * Signing speed (issue 7): what bounds session setup and messages. One signature in
 * Deno (lib/crypto/signature.ts, i.e. WebCrypto) against OpenSSL's own rate for the same
 * key type (`openssl speed`), both measured in this run, for RSA-2048 and Ed25519. Also
 * Deno's node:crypto `sign()` (synchronous), to show whether switching API would help.
 *
 *   deno run -A bench/signing_bench.ts [--quick]
 */
import { createPrivateKey, sign as nodeSign } from "node:crypto";
import { randomBytes } from "../lib/bytes.ts";
import { sign, verify, verifyNow } from "../lib/crypto/signature.ts";
import { importVerifyingKeySpki } from "../lib/crypto/signature.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { BENCH_KEY_TYPES, benchPkis, type Pkis, removePkis } from "./_pki.ts";
import {
  figure,
  opensslSignRate,
  type Options,
  rateOf,
  ref,
  round,
  type Section,
  timeOp,
} from "./_util.ts";

/** Synchronous calls of `op` for about `ms`; calls per second. */
function syncRate(op: () => unknown, ms: number): number {
  op();
  let n = 0;
  const start = performance.now();
  while (n < 5 || performance.now() - start < ms) {
    op();
    n++;
  }
  return n / ((performance.now() - start) / 1000);
}

export async function run(opts: Options, pkis: Pkis): Promise<Section> {
  const ms = opts.quick ? 150 : 1500;
  const opensslSeconds = opts.quick ? 1 : 2;
  const digest = randomBytes(32);
  const figures = [];
  const details: Record<string, unknown> = {
    what: "one signature over a 32-byte digest input; Deno = lib/crypto/signature.ts (WebCrypto)",
    openssl_seconds: opensslSeconds,
  };
  for (const kt of BENCH_KEY_TYPES) {
    const pki = pkis[kt.type];
    const id = await pki.identity("user1");
    const pub = await importVerifyingKeySpki(parseCertificate(id.certDer).spki);
    const sig = await sign(id.signingKey, digest);
    const signMs = await timeOp(() => sign(id.signingKey, digest), ms);
    const signParallel = await rateOf(() => sign(id.signingKey, digest), 32, ms);
    const verifyMs = await timeOp(() => verify(pub, digest, sig), ms);
    // The server's path for a user's batch signature (PROTOCOL §6.3): synchronous where it can be.
    const verifyNowMs = await timeOp(() => verifyNow(pub, digest, sig), ms);
    const nodeKey = createPrivateKey(await Deno.readTextFile(`${pki.dir}/user1.key`));
    const nodeAlg = kt.type === "ed25519" ? null : "sha256";
    const nodeRate = syncRate(() => nodeSign(nodeAlg, digest, nodeKey), ms);
    const ossl = await opensslSignRate(kt.type, opensslSeconds);
    const osslRef = ossl
      ? ref(`${ossl.command}: sign/s (1 core)`, ossl.signPerSecond, "signatures/s")
      : null;
    const noRef = ossl ? {} : { note: "openssl not found: no OpenSSL reference" };
    figures.push(
      figure(
        `${kt.label}: Deno sign/s, sequential (lib, WebCrypto)`,
        1000 / signMs,
        "signatures/s",
        osslRef,
        noRef,
      ),
      figure(
        `${kt.label}: Deno sign/s, 32 in flight (all cores)`,
        signParallel,
        "signatures/s",
        osslRef,
        noRef,
      ),
      figure(
        `${kt.label}: Deno node:crypto sign/s (synchronous)`,
        nodeRate,
        "signatures/s",
        osslRef,
        noRef,
      ),
    );
    details[kt.type] = {
      deno_sign_ms: round(signMs, 4),
      deno_sign_per_s_sequential: round(1000 / signMs),
      deno_sign_per_s_32_in_flight: round(signParallel),
      deno_verify_ms: round(verifyMs, 4),
      deno_verify_now_ms: round(verifyNowMs, 4),
      deno_node_crypto_sign_per_s: round(nodeRate),
      openssl_sign_per_s: ossl?.signPerSecond ?? null,
      openssl_verify_per_s: ossl?.verifyPerSecond ?? null,
      openssl_command: ossl?.command ?? "openssl not found",
    };
  }
  return { title: "Signing (Deno vs OpenSSL, same keys, same run)", figures, details };
}

if (import.meta.main) {
  const pkis = await benchPkis(["user1"]);
  try {
    console.log(JSON.stringify(await run({ quick: Deno.args.includes("--quick") }, pkis), null, 2));
  } finally {
    await removePkis(pkis);
  }
}
