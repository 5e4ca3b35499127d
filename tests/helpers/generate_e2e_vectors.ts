/**
 * Writes tests/vectors/e2e/*.json (PROTOCOL §12.8): signed key bundles, PQXDH first
 * contact, a Double Ratchet conversation and a sender-key chain, from fixed inputs. A rerun
 * reproduces every file byte for byte (a change means the end-to-end layer changed).
 *
 *   deno run -A tests/helpers/generate_e2e_vectors.ts
 */
import { createHash } from "node:crypto";
import { toHex } from "../../lib/bytes.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { nobleMlKem768 } from "../../lib/crypto/mlkem.ts";
import { x25519KeyPair } from "../../lib/crypto/x25519.ts";
import { initiateFirstContact, respondFirstContact } from "../../lib/e2e/pqxdh.ts";
import { encodeHeader, Ratchet } from "../../lib/e2e/ratchet.ts";
import { SenderChain, SenderKeyReceiver } from "../../lib/e2e/sender_key.ts";
import {
  bundleStatement,
  deviceOf,
  encodeBundle,
  identityStatement,
  type KeyBundle,
  signBundle,
} from "../../lib/e2e/bundle.ts";

const OUT = new URL("../vectors/e2e/", import.meta.url).pathname;

/** A labelled, reproducible 32-byte value: SHA-256("securechat e2e vector " || label). */
export function fixed(label: string, bytes = 32): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0, block = 0; i < bytes; block++, i += 32) {
    const h = createHash("sha256").update(`securechat e2e vector ${label} ${block}`).digest();
    out.set(h.subarray(0, Math.min(32, bytes - i)), i);
  }
  return out;
}

function keySource(prefix: string): () => Uint8Array {
  let i = 0;
  return () => fixed(`${prefix} ratchet key ${i++}`);
}

async function pqxdh() {
  const aliceIk = x25519KeyPair(fixed("alice ik"));
  const bobIk = x25519KeyPair(fixed("bob ik"));
  const bobSpk = x25519KeyPair(fixed("bob spk"));
  const bobOpk = x25519KeyPair(fixed("bob opk"));
  const bobPq = await nobleMlKem768.generateKeyPair(fixed("bob pq seed", 64));
  const aliceCert = fixed("alice certificate DER", 64);
  const bobCert = fixed("bob certificate DER", 64);
  const bundle: KeyBundle = {
    user: "bob",
    created: 1767225600000,
    ik: bobIk.publicKey,
    spkId: 1,
    spk: bobSpk.publicKey,
    pqId: 2,
    pq: bobPq.encapsulationKey,
    ikSig: new Uint8Array(0), // not part of the derivation
    sig: new Uint8Array(0),
  };
  const first = await initiateFirstContact(
    {
      ik: aliceIk,
      ikSig: new Uint8Array(0),
      cert: aliceCert,
      ekPrivate: fixed("alice ek"),
      kemMessage: fixed("kem m"),
    },
    { bundle, cert: bobCert, opk: { id: 3, pub: bobOpk.publicKey } },
    nobleMlKem768,
  );
  const answer = await respondFirstContact(
    { ik: bobIk, cert: bobCert, spkId: 1, spk: bobSpk, pqId: 2, pq: bobPq, opk: bobOpk },
    aliceCert,
    first.header,
  );
  if (toHex(answer.sk) !== toHex(first.sk)) throw new Error("PQXDH sides disagree");
  return {
    description:
      "PROTOCOL §12.3: alice's first contact with bob, with a one-time prekey. Expected: valid.",
    inputs: {
      alice_ik_private: toHex(aliceIk.privateKey),
      alice_ek_private: toHex(fixed("alice ek")),
      alice_cert: toHex(aliceCert),
      bob_ik_private: toHex(bobIk.privateKey),
      bob_spk_private: toHex(bobSpk.privateKey),
      bob_opk_private: toHex(bobOpk.privateKey),
      bob_pq_seed: toHex(fixed("bob pq seed", 64)),
      bob_cert: toHex(bobCert),
      kem_message: toHex(fixed("kem m")),
      spk_id: 1,
      pq_id: 2,
      opk_id: 3,
    },
    outputs: {
      alice_ik: toHex(aliceIk.publicKey),
      alice_ek: toHex(first.header.ek),
      bob_ik: toHex(bobIk.publicKey),
      bob_spk: toHex(bobSpk.publicKey),
      bob_opk: toHex(bobOpk.publicKey),
      bob_pq_ek: toHex(bobPq.encapsulationKey),
      kem_ct: toHex(first.header.kemCt),
      ad: toHex(first.ad),
      sk: toHex(first.sk),
    },
  };
}

/**
 * alice's bundle signed by her certificate key, once per deterministic signature algorithm
 * (Ed25519; RSASSA-PKCS1-v1_5 with SHA-256): the CA, certificate and key are the protocol
 * vectors' (tests/vectors/protocol), so the signatures verify with a certificate that
 * validates under that CA at `created`.
 */
