/**
 * lib/crypto/mlkem.ts: both backends behind the same checks, interoperating.
 * The Wycheproof vectors (tests/wycheproof_test.ts) pin the outputs; these
 * pin the error codes and the cross-backend agreement.
 */

import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import { timingSafeEqual } from "../../lib/bytes.ts";
import {
  checkEncapsulationKey,
  type MlKem768,
  mlKem768,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_ENCAPSULATION_KEY_BYTES,
  nobleMlKem768,
  webCryptoMlKem768,
} from "../../lib/crypto/mlkem.ts";

const BACKENDS: [string, MlKem768 | undefined][] = [
  ["webcrypto", webCryptoMlKem768],
  ["noble", nobleMlKem768],
];

async function rejectsWith(code: string, run: () => Promise<unknown>): Promise<void> {
  await assert.rejects(run, (e: unknown) => e instanceof SecureChatError && e.code === code);
}

/** Sets coefficient `index` of t̂ (12-bit little-endian packing, FIPS 203 ByteEncode12). */
function withCoefficient(ek: Uint8Array, index: number, value: number): Uint8Array {
  const out = ek.slice();
  const at = 3 * (index >> 1);
  if (index % 2 === 0) {
    out[at] = value & 0xff;
    out[at + 1] = (out[at + 1] & 0xf0) | (value >> 8);
  } else {
    out[at + 1] = (out[at + 1] & 0x0f) | ((value & 0x0f) << 4);
    out[at + 2] = value >> 4;
  }
  return out;
}

Deno.test("mlKem768 is the WebCrypto backend on Deno", () => {
  assert.ok(webCryptoMlKem768, "Deno 2.9 has ML-KEM-768 in WebCrypto");
  assert.equal(mlKem768.backend, "webcrypto");
});

for (const [name, kem] of BACKENDS) {
  Deno.test({
    name: `${name}: encapsulate() to generateKeyPair() round-trips; bad inputs are BAD_KEY_SHARE`,
    ignore: !kem,
    fn: async () => {
      const pair = await kem!.generateKeyPair();
      assert.equal(pair.encapsulationKey.length, MLKEM768_ENCAPSULATION_KEY_BYTES);
      const { ciphertext, sharedSecret } = await kem!.encapsulate(pair.encapsulationKey);
      assert.equal(ciphertext.length, MLKEM768_CIPHERTEXT_BYTES);
      assert.ok(timingSafeEqual(await pair.decapsulate(ciphertext), sharedSecret));

      await rejectsWith("BAD_KEY_SHARE", () => pair.decapsulate(ciphertext.subarray(1)));
      await rejectsWith("BAD_KEY_SHARE", () => pair.decapsulate(new Uint8Array(1089)));
      await rejectsWith("BAD_KEY_SHARE", () => kem!.encapsulate(pair.encapsulationKey.subarray(1)));
      const unreduced = withCoefficient(pair.encapsulationKey, 767, 3329);
      await rejectsWith("BAD_KEY_SHARE", () => kem!.encapsulate(unreduced));
      await rejectsWith("BAD_KEY_SHARE", () => kem!.generateKeyPair(new Uint8Array(63)));
    },
  });
}

Deno.test("webcrypto encapsulate() refuses caller randomness with UNSUPPORTED", async () => {
  const pair = await nobleMlKem768.generateKeyPair();
  await rejectsWith(
    "UNSUPPORTED",
    () => webCryptoMlKem768!.encapsulate(pair.encapsulationKey, new Uint8Array(32)),
  );
});

Deno.test("the two backends interoperate in both directions", async () => {
  for (
    const [keyOwner, encapsulator] of [[webCryptoMlKem768!, nobleMlKem768], [
      nobleMlKem768,
      webCryptoMlKem768!,
    ]]
  ) {
    const pair = await keyOwner.generateKeyPair();
    const { ciphertext, sharedSecret } = await encapsulator.encapsulate(pair.encapsulationKey);
    assert.ok(timingSafeEqual(await pair.decapsulate(ciphertext), sharedSecret));
  }
  const seed = crypto.getRandomValues(new Uint8Array(64));
  const [a, b] = await Promise.all([
    webCryptoMlKem768!.generateKeyPair(seed),
    nobleMlKem768.generateKeyPair(seed),
  ]);
  assert.ok(timingSafeEqual(a.encapsulationKey, b.encapsulationKey));
});

Deno.test("checkEncapsulationKey() takes q − 1 in every coefficient slot, refuses q", async () => {
  const { encapsulationKey } = await nobleMlKem768.generateKeyPair();
  for (const index of [0, 1, 2, 3, 254, 255, 256, 511, 766, 767]) {
    checkEncapsulationKey(withCoefficient(encapsulationKey, index, 3328));
    assert.throws(
      () => checkEncapsulationKey(withCoefficient(encapsulationKey, index, 3329)),
      (e: unknown) => e instanceof SecureChatError && e.code === "BAD_KEY_SHARE",
    );
  }
  // ρ (the last 32 bytes) is a seed, not coefficients: any bytes are fine there.
  const rho = encapsulationKey.slice();
  rho.fill(0xff, MLKEM768_ENCAPSULATION_KEY_BYTES - 32);
  checkEncapsulationKey(rho);
});
