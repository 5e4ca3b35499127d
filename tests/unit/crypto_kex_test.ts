import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import { concat, fromHex, toHex } from "../../lib/bytes.ts";
import {
  agree,
  type EcdhCurve,
  generateKeyShare,
  keyShareFromPrivate,
} from "../../lib/crypto/ecdh.ts";
import { KEX_GROUPS, type KexGroup, keyAgreement, phase2Group } from "../../lib/crypto/kex.ts";
import { ml_kem768 as rawNoble } from "@noble/post-quantum/ml-kem.js";

function isCode(code: string) {
  return (e: unknown) => e instanceof SecureChatError && e.code === code;
}

// RFC 7748 §6.1 (X25519) and RFC 5903 §8.1 (P-256 ECDH, shared secret = x-coordinate).
const KNOWN_ANSWERS: {
  group: EcdhCurve;
  a: string;
  aPublic: string;
  b: string;
  bPublic: string;
  shared: string;
}[] = [
  {
    group: "x25519",
    a: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    aPublic: "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    b: "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    bPublic: "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
    shared: "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
  },
  {
    group: "p256",
    a: "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
    aPublic: "04dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180" +
      "5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
    b: "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
    bPublic: "04d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63" +
      "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
    shared: "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
  },
];

Deno.test("KEX_GROUPS lists the hybrid first, then x25519, then p256", () => {
  assert.deepEqual([...KEX_GROUPS], ["x25519mlkem768", "x25519", "p256"]);
  assert.ok(Object.isFrozen(KEX_GROUPS));
});

Deno.test("phase2Group() runs the hybrid's X25519 half in phase 2, every other group itself (PROTOCOL §4.2)", () => {
  assert.deepEqual(KEX_GROUPS.map(phase2Group), ["x25519", "x25519", "p256"]);
});

Deno.test("keyShareFromPrivate() and agree() reproduce the RFC 7748 / RFC 5903 vectors", async () => {
  for (const v of KNOWN_ANSWERS) {
    const alice = await keyShareFromPrivate(v.group, fromHex(v.a));
    const bob = await keyShareFromPrivate(v.group, fromHex(v.b));
    assert.equal(toHex(alice.publicKey), v.aPublic, `${v.group} alice public`);
    assert.equal(toHex(bob.publicKey), v.bPublic, `${v.group} bob public`);
    assert.equal(toHex(await agree(alice, bob.publicKey)), v.shared, `${v.group} a·B`);
    assert.equal(toHex(await agree(bob, alice.publicKey)), v.shared, `${v.group} b·A`);
    assert.equal((alice.privateKey as CryptoKey).extractable, false);
  }
});

Deno.test("generateKeyShare() makes shares in the wire encoding that agree both ways", async () => {
  const publicLength = { x25519: 32, p256: 65 };
  for (const group of ["x25519", "p256"] as const) {
    const [a, b] = [await generateKeyShare(group), await generateKeyShare(group)];
    assert.equal(a.curve, group);
    assert.equal(a.publicKey.length, publicLength[group]);
    if (group === "p256") assert.equal(a.publicKey[0], 0x04);
    // A fresh X25519 share is node:crypto's here (a KeyObject, never bytes in JS); P-256's
    // stays a non-extractable WebCrypto key.
    const own = a.privateKey;
    if (own instanceof CryptoKey) assert.equal(own.extractable, false);
    else assert.equal(group, "x25519");
    if (!(own instanceof CryptoKey)) assert.equal(own.backendKey instanceof Uint8Array, false);
    assert.notDeepEqual(a.publicKey, b.publicKey);
    const secret = await agree(a, b.publicKey);
    assert.equal(secret.length, 32);
    assert.deepEqual(secret, await agree(b, a.publicKey));
  }
});

Deno.test("generateKeyShare() and keyShareFromPrivate() refuse an unknown group with UNSUPPORTED", async () => {
  const bogus = "x448" as EcdhCurve;
  await assert.rejects(generateKeyShare(bogus), isCode("UNSUPPORTED"));
  await assert.rejects(keyShareFromPrivate(bogus, new Uint8Array(32)), isCode("UNSUPPORTED"));
});

Deno.test("keyAgreement(): generate(), respond() and complete() agree in every group", async () => {
  for (const group of KEX_GROUPS) {
    const kex = keyAgreement(group);
    const client = await kex.generate();
    assert.equal(client.group, group);
    const server = await kex.respond(client.share);
    assert.deepEqual(await client.complete(server.share), server.sharedSecret, group);
    await assert.rejects(client.complete(server.share), isCode("INTERNAL"), "second use");
  }
  assert.throws(() => keyAgreement("x448" as KexGroup), isCode("UNSUPPORTED"));
});

