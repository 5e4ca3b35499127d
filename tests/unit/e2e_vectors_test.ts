/**
 * The end-to-end vectors (tests/vectors/e2e, PROTOCOL §12.8): replayed through lib/e2e
 * byte for byte, and the parts an independent client needs first (the bundle statements and
 * signatures, the PQXDH secret, the first ratchet message, every sender-key wrap) recomputed
 * from node:crypto primitives alone, following the spec's formulas rather than our code.
 */
import assert from "node:assert/strict";
import {
  createCipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  hkdfSync,
  sign as nodeSign,
  verify as nodeVerify,
  X509Certificate,
} from "node:crypto";
import { concat, fromBase64, fromHex, toHex, u32be, u64be, utf8 } from "../../lib/bytes.ts";
import { codeOf } from "../../lib/errors.ts";
import { parseBundle, verifyBundle } from "../../lib/e2e/bundle.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { TrustStore } from "../../lib/pki/validate.ts";
import { nobleMlKem768 } from "../../lib/crypto/mlkem.ts";
import { x25519, x25519KeyPair } from "../../lib/crypto/x25519.ts";
import { encodeHeader, Ratchet } from "../../lib/e2e/ratchet.ts";
import { SenderChain, SenderKeyReceiver } from "../../lib/e2e/sender_key.ts";

const DIR = new URL("../vectors/e2e/", import.meta.url).pathname;
const load = async (name: string) => JSON.parse(await Deno.readTextFile(DIR + name));

