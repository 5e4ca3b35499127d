/**
 * What the server derives from a user's msg (PROTOCOL §6.4 "Making the proof", §6.6)
 * must verify at the recipient, or an honest recipient's session ends. Random batches, random
 * msgs (a run of consecutive records of the batch with its proof), random relays of some of a
 * msg's records: each record made whole (ReceivedGroup.whole) must carry a path that proves the
 * batch's root (§6.1 step 1), its JSON (what `stored` and the cluster carry) the same path, and
 * every relay the server builds from those records must prove the root by ROOT (§6.4).
 */
import assert from "node:assert/strict";
import { ByteBuilder, fromBase64, toBase64, toHex } from "../../lib/bytes.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import { decodeClusterRecord, preparedRelayOf } from "../../lib/server/cluster_record.ts";
import { MAX_CONTENT_BYTES } from "../../lib/handshake/record.ts";
import { fuzzSeed, seededInts } from "../../testkit/fuzz.ts";
import {
  C2sMsgShape,
  decodeRecord,
  encodeRecord,
  groupProof,
  groupRoot,
  leafHash,
  LOBBY,
  MAX_BATCH,
  merkleTree,
  type MessageRecord,
  prepareRelay,
  ReceivedGroup,
  RecipientRelayGroup,
  RecordJsonShape,
  rootFromPath,
  sealContent,
  signBatch,
  userMsgItem,
  userMsgsOf,
  userRecipient,
} from "../../lib/message/record.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";

const der = crypto.getRandomValues(new Uint8Array(300));
const fingerprint = toHex(crypto.getRandomValues(new Uint8Array(32)));
const author = { fingerprint, cert: { base64: toBase64(der), der } };
/** Case t runs from seed SEED + t; the seed is printed, `SECURECHAT_FUZZ_SEED=<seed>` replays it. */
const SEED = fuzzSeed();
console.log(`derived path seed ${SEED} (replay: SECURECHAT_FUZZ_SEED=${SEED})`);