async function bundles() {
  const ik = x25519KeyPair(fixed("alice ik"));
  const spk = x25519KeyPair(fixed("alice spk"));
  const pq = await nobleMlKem768.generateKeyPair(fixed("alice pq seed", 64));
  const cases = [];
  for (const file of ["handshake_ed25519_x25519.json", "handshake_rsa2048_p256.json"]) {
    const { pki } = JSON.parse(
      await Deno.readTextFile(new URL(`../vectors/protocol/${file}`, import.meta.url)),
    ).inputs;
    const signingKey = await importSigningKeyPkcs8(
      pemDecode(pki.client_key_pem, "PRIVATE KEY", "INVALID_INPUT"),
    );
    const unsigned = {
      user: "alice",
      created: 1796083200000, // 2026-12-01, inside the certificates' validity
      ik: ik.publicKey,
      spkId: 0x01020304,
      spk: spk.publicKey,
      pqId: 0x0a0b0c0d,
      pq: pq.encapsulationKey,
    };
    const bundle = await signBundle(signingKey, unsigned);
    cases.push({
      key_type: pki.key_type,
      signature: signingKey.algorithm,
      ca_cert_pem: pki.ca_cert_pem,
      cert_pem: pki.client_cert_pem,
      key_pem: pki.client_key_pem,
      identity_statement: toHex(identityStatement(bundle.user, bundle.ik)),
      bundle_statement: toHex(bundleStatement(unsigned)),
      bundle: encodeBundle(bundle),
    });
  }
  return {
    description: "PROTOCOL §12.2: alice's key bundle, its two statements and their signatures " +
      "under an Ed25519 and an RSA-2048 certificate key (both signature schemes are " +
      "deterministic, so re-signing gives the same bytes); `device` is the id of `ik`. " +
      "Expected: valid.",
    inputs: {
      ik_private: toHex(ik.privateKey),
      spk_private: toHex(spk.privateKey),
      pq_seed: toHex(fixed("alice pq seed", 64)),
    },
    device: deviceOf(ik.publicKey),
    cases,
  };
}

function ratchet() {
  const sk = fixed("ratchet sk");
  const ad = fixed("ratchet ad", 128);
  const bobSpk = x25519KeyPair(fixed("bob spk"));
  const alice = Ratchet.initiator(sk, ad, bobSpk.publicKey, keySource("alice"));
  const bob = Ratchet.responder(sk, ad, bobSpk, keySource("bob"));
  const plan: ("alice" | "bob")[] = ["alice", "alice", "bob", "alice", "bob", "bob", "alice"];
  const messages = plan.map((from, i) => {
    const [send, recv] = from === "alice" ? [alice, bob] : [bob, alice];
    const k = fixed(`ratchet k ${i}`);
    const binding = fixed(`ratchet binding ${i}`);
    const { header, wrapped } = send.encrypt(k, binding);
    if (toHex(recv.decrypt(header, wrapped, binding)) !== toHex(k)) throw new Error("ratchet");
    return {
      from,
      k: toHex(k),
      binding: toHex(binding),
      header: toHex(encodeHeader(header)),
      wrapped: toHex(wrapped),
    };
  });
  return {
    description:
      "PROTOCOL §12.4: a Double Ratchet conversation; ratchet private keys come in order from " +
      'each side\'s list (SHA-256("securechat e2e vector <side> ratchet key <i> 0")). Expected: valid.',
    inputs: {
      sk: toHex(sk),
      ad: toHex(ad),
      bob_spk_private: toHex(bobSpk.privateKey),
      alice_ratchet_private: [0, 1, 2, 3].map((i) => toHex(fixed(`alice ratchet key ${i}`))),
      bob_ratchet_private: [0, 1, 2, 3].map((i) => toHex(fixed(`bob ratchet key ${i}`))),
    },
    messages,
  };
}

function senderKeys() {
  const ck = fixed("sender ck");
  const chain = new SenderChain("alice", 0x01020304, ck, 5);
  const receiver = new SenderKeyReceiver("alice", chain.distribution());
  const messages = [0, 1, 2].map((i) => {
    const k = fixed(`sender k ${i}`);
    const binding = fixed(`sender binding ${i}`);
    const m = chain.encrypt(k, binding);
    if (toHex(receiver.decrypt(m.id, m.n, m.wrapped, binding)) !== toHex(k)) throw new Error("sk");
    return { n: m.n, k: toHex(k), binding: toHex(binding), wrapped: toHex(m.wrapped) };
  });
  return {
    description: "PROTOCOL §12.5: alice's lobby sender chain from n = 5. Expected: valid.",
    inputs: { author: "alice", id: 0x01020304, n: 5, ck: toHex(ck) },
    messages,
  };
}

if (import.meta.main) {
  await Deno.mkdir(OUT, { recursive: true });
  const files: Record<string, unknown> = {
    "bundle.json": await bundles(),
    "pqxdh.json": await pqxdh(),
    "ratchet.json": ratchet(),
    "sender_keys.json": senderKeys(),
  };
  for (const [name, value] of Object.entries(files)) {
    await Deno.writeTextFile(`${OUT}${name}`, JSON.stringify(value, null, 2) + "\n");
  }
  console.log(`wrote ${Object.keys(files).join(", ")} to ${OUT}`);
}