const hmac = (key: Uint8Array, ...parts: Uint8Array[]) => {
  const h = createHmac("sha256", key);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const hkdf = (salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, n: number) =>
  new Uint8Array(hkdfSync("sha256", ikm, salt, info, n));
/** PROTOCOL §12.4 wrap, from the formulas. */
function wrap(mk: Uint8Array, aad: Uint8Array, k: Uint8Array): Uint8Array {
  // HKDF-Expand only (mk is already a uniform key): T(1) = HMAC(mk, info || 0x01).
  const expKey = hmac(mk, utf8("securechat/e2e wrap key"), Uint8Array.of(1));
  const expIv = hmac(mk, utf8("securechat/e2e wrap iv"), Uint8Array.of(1)).subarray(0, 12);
  const c = createCipheriv("aes-256-gcm", expKey, expIv);
  c.setAAD(aad);
  return concat(c.update(k), c.final(), c.getAuthTag());
}

Deno.test("e2e vectors: bundle statements and signatures recomputed from the formulas; lib accepts the bundle", async () => {
  const v = await load("bundle.json");
  const ik = x25519KeyPair(fromHex(v.inputs.ik_private)).publicKey;
  const spk = x25519KeyPair(fromHex(v.inputs.spk_private)).publicKey;
  const pq = (await nobleMlKem768.generateKeyPair(fromHex(v.inputs.pq_seed))).encapsulationKey;
  const sha = (...parts: Uint8Array[]) => {
    const h = createHash("sha256");
    for (const p of parts) h.update(p);
    return new Uint8Array(h.digest());
  };
  assert.equal(toHex(sha(utf8("securechat/e2e device\0"), ik).subarray(0, 8)), v.device);
  assert.equal(v.cases.length, 2);
  for (const c of v.cases) {
    const b = c.bundle;
    assert.deepEqual([b.ik, b.spk, b.pq].map((x: string) => toHex(fromBase64(x))), [
      toHex(ik),
      toHex(spk),
      toHex(pq),
    ]);
    const user = utf8(b.user);
    const identity = concat(utf8("securechat/e2e identity\0"), u32be(user.length), user, ik);
    const statement = concat(
      utf8("securechat/e2e bundle\0"),
      u32be(user.length),
      user,
      u64be(b.created),
      ik,
      u32be(b.spk_id),
      spk,
      u32be(b.pq_id),
      pq,
    );
    assert.equal(toHex(identity), c.identity_statement, c.key_type);
    assert.equal(toHex(statement), c.bundle_statement, c.key_type);
    // §4.6's algorithm for the key type; both are deterministic, so re-signing reproduces them.
    const hash = c.signature === "ed25519" ? null : "sha256";
    const cert = new X509Certificate(c.cert_pem);
    const key = createPrivateKey(c.key_pem);
    for (const [data, sig] of [[identity, b.ik_sig], [statement, b.sig]] as const) {
      assert.ok(nodeVerify(hash, data, cert.publicKey, fromBase64(sig)), c.key_type);
      assert.equal(toHex(new Uint8Array(nodeSign(hash, data, key))), toHex(fromBase64(sig)));
    }
    const trust = await TrustStore.fromPem(c.ca_cert_pem);
    const der = pemDecode(c.cert_pem, "CERTIFICATE", "BAD_CERT");
    const at = new Date(b.created);
    await verifyBundle(trust, der, parseBundle(b), at);
    const older = parseBundle({ ...b, created: b.created - 1 });
    await assert.rejects(verifyBundle(trust, der, older, at), (e) => codeOf(e) === "SIG_FAIL");
  }
});

Deno.test("e2e vectors: PQXDH secret recomputed from X25519, ML-KEM-768 and HKDF", async () => {
  const v = await load("pqxdh.json");
  const i = v.inputs, o = v.outputs;
  const bobPq = await nobleMlKem768.generateKeyPair(fromHex(i.bob_pq_seed));
  assert.equal(toHex(bobPq.encapsulationKey), o.bob_pq_ek);
  const enc = await nobleMlKem768.encapsulate(bobPq.encapsulationKey, fromHex(i.kem_message));
  assert.equal(toHex(enc.ciphertext), o.kem_ct);
  const aliceIk = fromHex(i.alice_ik_private), ek = fromHex(i.alice_ek_private);
  const ad = concat(
    new Uint8Array(createHash("sha256").update(fromHex(i.alice_cert)).digest()),
    new Uint8Array(createHash("sha256").update(fromHex(i.bob_cert)).digest()),
    fromHex(o.alice_ik),
    fromHex(o.bob_ik),
  );
  assert.equal(toHex(ad), o.ad);
  const ikm = concat(
    new Uint8Array(32).fill(0xff),
    x25519(aliceIk, fromHex(o.bob_spk)),
    x25519(ek, fromHex(o.bob_ik)),
    x25519(ek, fromHex(o.bob_spk)),
    x25519(ek, fromHex(o.bob_opk)),
    enc.sharedSecret,
  );
  const sk = hkdf(new Uint8Array(32), ikm, concat(utf8("securechat/e2e pqxdh\0"), ad), 32);
  assert.equal(toHex(sk), o.sk);
  assert.equal(toHex(await bobPq.decapsulate(fromHex(o.kem_ct))), toHex(enc.sharedSecret));
});

Deno.test("e2e vectors: the ratchet conversation replays byte for byte; its first message from the formulas", async () => {
  const v = await load("ratchet.json");
  const i = v.inputs;
  const keys = (list: string[]) => {
    let n = 0;
    return () => fromHex(list[n++]);
  };
  const sk = fromHex(i.sk), ad = fromHex(i.ad);
  const bobSpk = x25519KeyPair(fromHex(i.bob_spk_private));
  const alice = Ratchet.initiator(sk, ad, bobSpk.publicKey, keys(i.alice_ratchet_private));
  const bob = Ratchet.responder(sk, ad, bobSpk, keys(i.bob_ratchet_private));
  for (const m of v.messages) {
    const [send, recv] = m.from === "alice" ? [alice, bob] : [bob, alice];
    const out = send.encrypt(fromHex(m.k), fromHex(m.binding));
    assert.equal(toHex(encodeHeader(out.header)), m.header);
    assert.equal(toHex(out.wrapped), m.wrapped);
    assert.equal(toHex(recv.decrypt(out.header, out.wrapped, fromHex(m.binding))), m.k);
  }
  // message 0 independently: KDF_RK(SK, DH(alice ratchet 0, bob spk)), KDF_CK, wrap
  const a0 = x25519KeyPair(fromHex(i.alice_ratchet_private[0]));
  const okm = hkdf(
    sk,
    x25519(a0.privateKey, bobSpk.publicKey),
    utf8("securechat/e2e ratchet root"),
    64,
  );
  const mk = hmac(okm.subarray(32), Uint8Array.of(1));
  const m0 = v.messages[0];
  const header = concat(a0.publicKey, u32be(0), u32be(0));
  assert.equal(toHex(header), m0.header);
  const aad = concat(utf8("securechat/e2e ratchet\0"), ad, header, fromHex(m0.binding));
  assert.equal(toHex(wrap(mk, aad, fromHex(m0.k))), m0.wrapped);
});

Deno.test("e2e vectors: sender-key wraps replay and match the formulas", async () => {
  const v = await load("sender_keys.json");
  const i = v.inputs;
  const chain = new SenderChain(i.author, i.id, fromHex(i.ck), i.n);
  const receiver = new SenderKeyReceiver(i.author, chain.distribution());
  let ck = fromHex(i.ck);
  for (const m of v.messages) {
    const out = chain.encrypt(fromHex(m.k), fromHex(m.binding));
    assert.equal(out.n, m.n);
    assert.equal(toHex(out.wrapped), m.wrapped);
    assert.equal(toHex(receiver.decrypt(i.id, m.n, out.wrapped, fromHex(m.binding))), m.k);
    const author = utf8(i.author);
    const aad = concat(
      utf8("securechat/e2e sender key\0"),
      u32be(author.length),
      author,
      u32be(i.id),
      u32be(m.n),
      fromHex(m.binding),
    );
    assert.equal(toHex(wrap(hmac(ck, Uint8Array.of(1)), aad, fromHex(m.k))), m.wrapped);
    ck = hmac(ck, Uint8Array.of(2));
  }
});