function trial(seed: number): void {
  const rand = seededInts(seed);
  const n = 1 + rand(32);
  const first = 1 + rand(50);
  const sid = toHex(crypto.getRandomValues(new Uint8Array(16)));
  const made = Array.from({ length: n }, (_, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `line ${j}` });
    const record: MessageRecord = {
      sid,
      dir: "c2s",
      to: rand(3) === 0 ? userRecipient("bob") : LOBBY,
      seqno: first + j,
      ts: 1_700_000_000_000 + j,
      ct,
      c,
    };
    return { record, k };
  });
  const leaves = made.map(({ record }) => leafHash(record));
  const { root, paths } = merkleTree(leaves);
  const sig = crypto.getRandomValues(new Uint8Array(64));
  // The msg: records a … b of the batch, and the proof a client sends with them.
  const a = rand(n);
  const b = a + rand(n - a);
  const inMsg = Array.from({ length: b - a + 1 }, (_, j) => a + j);
  const msgProof = groupProof(inMsg, n, inMsg.map((i) => paths[i]));
  const what = `seed ${seed}: n ${n}, msg ${a}..${b}`;
  assert.equal(
    toHex(groupRoot(inMsg.map((i) => leaves[i]), inMsg, n, msgProof)!),
    toHex(root),
    what,
  );
  // As the server has them: decoded, without sig and batch.
  const records = inMsg.map((i) => ({ ...made[i].record }));
  const jsons = records.map((r) => encodeRecord(r));
  const group = new ReceivedGroup(
    { sig: toBase64(sig), first, n, proof: msgProof.map(toBase64) },
    { sig, first, n, proof: msgProof },
    records,
    inMsg.map((i) => leaves[i]),
  );
  const forms = jsons.map((json, j) => group.whole(j, json));
  forms.forEach((f, j) => {
    const i = inMsg[j];
    // §6.3 step 7 counts the whole record's length without laying it out: it must be exact.
    const counted = f.wholeLength;
    assert.equal(counted, f.bytes.length, `${what}: record ${i}'s wholeLength`);
    const batch = f.record.batch!;
    assert.equal(batch.i, i, what);
    assert.equal(batch.n, n, what);
    const got = rootFromPath(leaves[i], batch.i, batch.n, batch.path);
    assert.equal(got && toHex(got), toHex(root), `${what}: record ${i}'s derived path`);
    assert.deepEqual(batch.path.map(toHex), paths[i].map(toHex), `${what}: record ${i}'s path`);
    // The whole record's JSON (a `stored` row, the cluster's stream) carries the same path.
    const whole = RecordJsonShape.safeParse(JSON.parse(new TextDecoder().decode(f.bytes)));
    assert.ok(whole.success, what);
    const back = decodeRecord(whole.data);
    assert.deepEqual(back.batch!.path.map(toHex), paths[i].map(toHex), `${what}: ${i}'s JSON`);
    assert.equal(toHex(back.sig!), toHex(sig), what);
    // The cluster's stream and the offline queue serialise the JSON object itself.
    const viaStringify = RecordJsonShape.safeParse(JSON.parse(JSON.stringify(f.json)));
    assert.ok(viaStringify.success, what);
    assert.deepEqual(
      decodeRecord(viaStringify.data).batch!.path.map(toHex),
      paths[i].map(toHex),
      `${what}: ${i}'s JSON.stringify`,
    );
  });
  // A relay of a random subset of the msg's records (in order), as one recipient gets it.
  const chosen = inMsg.map((_, j) => j).filter(() => rand(2) === 0);
  if (chosen.length === 0) chosen.push(rand(inMsg.length));
  const prepared = chosen.map((j) => prepareRelay(author, forms[j], made[inMsg[j]].k));
  const relay = new RecipientRelayGroup(prepared[0], 7, 1_700_000_000_500, rand(2) === 0);
  for (const p of prepared.slice(1)) {
    assert.ok(relay.takes(p), `${what}: a later record of the msg joins`);
    relay.add(p);
  }
  const out = new ByteBuilder();
  relay.writeTo(out);
  // What the recipient reads (PROTOCOL §6.4 "A relay on the wire"), checked by the relay's shape.
  const m = readRelay(out.done());
  const got = groupRoot(
    m.records.map((item) => leafHash(decodeRecord(item.record))),
    m.records.map((item) => item.record.seqno - m.first),
    m.n,
    m.proof.map(fromBase64),
  );
  assert.equal(
    got && toHex(got),
    toHex(root),
    `${what}: relay of ${chosen.map((j) => inMsg[j])}`,
  );
}

Deno.test("paths and relay proofs derived from a user's msg prove the batch's root (2000 random cases)", () => {
  const base = SEED;
  for (let t = 0; t < 2000; t++) trial(base + t);
});

Deno.test("a batch of 32 of the largest lines leaves in msgs that each fit one record and prove the root (userMsgsOf)", async () => {
  const pair = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const key = await importSigningKeyPkcs8(
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
  );
  const sid = toHex(crypto.getRandomValues(new Uint8Array(16)));
  for (const size of [4000, 1500, 300, 1]) {
    const made = Array.from({ length: MAX_BATCH }, (_, j) => {
      // The largest body a text may have: 4000 units each written \uXXXX (PROTOCOL §6.1).
      const { k, ct, c } = sealContent({ kind: "text", text: "\u0001".repeat(size) });
      const record: MessageRecord = {
        sid,
        dir: "c2s",
        to: j % 3 === 0 ? userRecipient("bob") : LOBBY,
        seqno: 10 + j,
        ts: 1_700_000_000_000 + j,
        ct,
        c,
      };
      return { record, k };
    });
    await signBatch(key, made.map((m) => m.record));
    const root = merkleTree(made.map(({ record }) => leafHash(record))).root;
    const msgs = userMsgsOf(made.map(({ record, k }) => userMsgItem(record, k)));
    let next = 10;
    for (const msg of msgs) {
      const out = new ByteBuilder(msg.length);
      msg.writeTo(out);
      const bytes = out.done();
      assert.equal(bytes.length, msg.length);
      assert.ok(bytes.length <= MAX_CONTENT_BYTES, `size ${size}: ${bytes.length} bytes`);
      const parsed = C2sMsgShape.safeParse(JSON.parse(new TextDecoder().decode(bytes)));
      assert.ok(parsed.success, `size ${size}`);
      const m = parsed.data;
      assert.equal(m.records[0].record.seqno, next, "consecutive across msgs");
      next += m.records.length;
      const got = groupRoot(
        m.records.map((item) => leafHash(decodeRecord(item.record))),
        m.records.map((item) => item.record.seqno - m.first),
        m.n,
        m.proof.map(fromBase64),
      );
      assert.equal(got && toHex(got), toHex(root), `size ${size}`);
    }
    assert.equal(next, 10 + MAX_BATCH);
    if (size === 1) assert.equal(msgs.length, 1, "a batch of short lines is one msg");
  }
});

