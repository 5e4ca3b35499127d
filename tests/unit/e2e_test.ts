/**
 * The end-to-end layer (PROTOCOL §12): signed key bundles, PQXDH first contact, the
 * Double Ratchet and sender keys, driven through lib/e2e exactly as a client would.
 */
import { loadTrustStore } from "../../lib/pki/trust_files.ts";
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { toBase64, toHex } from "../../lib/bytes.ts";
import { codeOf } from "../../lib/errors.ts";
import { mlKem768 } from "../../lib/crypto/mlkem.ts";
import { x25519KeyPair } from "../../lib/crypto/x25519.ts";
import {
  encodeBundle,
  type KeyBundle,
  parseBundle,
  signBundle,
  verifyBundle,
  verifyIdentityKey,
} from "../../lib/e2e/bundle.ts";
import { initiateFirstContact, respondFirstContact } from "../../lib/e2e/pqxdh.ts";
import { Ratchet } from "../../lib/e2e/ratchet.ts";
import { SenderChain, SenderKeyReceiver } from "../../lib/e2e/sender_key.ts";
import { E2eClient, MemoryStorage } from "../../lib/e2e/client.ts";
import type { Body } from "../../lib/message/record.ts";
import { loadCaSigner } from "../../lib/ca/ca.ts";
import { revokeCertificates } from "../../lib/ca/revoke.ts";
import { makePki, type TestPki } from "../../testkit/pki.ts";

const rand = (n = 32) => randomFillSync(new Uint8Array(n));

function codeOfCall(f: () => unknown): string {
  try {
    f();
  } catch (error) {
    return codeOf(error);
  }
  return "no error";
}

async function codeOfAsync(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (error) {
    return codeOf(error);
  }
  return "no error";
}

/** One user's private prekeys and signed bundle. */
async function makeUser(pki: TestPki, name: string) {
  const id = await pki.identity(name);
  const ik = x25519KeyPair();
  const spk = x25519KeyPair();
  const pq = await mlKem768.generateKeyPair();
  const bundle = await signBundle(id.signingKey, {
    user: name,
    created: Date.now(),
    ik: ik.publicKey,
    spkId: 1,
    spk: spk.publicKey,
    pqId: 7,
    pq: pq.encapsulationKey,
  });
  return { name, cert: id.certDer, ik, spk, pq, bundle, opk: x25519KeyPair() };
}
type User = Awaited<ReturnType<typeof makeUser>>;

/** alice opens a conversation with bob (with bob's one-time prekey) and bob answers it. */
async function converse(pki: TestPki, alice: User, bob: User, withOpk = true) {
  await verifyBundle(pki.trust, bob.cert, bob.bundle);
  const first = await initiateFirstContact(
    { ik: alice.ik, ikSig: alice.bundle.ikSig, cert: alice.cert },
    {
      bundle: bob.bundle,
      cert: bob.cert,
      opk: withOpk ? { id: 3, pub: bob.opk.publicKey } : undefined,
    },
  );
  const answer = await respondFirstContact(
    {
      ik: bob.ik,
      cert: bob.cert,
      spkId: 1,
      spk: bob.spk,
      pqId: 7,
      pq: bob.pq,
      opk: withOpk ? bob.opk : undefined,
    },
    alice.cert,
    first.header,
  );
  return {
    first,
    answer,
    a: Ratchet.initiator(first.sk, first.ad, bob.bundle.spk),
    b: Ratchet.responder(answer.sk, answer.ad, bob.spk),
  };
}

let shared: { pki: TestPki; alice: User; bob: User; carol: User } | undefined;
async function setup() {
  if (!shared) {
    const pki = await makePki(["alice", "bob", "carol"]);
    shared = {
      pki,
      alice: await makeUser(pki, "alice"),
      bob: await makeUser(pki, "bob"),
      carol: await makeUser(pki, "carol"),
    };
  }
  return shared;
}

Deno.test("verifyBundle() accepts a bundle its certificate signed and round-trips its JSON", async () => {
  const { pki, bob } = await setup();
  const parsed = parseBundle(JSON.parse(JSON.stringify(encodeBundle(bob.bundle))));
  const peer = await verifyBundle(pki.trust, bob.cert, parsed);
  assert.equal(peer.commonName, "bob");
});

