/**
 * What the server pays per author batch for its signature (PROTOCOL §6.3: one verification per
 * user's msg batch), RSA-2048 against Ed25519, through the path the server takes (verifyNow:
 * libcrypto's RSA public operation, node:crypto's Ed25519), on a batch statement's size; and
 * what signing one costs the sender, for the ratio. Session 22: why the Ed25519 relay row costs
 * the server more than RSA's. A figure, never an assertion.
 *
 *   deno run -A bench/batch_verify_bench.ts [--n 20000] [--rounds 5]
 */
import { parseArgs } from "node:util";
import { randomBytes } from "../lib/bytes.ts";
import { importVerifyingKeySpki, sign, verifyNow } from "../lib/crypto/signature.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { ed25519Pki, rsaPki, type TestPki } from "./_pki.ts";

const args = parseArgs({
  args: Deno.args,
  options: { n: { type: "string", default: "20000" }, rounds: { type: "string", default: "5" } },
});
const n = Number(args.values.n);
const rounds = Number(args.values.rounds);

async function costs(pki: TestPki) {
  const id = await pki.identity("user1");
  const key = await importVerifyingKeySpki(parseCertificate(id.certDer).spki);
  // A batch statement: a fixed prefix, sid, first, n and the 32-byte root (about 80 bytes).
  const data = randomBytes(80);
  const sig = await sign(id.signingKey, data);
  const time = async (op: () => unknown) => {
    for (let i = 0; i < n / 10; i++) await op(); // warm
    const t = performance.now();
    for (let i = 0; i < n; i++) await op();
    return ((performance.now() - t) / n) * 1000;
  };
  return {
    verify_us: await time(() => {
      if (verifyNow(key, data, sig) !== true) throw new Error("verify failed");
    }),
    sign_us: await time(() => sign(id.signingKey, data)),
  };
}

const rsa = await rsaPki(["user1"]);
const ed = await ed25519Pki(["user1"]);
try {
  for (let r = 1; r <= rounds; r++) {
    const a = await costs(rsa);
    const b = await costs(ed);
    const round2 = (x: number) => Math.round(x * 100) / 100;
    console.log(JSON.stringify({
      round: r,
      rsa_verify_us: round2(a.verify_us),
      ed25519_verify_us: round2(b.verify_us),
      rsa_sign_us: round2(a.sign_us),
      ed25519_sign_us: round2(b.sign_us),
    }));
  }
} finally {
  await Deno.remove(rsa.dir, { recursive: true });
  await Deno.remove(ed.dir, { recursive: true });
}