Deno.test("records of a batch split over two msgs, through the cluster's form, join one relay whose proof proves the root (500 random cases)", () => {
  const base = SEED;
  for (let t = 0; t < 500; t++) {
    const rand = seededInts(base + t);
    const n = 2 + rand(31);
    const split = 1 + rand(n - 1); // msg 1: 0 … split − 1, msg 2: split … n − 1
    const sid = toHex(crypto.getRandomValues(new Uint8Array(16)));
    const made = Array.from({ length: n }, (_, j) => {
      const { k, ct, c } = sealContent({ kind: "text", text: `line ${j}` });
      const record: MessageRecord = { sid, dir: "c2s", to: LOBBY, seqno: 1 + j, ts: 1 + j, ct, c };
      return { record, k };
    });
    const leaves = made.map(({ record }) => leafHash(record));
    const { root, paths } = merkleTree(leaves);
    const sig = crypto.getRandomValues(new Uint8Array(64));
    const msgForms = [[0, split], [split, n]].flatMap(([from, to]) => {
      const inMsg = Array.from({ length: to - from }, (_, j) => from + j);
      const proof = groupProof(inMsg, n, inMsg.map((i) => paths[i]));
      const group = new ReceivedGroup(
        { sig: toBase64(sig), first: 1, n, proof: proof.map(toBase64) },
        { sig, first: 1, n, proof },
        inMsg.map((i) => ({ ...made[i].record })),
        inMsg.map((i) => leaves[i]),
      );
      return inMsg.map((i, j) => group.whole(j, encodeRecord({ ...made[i].record })));
    });
    // As another node reads them from the stream (Lobby: clusterRelayOf, preparedRelayOf).
    const prepared = msgForms.map((forms, i) => {
      const wire = JSON.stringify({
        relay: { cert: author.cert.base64, record: forms.json, k: toBase64(made[i].k) },
      });
      const decoded = decodeClusterRecord(JSON.parse(wire));
      assert.ok("relay" in decoded);
      return preparedRelayOf(decoded.relay);
    });
    const chosen = prepared.filter(() => rand(2) === 0);
    if (chosen.length === 0) chosen.push(prepared[rand(n)]);
    const relay = new RecipientRelayGroup(chosen[0], 9, 1_700_000_000_500, false);
    for (const p of chosen.slice(1)) {
      assert.ok(relay.takes(p), `case ${base + t}: a later record of the batch joins`);
      relay.add(p);
    }
    const out = new ByteBuilder();
    relay.writeTo(out);
    const m = readRelay(out.done());
    const got = groupRoot(
      m.records.map((item) => leafHash(decodeRecord(item.record))),
      m.records.map((item) => item.record.seqno - m.first),
      m.n,
      m.proof.map(fromBase64),
    );
    assert.equal(got && toHex(got), toHex(root), `case ${base + t}: n ${n}, split ${split}`);
  }
});