Deno.test("keyAgreement(): a fixed secret reproduces the RFC 7748 / RFC 5903 vectors", async () => {
  for (const v of KNOWN_ANSWERS) {
    const kex = keyAgreement(v.group);
    const client = await kex.generate(fromHex(v.a));
    assert.equal(toHex(client.share), v.aPublic, v.group);
    const server = await kex.respond(client.share, fromHex(v.b));
    assert.equal(toHex(server.share), v.bPublic, v.group);
    assert.equal(toHex(server.sharedSecret), v.shared, v.group);
    assert.equal(toHex(await client.complete(server.share)), v.shared, v.group);
  }
});

Deno.test("keyAgreement(): malformed shares are BAD_KEY_SHARE on both sides", async () => {
  for (const group of KEX_GROUPS) {
    const kex = keyAgreement(group);
    const good = (await kex.generate()).share;
    for (const bad of [good.subarray(1), new Uint8Array(0), concat(good, Uint8Array.of(0))]) {
      await assert.rejects(kex.respond(bad), isCode("BAD_KEY_SHARE"), `${group} respond`);
      const client = await kex.generate();
      await assert.rejects(client.complete(bad), isCode("BAD_KEY_SHARE"), `${group} complete`);
    }
  }
  const lowOrder = new Uint8Array(32); // u = 0
  await assert.rejects(keyAgreement("x25519").respond(lowOrder), isCode("BAD_KEY_SHARE"));
});

Deno.test("keyShareFromPrivate() refuses wrong-length or out-of-range scalars with BAD_KEY_SHARE", async () => {
  const n = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
  const cases: [EcdhCurve, string][] = [
    ["x25519", "00".repeat(31)],
    ["x25519", "00".repeat(33)],
    ["p256", "01".repeat(31)],
    ["p256", "00".repeat(32)], // d = 0
    ["p256", n], // d = n
    ["p256", "ff".repeat(32)], // d > n
  ];
  for (const [group, d] of cases) {
    await assert.rejects(keyShareFromPrivate(group, fromHex(d)), isCode("BAD_KEY_SHARE"), d);
  }
});

/**
 * The X25519 public keys of small order, in their canonical encodings
 * (0, 1, the two points of order 8, p-1, p, p+1; as listed by libsodium and
 * the curve25519 "cr.yp.to/ecdh.html#validate" page) — each also with the
 * ignored top bit set, which RFC 7748 §5 masks away.
 */
const X25519_SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].flatMap((hex) => [hex, hex.slice(0, 62) + (parseInt(hex.slice(62), 16) | 0x80).toString(16)]);

Deno.test("agree() refuses every small-order X25519 point with BAD_KEY_SHARE", async () => {
  const share = await generateKeyShare("x25519");
  assert.equal(X25519_SMALL_ORDER.length, 14);
  for (const point of X25519_SMALL_ORDER) {
    await assert.rejects(agree(share, fromHex(point)), isCode("BAD_KEY_SHARE"), point);
  }
});

Deno.test("agree(): a fresh X25519 share (node:crypto) and a WebCrypto one agree, and both refuse small-order points", async () => {
  const fresh = await generateKeyShare("x25519");
  const vector = await keyShareFromPrivate("x25519", fromHex(KNOWN_ANSWERS[0].a));
  assert.equal(fresh.privateKey instanceof CryptoKey, false);
  assert.equal(vector.privateKey instanceof CryptoKey, true);
  assert.deepEqual(await agree(fresh, vector.publicKey), await agree(vector, fresh.publicKey));
  for (const share of [fresh, vector]) {
    await assert.rejects(agree(share, fromHex(X25519_SMALL_ORDER[0])), isCode("BAD_KEY_SHARE"));
  }
});

Deno.test("agree() refuses X25519 public keys of the wrong length with BAD_KEY_SHARE", async () => {
  const share = await generateKeyShare("x25519");
  const peer = (await generateKeyShare("x25519")).publicKey;
  for (const bad of [new Uint8Array(), peer.subarray(0, 31), concat(peer, new Uint8Array(1))]) {
    await assert.rejects(agree(share, bad), isCode("BAD_KEY_SHARE"), `${bad.length} bytes`);
  }
});

