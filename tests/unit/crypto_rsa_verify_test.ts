/**
 * lib/crypto/rsa_verify.ts: the RSASSA-PKCS1-v1_5 / SHA-256 verification that `verify` uses for
 * RSA keys, held here to WebCrypto's answer on signatures made and mutated in the test, on both
 * its paths: the key as read (through libcrypto where it loads) and its numbers alone (BigInt, as
 * in the page). Wycheproof's RSA files (wycheproof_test.ts) run through both;
 * ./openssl_rsa_verify_test.ts holds the two to each other.
 */
import assert from "node:assert/strict";
import { importVerifyingKeySpki, verify } from "../../lib/crypto/signature.ts";
import { rsaPkcs1Sha256Verify, rsaPublicKeyOfSpki } from "../../lib/crypto/rsa_verify.ts";

const ALG = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as const;

async function rsaKey(publicExponent: Uint8Array<ArrayBuffer>) {
  const params: RsaHashedKeyGenParams = { ...ALG, modulusLength: 2048, publicExponent };
  const pair = await crypto.subtle.generateKey(
    params,
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const sign = async (data: Uint8Array) =>
    new Uint8Array(await crypto.subtle.sign(ALG, pair.privateKey, data as BufferSource));
  const webCrypto = (data: Uint8Array, sig: Uint8Array) =>
    crypto.subtle.verify(ALG, pair.publicKey, sig as BufferSource, data as BufferSource);
  return { spki, sign, webCrypto };
}

Deno.test("importVerifyingKeySpki() reads an RSA key's numbers for rsa_verify.ts", async () => {
  const { spki } = await rsaKey(Uint8Array.of(1, 0, 1));
  const key = await importVerifyingKeySpki(spki);
  assert.equal(key.rsa?.e, 65537n);
  assert.equal(key.rsa?.k, 256);
});

for (const [label, exponent] of [["e = 65537", [1, 0, 1]], ["e = 3", [3]]] as const) {
  Deno.test(`rsaPkcs1Sha256Verify() agrees with WebCrypto on valid and mutated signatures (${label})`, async () => {
    const { spki, sign, webCrypto } = await rsaKey(Uint8Array.from(exponent));
    const read = rsaPublicKeyOfSpki(spki);
    for (let i = 0; i < 16; i++) {
      // Even rounds check the key as read, odd ones its numbers alone: the BigInt path.
      const key = i % 2 === 0 ? read : { n: read.n, e: read.e, k: read.k };
      const data = crypto.getRandomValues(new Uint8Array(i * 19));
      const sig = await sign(data);
      assert.equal(rsaPkcs1Sha256Verify(key, data, sig), true);
      const cases: [string, Uint8Array, Uint8Array][] = [
        ["other data", Uint8Array.of(...data, 0), sig],
        ["bit flipped", data, sig.map((b, j) => j === i * 15 ? b ^ 1 : b)],
        ["truncated", data, sig.subarray(1)],
        ["padded", data, Uint8Array.of(0, ...sig)],
        ["all zero", data, new Uint8Array(sig.length)],
        ["all ones (above n)", data, new Uint8Array(sig.length).fill(0xff)],
      ];
      for (const [what, d, s] of cases) {
        const ours = rsaPkcs1Sha256Verify(key, d, s);
        assert.equal(ours, false, what);
        assert.equal(ours, await webCrypto(d, s).catch(() => false), what);
      }
    }
  });
}

Deno.test("verify() refuses s = n and s = n + 1 as the RFC's representative check says", async () => {
  const { spki } = await rsaKey(Uint8Array.of(1, 0, 1));
  const key = await importVerifyingKeySpki(spki);
  const n = key.rsa!.n;
  for (const s of [n, n + 1n]) {
    const bytes = Uint8Array.fromHex(s.toString(16).padStart(512, "0"));
    assert.equal(await verify(key, new Uint8Array(0), bytes), false);
  }
});

Deno.test("rsaPublicKeyOfSpki() refuses trailing fields and a non-RSA key", async () => {
  const { spki } = await rsaKey(Uint8Array.of(1, 0, 1));
  // One more byte inside the outer SEQUENCE's length is not DER of a SubjectPublicKeyInfo.
  assert.throws(() => rsaPublicKeyOfSpki(Uint8Array.of(...spki, 0)), /malformed RSA public key/);
  const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const edSpki = new Uint8Array(
    await crypto.subtle.exportKey("spki", (ed as CryptoKeyPair).publicKey),
  );
  assert.throws(() => rsaPublicKeyOfSpki(edSpki), /malformed RSA public key/);
});

Deno.test("rsaPublicKeyOfSpki() refuses an RSAPublicKey under RSASSA-PSS's OID", async () => {
  const { spki } = await rsaKey(Uint8Array.of(1, 0, 1));
  // rsaEncryption (1.2.840.113549.1.1.1) → RSASSA-PSS (…1.10): libcrypto would read another key.
  const pss = Uint8Array.fromHex(spki.toHex().replace("2a864886f70d010101", "2a864886f70d01010a"));
  assert.notEqual(pss.toHex(), spki.toHex());
  assert.throws(() => rsaPublicKeyOfSpki(pss), /malformed RSA public key/);
});