Deno.test("verifyBundle() refuses altered bundles, another user's certificate, and a revoked certificate", async () => {
  const { pki, alice, bob } = await setup();
  const swapped: KeyBundle = { ...bob.bundle, spk: x25519KeyPair().publicKey };
  assert.equal(await codeOfAsync(() => verifyBundle(pki.trust, bob.cert, swapped)), "SIG_FAIL");
  const otherIk: KeyBundle = { ...bob.bundle, ik: alice.ik.publicKey };
  assert.equal(await codeOfAsync(() => verifyBundle(pki.trust, bob.cert, otherIk)), "SIG_FAIL");
  assert.equal(
    await codeOfAsync(() => verifyBundle(pki.trust, alice.cert, bob.bundle)),
    "BAD_CERT",
  );
  assert.equal(
    codeOfCall(() => parseBundle({ ...encodeBundle(bob.bundle), extra: 1 })),
    "PROTOCOL_ERROR",
  );
  const dir = await Deno.makeTempDir({ prefix: "securechat-e2e-revoked-" });
  try {
    const pki2 = await makePki(["alice", "bob"], "ed25519", dir);
    const bob2 = await makeUser(pki2, "bob");
    await verifyBundle(pki2.trust, bob2.cert, bob2.bundle);
    await revokeCertificates(dir, await loadCaSigner(dir), "bob", 7);
    const withCrl = await loadTrustStore(`${dir}/ca.pem`);
    assert.equal(
      await codeOfAsync(() => verifyBundle(withCrl, bob2.cert, bob2.bundle)),
      "BAD_CERT",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verifyBundle() refuses a substituted or renumbered PQ prekey (SIG_FAIL) and a signed one that fails the FIPS 203 modulus check (BAD_KEY_SHARE)", async () => {
  const { pki, bob } = await setup();
  // A server that put an ML-KEM key of its own in bob's bundle would hold the post-quantum
  // half of every first contact with bob: the certificate's signature covers the key and its
  // id (PROTOCOL §12.2), so the initiator refuses the bundle.
  const substitute = (await mlKem768.generateKeyPair()).encapsulationKey;
  assert.equal(
    await codeOfAsync(() => verifyBundle(pki.trust, bob.cert, { ...bob.bundle, pq: substitute })),
    "SIG_FAIL",
  );
  assert.equal(
    await codeOfAsync(() => verifyBundle(pki.trust, bob.cert, { ...bob.bundle, pqId: 8 })),
    "SIG_FAIL",
  );
  // Signed by bob's own certificate key, and still no encapsulation key: every coefficient
  // 0xfff ≥ q (FIPS 203 §7.2).
  const { sig: _sig, ikSig: _ikSig, ...unsigned } = bob.bundle;
  const unreduced = await signBundle((await pki.identity("bob")).signingKey, {
    ...unsigned,
    pq: new Uint8Array(1184).fill(0xff),
  });
  assert.equal(
    await codeOfAsync(() => verifyBundle(pki.trust, bob.cert, unreduced)),
    "BAD_KEY_SHARE",
  );
});

Deno.test("PQXDH: both sides derive the same secret, with and without a one-time prekey", async () => {
  const { pki, alice, bob } = await setup();
  for (const withOpk of [true, false]) {
    const { first, answer } = await converse(pki, alice, bob, withOpk);
    assert.equal(toHex(first.sk), toHex(answer.sk));
    assert.equal(toHex(first.ad), toHex(answer.ad));
    assert.equal(first.header.opkId !== undefined, withOpk);
  }
  const alicePeer = await verifyBundle(pki.trust, alice.cert, alice.bundle);
  await verifyIdentityKey(alicePeer, alice.ik.publicKey, alice.bundle.ikSig);
});

Deno.test("PQXDH: a tampered KEM ciphertext, ephemeral key or identity yields another secret or a refusal", async () => {
  const { pki, alice, bob, carol } = await setup();
  const { first } = await converse(pki, alice, bob);
  const responder = {
    ik: bob.ik,
    cert: bob.cert,
    spkId: 1,
    spk: bob.spk,
    pqId: 7,
    pq: bob.pq,
    opk: bob.opk,
  };
  const kemCt = first.header.kemCt.slice();
  kemCt[100] ^= 1;
  const a = await respondFirstContact(responder, alice.cert, { ...first.header, kemCt });
  assert.notEqual(toHex(a.sk), toHex(first.sk), "ML-KEM implicit rejection changes the secret");
  const b = await respondFirstContact(responder, alice.cert, {
    ...first.header,
    ek: x25519KeyPair().publicKey,
  });
  assert.notEqual(toHex(b.sk), toHex(first.sk));
  const c = await respondFirstContact(responder, carol.cert, first.header);
  assert.notEqual(toHex(c.sk), toHex(first.sk), "the initiator's certificate is bound in");
  assert.equal(
    await codeOfAsync(() =>
      respondFirstContact(responder, alice.cert, { ...first.header, spkId: 2 })
    ),
    "PROTOCOL_ERROR",
  );
  const peer = await verifyBundle(pki.trust, alice.cert, alice.bundle);
  assert.equal(
    await codeOfAsync(() => verifyIdentityKey(peer, carol.ik.publicKey, alice.bundle.ikSig)),
    "SIG_FAIL",
  );
});

Deno.test("Ratchet: messages both ways, out of order, replay and forgery refused without changing state", async () => {
  const { pki, alice, bob } = await setup();
  const { a, b } = await converse(pki, alice, bob);
  const bind = () => rand();
  const k1 = rand(), b1 = bind();
  const m1 = a.encrypt(k1, b1);
  assert.equal(b.canSend, false);
  assert.equal(toHex(b.decrypt(m1.header, m1.wrapped, b1)), toHex(k1));
  assert.equal(b.canSend, true);
  assert.equal(codeOfCall(() => b.decrypt(m1.header, m1.wrapped, b1)), "REPLAY");
  // bob replies twice; alice reads them in reverse order
  const k2 = rand(), b2 = bind(), k3 = rand(), b3 = bind();
  const m2 = b.encrypt(k2, b2);
  const m3 = b.encrypt(k3, b3);
  assert.equal(toHex(a.decrypt(m3.header, m3.wrapped, b3)), toHex(k3));
  assert.equal(toHex(a.decrypt(m2.header, m2.wrapped, b2)), toHex(k2));
  // a wrap moved to another record (another binding) or altered does not open, and nothing moves
  const k4 = rand(), b4 = bind();
  const m4 = a.encrypt(k4, b4);
  assert.equal(codeOfCall(() => b.decrypt(m4.header, m4.wrapped, bind())), "DECRYPT_FAIL");
  const bent = m4.wrapped.slice();
  bent[0] ^= 1;
  assert.equal(codeOfCall(() => b.decrypt(m4.header, bent, b4)), "DECRYPT_FAIL");
  assert.equal(
    codeOfCall(() => b.decrypt({ ...m4.header, dh: x25519KeyPair().publicKey }, m4.wrapped, b4)),
    "DECRYPT_FAIL",
  );
  assert.equal(
    toHex(b.decrypt(m4.header, m4.wrapped, b4)),
    toHex(k4),
    "state intact after forgeries",
  );
  assert.equal(
    codeOfCall(() => b.decrypt({ ...m4.header, n: m4.header.n + 5000 }, m4.wrapped, b4)),
    "PROTOCOL_ERROR",
  );
});

Deno.test("Ratchet: forward secrecy — a device's current keys do not open an earlier recorded message", async () => {
  const { pki, alice, bob } = await setup();
  const { a, b } = await converse(pki, alice, bob);
  const recorded: { m: ReturnType<Ratchet["encrypt"]>; bind: Uint8Array; k: Uint8Array }[] = [];
  for (let i = 0; i < 3; i++) {
    const k = rand(), bind = rand();
    const m = a.encrypt(k, bind);
    assert.equal(toHex(b.decrypt(m.header, m.wrapped, bind)), toHex(k));
    const rb = rand();
    const r = b.encrypt(rand(), rb);
    a.decrypt(r.header, r.wrapped, rb);
    recorded.push({ m, bind, k });
  }
  // An attacker steals bob's whole state now (what the state file holds) ...
  const stolen = Ratchet.fromJSON(JSON.parse(JSON.stringify(b.toJSON())));
  const stateText = JSON.stringify(b.toJSON());
  for (const { m, bind, k } of recorded) {
    // ... and cannot open anything recorded before; no earlier k appears in the state.
    assert.notEqual(codeOfCall(() => stolen.decrypt(m.header, m.wrapped, bind)), "no error");
    assert.ok(!stateText.includes(btoa(String.fromCharCode(...k))));
  }
  // Not merely refused by bookkeeping: a modified lib that forgets how far it read (counters
  // back to 0), or the ratchet key it last saw (so it re-runs the DH step from the stolen root),
  // derives other keys from the stolen state, and every earlier wrap fails to open.
  const json = b.toJSON();
  assert.equal(json.skipped.length, 0, "no message key is left over");
  const forgetful = [
    { ...json, nr: 0, pn: 0 },
    { ...json, dhr: btoa(String.fromCharCode(...x25519KeyPair().publicKey)), nr: 0, pn: 0 },
  ];
  for (const modified of forgetful) {
    for (const { m, bind } of recorded) {
      const thief = Ratchet.fromJSON(JSON.parse(JSON.stringify(modified)));
      assert.equal(codeOfCall(() => thief.decrypt(m.header, m.wrapped, bind)), "DECRYPT_FAIL");
    }
  }
});

Deno.test("Ratchet: post-compromise — after one round trip of new ratchet keys, a stolen state reads nothing new", async () => {
  const { pki, alice, bob } = await setup();
  const { a, b } = await converse(pki, alice, bob);
  const k0 = rand(), b0 = rand();
  const m0 = a.encrypt(k0, b0);
  b.decrypt(m0.header, m0.wrapped, b0);
  const stolen = Ratchet.fromJSON(b.toJSON());
  // the thief can read what follows on the current chain (that is the compromise) ...
  const k1 = rand(), b1 = rand();
  const m1 = a.encrypt(k1, b1);
  assert.equal(toHex(stolen.decrypt(m1.header, m1.wrapped, b1)), toHex(k1));
  b.decrypt(m1.header, m1.wrapped, b1);
  // ... and, with every message on the wire, even the next step: bob's ratchet key is stolen.
  const rb = rand();
  const r = b.encrypt(rand(), rb);
  a.decrypt(r.header, r.wrapped, rb);
  const k2 = rand(), b2 = rand();
  const m2 = a.encrypt(k2, b2);
  assert.equal(toHex(stolen.decrypt(m2.header, m2.wrapped, b2)), toHex(k2));
  b.decrypt(m2.header, m2.wrapped, b2);
  // Bob's answer carries a ratchet key made after the theft; alice's next message is out of reach.
  const rb2 = rand();
  const r2 = b.encrypt(rand(), rb2);
  a.decrypt(r2.header, r2.wrapped, rb2);
  const k3 = rand(), b3 = rand();
  const m3 = a.encrypt(k3, b3);
  assert.equal(codeOfCall(() => stolen.decrypt(m3.header, m3.wrapped, b3)), "DECRYPT_FAIL");
  assert.equal(toHex(b.decrypt(m3.header, m3.wrapped, b3)), toHex(k3));
});

Deno.test("Ratchet: toJSON/fromJSON continue the conversation; a malformed saved state is refused", async () => {
  const { pki, alice, bob } = await setup();
  const { a, b } = await converse(pki, alice, bob);
  const skippedK = rand(), skippedB = rand();
  const skipped = a.encrypt(skippedK, skippedB);
  const k = rand(), bind = rand();
  const m = a.encrypt(k, bind);
  b.decrypt(m.header, m.wrapped, bind);
  const b2 = Ratchet.fromJSON(JSON.parse(JSON.stringify(b.toJSON())));
  assert.equal(toHex(b2.decrypt(skipped.header, skipped.wrapped, skippedB)), toHex(skippedK));
  assert.equal(codeOfCall(() => Ratchet.fromJSON({ ...b.toJSON(), rk: "AAAA" })), "PROTOCOL_ERROR");
});

Deno.test("SenderChain: members open lobby keys; a departed member cannot open the next chain, a newcomer not the last", () => {
  const bind = () => rand();
  const first = SenderChain.fresh("alice");
  const bob = new SenderKeyReceiver("alice", first.distribution());
  const carol = new SenderKeyReceiver("alice", first.distribution());
  const early = { k: rand(), b: bind() };
  const earlyMsg = first.encrypt(early.k, early.b);
  assert.equal(
    toHex(bob.decrypt(earlyMsg.id, earlyMsg.n, earlyMsg.wrapped, early.b)),
    toHex(early.k),
  );
  assert.equal(
    toHex(carol.decrypt(earlyMsg.id, earlyMsg.n, earlyMsg.wrapped, early.b)),
    toHex(early.k),
  );
  assert.equal(
    codeOfCall(() => bob.decrypt(earlyMsg.id, earlyMsg.n, earlyMsg.wrapped, early.b)),
    "REPLAY",
  );

  // carol leaves: alice starts a new chain and gives it to bob only; dave joins and gets it too
  const second = SenderChain.fresh("alice");
  const bob2 = new SenderKeyReceiver("alice", second.distribution());
  const dave = new SenderKeyReceiver("alice", second.distribution());
  const next = { k: rand(), b: bind() };
  const nextMsg = second.encrypt(next.k, next.b);
  assert.equal(toHex(bob2.decrypt(nextMsg.id, nextMsg.n, nextMsg.wrapped, next.b)), toHex(next.k));
  assert.equal(toHex(dave.decrypt(nextMsg.id, nextMsg.n, nextMsg.wrapped, next.b)), toHex(next.k));
  // carol's client, modified to ignore the chain id, steps her old chain as far as it likes
  assert.equal(
    codeOfCall(() => carol.decrypt(nextMsg.id, nextMsg.n, nextMsg.wrapped, next.b)),
    "DECRYPT_FAIL",
  );
  const oldCk = first.distribution();
  for (let n = oldCk.n; n < oldCk.n + 50; n++) {
    const hacked = new SenderKeyReceiver("alice", { id: nextMsg.id, n, ck: oldCk.ck });
    assert.equal(
      codeOfCall(() => hacked.decrypt(nextMsg.id, n, nextMsg.wrapped, next.b)),
      "DECRYPT_FAIL",
    );
  }
  // dave holds only the new chain: the earlier lobby line is not his to open
  assert.equal(
    codeOfCall(() => dave.decrypt(earlyMsg.id, earlyMsg.n, earlyMsg.wrapped, early.b)),
    "DECRYPT_FAIL",
  );
  // a member cannot re-attribute: the wrap names its author
  const asCarol = new SenderKeyReceiver("carol", second.distribution());
  const more = { k: rand(), b: bind() };
  const moreMsg = second.encrypt(more.k, more.b);
  assert.equal(
    codeOfCall(() => asCarol.decrypt(moreMsg.id, moreMsg.n, moreMsg.wrapped, more.b)),
    "DECRYPT_FAIL",
  );
});

Deno.test("SenderKeyReceiver: skipped lobby lines open later, once; a forged one leaves the chain as it was", () => {
  const chain = SenderChain.fresh("alice");
  const bob = new SenderKeyReceiver("alice", chain.distribution());
  const msgs = [0, 1, 2].map(() => {
    const k = rand(), b = rand();
    return { k, b, m: chain.encrypt(k, b) };
  });
  const bent = msgs[2].m.wrapped.slice();
  bent[5] ^= 1;
  assert.equal(codeOfCall(() => bob.decrypt(msgs[2].m.id, 2, bent, msgs[2].b)), "DECRYPT_FAIL");
  for (const i of [2, 0, 1]) {
    assert.equal(
      toHex(bob.decrypt(msgs[i].m.id, i, msgs[i].m.wrapped, msgs[i].b)),
      toHex(msgs[i].k),
    );
  }
  assert.equal(
    codeOfCall(() => bob.decrypt(msgs[0].m.id, 0, msgs[0].m.wrapped, msgs[0].b)),
    "REPLAY",
  );
});

Deno.test("E2eClient.prepareLobby() waits for the whole online list, the chunk without more, before it keys anyone", async () => {
  // Before (interop finding 39): the first chunk let the line go, so its chain went to the first
  // chunk's members only and every later chunk's member showed "no key" for it.
  const { pki } = await setup();
  const id = await pki.identity("alice");
  const e2e = await E2eClient.open(new MemoryStorage(), {
    user: "alice",
    certDer: id.certDer,
    signingKey: id.signingKey,
  }, pki.trust);
  const asked: string[] = [];
  // A server whose every device list is empty: nobody can be keyed, and each says why.
  const channel = {
    send(body: Body, to: string): Promise<number> {
      if (body.kind === "keys_fetch") {
        asked.push(body.user);
        queueMicrotask(() =>
          void e2e.onKeys({ kind: "keys", user: body.user, devices: [] }, channel)
        );
      } else assert.fail(`unexpected ${body.kind} to ${to}`);
      return Promise.resolve(asked.length);
    },
  };
  e2e.onMembers({ kind: "members", event: "online", users: ["alice", "bob"], more: true });
  let done = false;
  const prepared = e2e.prepareLobby(channel).finally(() => done = true);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(asked, [], "nobody is asked for before the online list is whole");
  assert.equal(done, false);
  e2e.onMembers({ kind: "members", event: "online", users: ["carol"] });
  const { unreadable } = await prepared;
  assert.deepEqual(asked.sort(), ["bob", "carol"]);
  assert.deepEqual(unreadable.map((u) => u.user).sort(), ["bob", "carol"]);
});

/**
 * A server whose key directory holds bob's one device as `published()` says: listed bare when
 * the asker names it in `known`, else with its certificate and bundle. Every fetch's `known`
 * goes into `asked`.
 */
function bobsDirectory(
  client: E2eClient,
  device: string,
  published: () => { cert: Uint8Array; bundle: KeyBundle },
  asked: string[][],
) {
  const channel = {
    send(body: Body, to: string): Promise<number> {
      if (body.kind !== "keys_fetch") assert.fail(`unexpected ${body.kind} to ${to}`);
      const known = body.known ?? [];
      asked.push(known);
      const { cert, bundle } = published();
      const devices = known.includes(device)
        ? [{ device, lobby: true as const }]
        : [{ device, cert: toBase64(cert), bundle: encodeBundle(bundle), lobby: true as const }];
      queueMicrotask(() => void client.onKeys({ kind: "keys", user: "bob", devices }, channel));
      return Promise.resolve(asked.length);
    },
  };
  return channel;
}

Deno.test("E2eClient.prepare(): a contact device whose certificate was re-issued and the old one revoked (a key rotation, PROTOCOL §6.6) is fetched afresh and reached; one still published under the revoked certificate is refused", async () => {
  // Before: the device the server listed bare (in `known`) was refused BAD_CERT for the
  // revoked certificate of the session made with it, and the first line after a documented key
  // rotation was not sent.
  const dir = await Deno.makeTempDir({ prefix: "securechat-e2e-rotation-" });
  try {
    const pki = await makePki(["alice", "bob"], "ed25519", dir);
    const aliceId = await pki.identity("alice");
    const aliceMe = { user: "alice", certDer: aliceId.certDer, signingKey: aliceId.signingKey };
    const bobStorage = new MemoryStorage();
    const bobOld = await pki.identity("bob");
    const bob = await E2eClient.open(bobStorage, {
      user: "bob",
      certDer: bobOld.certDer,
      signingKey: bobOld.signingKey,
    }, pki.trust);
    await bob.save();
    // The server's directory: bob's one device, as last published.
    let published = { cert: bobOld.certDer, bundle: await bob.bundle() };
    const asked: string[][] = [];
    const serverFor = (client: E2eClient) =>
      bobsDirectory(client, bob.device, () => published, asked);
    const aliceStorage = new MemoryStorage();
    const alice = await E2eClient.open(aliceStorage, aliceMe, pki.trust);
    assert.deepEqual(await alice.prepare("bob", serverFor(alice)), { devices: 1, refused: [] });
    await alice.save();
    const withSession = await aliceStorage.load();

    // bob's first certificate is revoked; the server has not taken the CRL, so it still hands
    // out the device's bundle under that certificate: refused, as a thief's would be.
    await revokeCertificates(dir, await loadCaSigner(dir), "bob", 7);
    const withCrl = await loadTrustStore(`${dir}/ca.pem`);
    const aliceLate = await E2eClient.open(aliceStorage, aliceMe, withCrl);
    asked.length = 0;
    assert.equal(
      await codeOfAsync(() => aliceLate.prepare("bob", serverFor(aliceLate))),
      "BAD_CERT",
    );
    assert.deepEqual(asked, [[bob.device], []], "asked with the device known, then afresh");

    // The rotation: bob's device (same state) now holds a re-issued certificate and has
    // published its bundle under it.
    await pki.issue("bob");
    const bobNew = await pki.identity("bob");
    const bobRotated = await E2eClient.open(bobStorage, {
      user: "bob",
      certDer: bobNew.certDer,
      signingKey: bobNew.signingKey,
    }, withCrl);
    assert.equal(bobRotated.device, bob.device);
    published = { cert: bobNew.certDer, bundle: await bobRotated.bundle() };
    await aliceStorage.save(withSession);
    const aliceAfter = await E2eClient.open(aliceStorage, aliceMe, withCrl);
    asked.length = 0;
    assert.deepEqual(await aliceAfter.prepare("bob", serverFor(aliceAfter)), {
      devices: 1,
      refused: [],
    });
    assert.deepEqual(asked, [[bob.device], []]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("E2eClient.prepare(): a CRL of our own past its nextUpdate refuses the line and drops no session (interop finding 94)", async () => {
  // Before: the stale CRL failed every contact certificate's validation, which dropped every
  // session with the contact's devices for good (ratchet sessions cannot be rebuilt).
  const dir = await Deno.makeTempDir({ prefix: "securechat-e2e-stale-crl-" });
  try {
    const pki = await makePki(["alice", "bob", "carol"], "ed25519", dir);
    const aliceId = await pki.identity("alice");
    const aliceMe = { user: "alice", certDer: aliceId.certDer, signingKey: aliceId.signingKey };
    const bobId = await pki.identity("bob");
    const bob = await E2eClient.open(new MemoryStorage(), {
      user: "bob",
      certDer: bobId.certDer,
      signingKey: bobId.signingKey,
    }, pki.trust);
    const published = { cert: bobId.certDer, bundle: await bob.bundle() };
    const asked: string[][] = [];
    const serverFor = (client: E2eClient) =>
      bobsDirectory(client, bob.device, () => published, asked);
    const aliceStorage = new MemoryStorage();
    const alice = await E2eClient.open(aliceStorage, aliceMe, pki.trust);
    assert.deepEqual(await alice.prepare("bob", serverFor(alice)), { devices: 1, refused: [] });
    await alice.save();

    // A CRL (revoking carol) whose nextUpdate is a second away, then past.
    await revokeCertificates(dir, await loadCaSigner(dir), "carol", 1 / 86_400);
    const stale = await loadTrustStore(`${dir}/ca.pem`);
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    const aliceStale = await E2eClient.open(aliceStorage, aliceMe, stale);
    asked.length = 0;
    assert.equal(
      await codeOfAsync(() => aliceStale.prepare("bob", serverFor(aliceStale))),
      "BAD_CERT",
    );
    assert.deepEqual(asked, [[bob.device]], "not asked afresh: nothing was dropped");

    // A current CRL again: the session with bob's device is still there.
    await revokeCertificates(dir, await loadCaSigner(dir), "carol", 7);
    const current = await loadTrustStore(`${dir}/ca.pem`);
    const aliceAfter = await E2eClient.open(aliceStorage, aliceMe, current);
    asked.length = 0;
    assert.deepEqual(await aliceAfter.prepare("bob", serverFor(aliceAfter)), {
      devices: 1,
      refused: [],
    });
    assert.deepEqual(asked, [[bob.device]], "the device is still known");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