Deno.test("agree() refuses malformed, compressed and off-curve P-256 points with BAD_KEY_SHARE", async () => {
  const share = await generateKeyShare("p256");
  const peer = (await generateKeyShare("p256")).publicKey;
  const x = peer.subarray(1, 33);
  const y = peer.subarray(33);
  const p = fromHex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
  const flippedY = y.slice();
  flippedY[31] ^= 1;
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array()],
    ["point at infinity (0x00)", new Uint8Array(1)],
    ["64 bytes, no prefix", concat(x, y)],
    ["66 bytes", concat(peer, new Uint8Array(1))],
    ["compressed 0x02/0x03", concat(Uint8Array.of(2 + (y[31] & 1)), x)],
    ["hybrid 0x06/0x07 prefix", concat(Uint8Array.of(6 + (y[31] & 1)), x, y)],
    ["off-curve (y bit flipped)", concat(Uint8Array.of(4), x, flippedY)],
    ["(0, 0)", concat(Uint8Array.of(4), new Uint8Array(64))],
    ["x = p", concat(Uint8Array.of(4), p, y)],
    ["y = p", concat(Uint8Array.of(4), x, p)],
  ];
  for (const [name, point] of cases) {
    await assert.rejects(agree(share, point), isCode("BAD_KEY_SHARE"), name);
  }
  assert.equal((await agree(share, peer)).length, 32, "the unmodified point is accepted");
});

Deno.test("x25519mlkem768: ek ‖ X25519 out, ct ‖ X25519 back, ss_ML-KEM ‖ ss_X25519 (draft-ietf-tls-ecdhe-mlkem layout)", async () => {
  const x = KNOWN_ANSWERS.find((v) => v.group === "x25519")!;
  const seed = Uint8Array.from({ length: 64 }, (_, i) => i);
  const m = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
  const kex = keyAgreement("x25519mlkem768");
  const client = await kex.generate(concat(seed, fromHex(x.a)));
  const server = await kex.respond(client.share, concat(m, fromHex(x.b)));

  // Computed independently: raw noble for ML-KEM, the RFC 7748 answers for X25519.
  const { publicKey: ek, secretKey: dk } = rawNoble.keygen(seed);
  const { cipherText, sharedSecret } = rawNoble.encapsulate(ek, m);
  assert.equal(toHex(client.share), toHex(ek) + x.aPublic);
  assert.equal(client.share.length, 1216);
  assert.equal(toHex(server.share), toHex(cipherText) + x.bPublic);
  assert.equal(server.share.length, 1120);
  assert.equal(toHex(server.sharedSecret), toHex(sharedSecret) + x.shared);
  assert.equal(toHex(await client.complete(server.share)), toHex(server.sharedSecret));
  assert.deepEqual(rawNoble.decapsulate(cipherText, dk), sharedSecret);
});

Deno.test("x25519mlkem768: a bad half anywhere is BAD_KEY_SHARE; a wrong ciphertext changes the secret", async () => {
  const kex = keyAgreement("x25519mlkem768");
  const client = await kex.generate();
  const ek = client.share.subarray(0, 1184);
  const lowOrder = new Uint8Array(32); // u = 0: all-zero X25519 secret

  const unreduced = client.share.slice();
  unreduced[0] = 0xff;
  unreduced[1] |= 0x0f; // first coefficient 4095 ≥ q
  await assert.rejects(kex.respond(unreduced), isCode("BAD_KEY_SHARE"), "modulus check");
  await assert.rejects(kex.respond(concat(ek, lowOrder)), isCode("BAD_KEY_SHARE"), "low order");
  await assert.rejects(kex.respond(ek), isCode("BAD_KEY_SHARE"), "ek alone");

  const server = await kex.respond(client.share);
  const ct = server.share.subarray(0, 1088);
  await assert.rejects(client.complete(concat(ct, lowOrder)), isCode("BAD_KEY_SHARE"));
  const other = await kex.generate();
  await assert.rejects(other.complete(ct), isCode("BAD_KEY_SHARE"), "ct alone");

  // FIPS 203 implicit rejection: a tampered ciphertext is not an error, the
  // secret simply differs, and the handshake's Finished fails instead.
  const third = await kex.generate();
  const answer = await kex.respond(third.share);
  const tampered = answer.share.slice();
  tampered[7] ^= 1;
  const secret = await third.complete(tampered);
  assert.equal(secret.length, 64);
  assert.notEqual(toHex(secret.subarray(0, 32)), toHex(answer.sharedSecret.subarray(0, 32)));
  assert.equal(toHex(secret.subarray(32)), toHex(answer.sharedSecret.subarray(32)));
});
