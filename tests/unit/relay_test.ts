/**
 * lib/session/relay.ts directly: RelayVerifier accepts an author's genuine records as the
 * server forwards them (PROTOCOL §6.4: a relay of one batch's records, §6.6: a stored record
 * whole) and refuses every way a server could alter, forge,
 * move or replay one, each with its own code; SeenStore keeps the high-water marks across
 * sessions (a record accepted in an earlier session comes back flagged, not shown again)
 * and survives a restart through its file.
 */
import assert from "node:assert/strict";
import { toBase64, toHex } from "../../lib/bytes.ts";
import { codeOf, SecureChatError } from "../../lib/errors.ts";
import type { Identity } from "../../lib/handshake/common.ts";
import {
  type Body,
  encodeRecord,
  groupProof,
  LOBBY,
  MAX_STORED_AGE_MS,
  type MessageRecord,
  type RecordJson,
  type RelayMessage,
  sealContent,
  sealPlaintext,
  signBatch,
  type StoredMessage,
  userRecipient,
} from "../../lib/message/record.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type E2eUnwrap,
  type RelayedText,
  RelayVerifier,
  SeenStore,
} from "../../lib/session/relay.ts";
import { seenFile } from "../../lib/session/seen_file.ts";
import { makePki } from "../../testkit/pki.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";
import { RATCHET_ENVELOPE, SENDER_ENVELOPE } from "../helpers/records.ts";

const pki = await makePki(["alice", "bob"]);
const rogue = await makePki(["alice"]); // same name, a CA nobody trusts
const alice = await pki.identity("alice");
const bob = await pki.identity("bob");
globalThis.addEventListener("unload", () => {
  for (const dir of [pki.dir, rogue.dir]) Deno.removeSync(dir, { recursive: true });
});

const SID = toHex(crypto.getRandomValues(new Uint8Array(16)));
const SESSION_TIME = Date.now();

/** What the server forwards: a relay of one batch's records, or a stored record. */
type Forwarded = RelayMessage | StoredMessage;

/** A record as a relay carries it (PROTOCOL §6.4): without `sig` and `batch`. */
function relayedJson(record: MessageRecord): RecordJson {
  const { sig: _sig, batch: _batch, ...rest } = encodeRecord(record);
  return rest;
}

/**
 * `author`'s signed records (of one batch, in seqno order) as the server relays them in one
 * relay: each without `sig` and `batch`, the batch's `sig`, `first`, `n` once, and the proof
 * made from the records' own paths (PROTOCOL §6.4); its certificate introduced.
 */
function relayOf(
  author: Identity,
  made: { record: MessageRecord; k: Uint8Array }[],
  e2e?: E2eEnvelope,
): RelayMessage {
  const head = made[0].record;
  const first = head.seqno - head.batch!.i;
  const n = head.batch!.n;
  return {
    type: "relay",
    seqno: 1,
    ts: Date.now(),
    author_fp: fingerprintOf(author.certDer),
    cert: toBase64(author.certDer),
    sig: toBase64(head.sig!),
    first,
    n,
    proof: groupProof(
      made.map(({ record }) => record.seqno - first),
      n,
      made.map(({ record }) => record.batch!.path),
    ).map(toBase64),
    records: made.map(({ record, k }) => ({
      record: relayedJson(record),
      ...(e2e ? { e2e } : { k: toBase64(k) }),
    })),
  };
}

/** What a check of a message of one record says of that record. */
async function checkOne(v: RelayVerifier, message: Forwarded): Promise<RelayedText> {
  const { texts } = await v.check(message);
  assert.equal(texts.length, 1);
  return texts[0];
}

/**
 * What `author` would send, as the server relays it: the signed record, its certificate
 * introduced, and its content key `k` (also returned) carried as `k` or, with `e2e`, inside
 * that end-to-end envelope instead.
 */
async function signedRelay(
  author: Identity,
  seqno: number,
  o: {
    to?: string;
    ts?: number;
    body?: Body;
    signer?: Identity;
    edit?: (r: MessageRecord) => void;
    type?: "relay" | "stored";
    e2e?: E2eEnvelope;
    /** Sealed instead of `body`'s JSON: bytes no honest author sends. */
    plaintext?: Uint8Array;
  } = {},
): Promise<{ relay: Forwarded; k: Uint8Array }> {
  const { k, ct, c } = o.plaintext
    ? sealPlaintext(o.plaintext)
    : sealContent(o.body ?? { kind: "text", text: `message ${seqno}` });
  const record: MessageRecord = {
    sid: SID,
    dir: "c2s",
    to: o.to ?? LOBBY,
    seqno,
    ts: o.ts ?? Date.now(),
    ct,
    c,
  };
  await signBatch((o.signer ?? author).signingKey, [record]);
  o.edit?.(record);
  if (o.type !== "stored") return { relay: relayOf(author, [{ record, k }], o.e2e), k };
  const relay: StoredMessage = {
    type: "stored",
    seqno: 1,
    ts: Date.now(),
    author_fp: fingerprintOf(author.certDer),
    cert: toBase64(author.certDer),
    record: encodeRecord(record),
    ...(o.e2e ? { e2e: o.e2e } : { k: toBase64(k) }),
  };
  return { relay, k };
}

/** A relay of `author`'s record with its content key as `k` (PROTOCOL §6.4). */
async function relayed(
  author: Identity,
  seqno: number,
  o: Parameters<typeof signedRelay>[2] = {},
): Promise<Forwarded> {
  return (await signedRelay(author, seqno, o)).relay;
}

/** The same message naming its author's certificate only, as once a session holds it (§6.4.1). */
function named<T extends Forwarded>(relay: T): T {
  const { cert: _introduced, ...rest } = relay;
  return rest as T;
}

const verifier = (seen = SeenStore.memory()) =>
  new RelayVerifier({
    trust: pki.trust,
    seen,
    username: "bob",
    sessionTime: SESSION_TIME,
    maxSkewMs: 5 * 60 * 1000,
  });

async function codeOfCheck(v: RelayVerifier, relay: Forwarded): Promise<string> {
  try {
    await checkOne(v, relay);
    return "ok";
  } catch (error) {
    return codeOf(error);
  }
}

Deno.test("RelayVerifier.check() returns the author, the text and the record", async () => {
  const got = await checkOne(verifier(), await relayed(alice, 1));
  assert.equal(got.author, "alice");
  assert.equal(got.text, "message 1");
  assert.equal(got.private, false);
  assert.equal(got.duplicate, false);
  const privately = await checkOne(
    verifier(),
    await relayed(alice, 1, { to: userRecipient("Bob") }),
  );
  assert.equal(privately.private, true);
});

/** alice's records 1..n signed as one batch (PROTOCOL §6.1), each with its content key. */
async function signedBatch(n: number, signer = alice) {
  const made = Array.from({ length: n }, (_, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `batched ${j + 1}` });
    const record: MessageRecord = {
      sid: SID,
      dir: "c2s",
      to: LOBBY,
      seqno: j + 1,
      ts: Date.now(),
      ct,
      c,
    };
    return { record, k };
  });
  await signBatch(signer.signingKey, made.map((m) => m.record));
  return made;
}

Deno.test("RelayVerifier.check() takes a relay of a whole batch: every record, in order, under one signature", async () => {
  const got = await verifier().check(relayOf(alice, await signedBatch(3)));
  assert.deepEqual(got.texts.map((t) => t.text), ["batched 1", "batched 2", "batched 3"]);
  assert.deepEqual(got.texts.map((t) => t.record.seqno), [1, 2, 3]);
  assert.equal(got.group?.n, 3);
  assert.equal(got.group?.proof.length, 0, "a whole batch needs no proof");
});

Deno.test("RelayVerifier.check() takes a batch in parts: relays of some of its records, each with its proof", async () => {
  const made = await signedBatch(5);
  const v = verifier();
  const first = await v.check(relayOf(alice, [made[0], made[2]]));
  assert.deepEqual(first.texts.map((t) => t.text), ["batched 1", "batched 3"]);
  // bob need not get every record (the others went to other recipients).
  const rest = { ...named(relayOf(alice, [made[4]])), seqno: 2 };
  assert.deepEqual((await v.check(rest)).texts.map((t) => t.text), ["batched 5"]);
});

Deno.test("RelayVerifier.check() refuses a relay whose group does not prove its records (PROTOCOL §6.4), each with its code", async () => {
  const made = await signedBatch(5);
  const flip = (text: string) => {
    const bytes = Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
    bytes[0] ^= 1;
    return toBase64(bytes);
  };
  const other = await signedBatch(5, bob);
  const cases: [string, () => RelayMessage, string][] = [
    ["a proof entry flipped", () => {
      const r = relayOf(alice, [made[1]]);
      r.proof[0] = flip(r.proof[0]);
      return r;
    }, "SIG_FAIL"],
    ["a proof entry missing", () => {
      const r = relayOf(alice, [made[1]]);
      r.proof.pop();
      return r;
    }, "PROTOCOL_ERROR"],
    ["a proof of another record", () => ({
      ...relayOf(alice, [made[1]]),
      proof: relayOf(alice, [made[2]]).proof,
    }), "SIG_FAIL"],
    [
      "n changed, the proof no longer fits",
      () => ({ ...relayOf(alice, made), n: 6 }),
      "PROTOCOL_ERROR",
    ],
    ["another signature", () => {
      const r = relayOf(alice, made);
      return { ...r, sig: flip(r.sig) };
    }, "SIG_FAIL"],
    ["bob's signature of the same statement, as alice's", () => ({
      ...relayOf(alice, made),
      sig: relayOf(bob, other).sig,
    }), "SIG_FAIL"],
    ["a record's ts changed", () => {
      const r = relayOf(alice, made);
      r.records[2].record = { ...r.records[2].record, ts: r.records[2].record.ts + 1 };
      return r;
    }, "SIG_FAIL"],
  ];
  for (const [name, make, code] of cases) {
    assert.equal(await codeOfCheck(verifier(), make()), code, name);
  }
  // A forged relay after a genuine one of the same batch: the cache must not pass it.
  const v = verifier();
  await v.check(relayOf(alice, [made[0]]));
  const forged = { ...named(relayOf(alice, [made[1]])), seqno: 2, sig: relayOf(bob, other).sig };
  assert.equal(await codeOfCheck(v, forged), "SIG_FAIL", "bob's signature after alice's");
});

Deno.test("RelayVerifier.check(): one bad record refuses the whole relay, and none of its records is marked", async () => {
  const made = await signedBatch(3);
  const seen = SeenStore.memory();
  const r = relayOf(alice, made);
  r.records[2].record = { ...r.records[2].record, to: userRecipient("carol") };
  assert.equal(await codeOfCheck(verifier(seen), r), "TAMPERED");
  assert.equal(seen.has(fingerprintOf(alice.certDer), SID, 1), false);
  const replayed = SeenStore.memory();
  const v = verifier(replayed);
  await v.check(relayOf(alice, [made[1]]));
  // A later relay whose first record repeats one of this session: REPLAY, nothing more marked.
  assert.equal(await codeOfCheck(v, { ...named(relayOf(alice, made)), seqno: 2 }), "REPLAY");
  assert.equal(replayed.has(fingerprintOf(alice.certDer), SID, 3), false);
});

Deno.test("RelayVerifier.check() refuses what the server altered, forged or moved, each with its code", async () => {
  const cases: [string, Promise<Forwarded>, string][] = [
    ["ciphertext altered", relayed(alice, 1, { edit: (r) => (r.ct[0] ^= 1) }), "SIG_FAIL"],
    ["signed by bob in alice's name", relayed(alice, 1, { signer: bob }), "SIG_FAIL"],
    [
      "alice's private record to carol",
      relayed(alice, 1, { to: userRecipient("carol") }),
      "TAMPERED",
    ],
    [
      "a server record relabelled as a user's",
      relayed(alice, 1, { edit: (r) => (r.dir = "s2c") }),
      "TAMPERED",
    ],
    [
      "a notice body relayed",
      relayed(alice, 1, { body: { kind: "notice", text: "x" } }),
      "PROTOCOL_ERROR",
    ],
    [
      "signed an hour before this session",
      relayed(alice, 1, { ts: SESSION_TIME - 3_600_000 }),
      "REPLAY",
    ],
    [
      "an author certificate from another CA",
      (async () => relayed(await rogue.identity("alice"), 1))(),
      "BAD_CERT",
    ],
  ];
  for (const [name, relay, code] of cases) {
    assert.equal(await codeOfCheck(verifier(), await relay), code, name);
  }
});

Deno.test("RelayVerifier.check(): a refused author certificate is said as the author's, not as the server's", async () => {
  const refused = await checkOne(verifier(), await relayed(await rogue.identity("alice"), 1)).then(
    () => assert.fail("an author certificate from another CA was accepted"),
    (error: SecureChatError) => error,
  );
  assert.equal(refused.code, "BAD_CERT");
  assert.match(refused.message, /^the author's certificate of a relay message did not pass: /);
  assert.match(refused.hint ?? "", /should not have relayed it/);
});

Deno.test("RelayVerifier.check(): a repeat within the session is REPLAY; one from an earlier session is a flagged duplicate", async () => {
  const seen = SeenStore.memory();
  const first = verifier(seen);
  const r1 = await relayed(alice, 1);
  assert.equal((await checkOne(first, r1)).duplicate, false);
  assert.equal(await codeOfCheck(first, named(r1)), "REPLAY");
  // The next session (same store): the server re-delivers it — caught, not shown as new.
  const next = verifier(seen);
  assert.equal((await checkOne(next, r1)).duplicate, true);
  assert.equal((await checkOne(next, named(await relayed(alice, 2)))).duplicate, false);
});

Deno.test("RelayVerifier.check(): an author's certificate is introduced once per session, then named (PROTOCOL §6.4.1)", async () => {
  const v = verifier();
  const first = await checkOne(v, await relayed(alice, 1));
  assert.deepEqual(first.certDer, alice.certDer);
  const second = await checkOne(v, named(await relayed(alice, 2)));
  assert.equal(second.author, "alice");
  assert.equal(second.certDer, undefined);
  assert.equal(second.fingerprint, fingerprintOf(alice.certDer));
});

Deno.test("RelayVerifier.check() refuses a server's misuse of certificate names, each with its code", async () => {
  // A name this session was never sent.
  assert.equal(await codeOfCheck(verifier(), named(await relayed(alice, 1))), "PROTOCOL_ERROR");
  // The same certificate introduced twice.
  const twice = verifier();
  await checkOne(twice, await relayed(alice, 1));
  assert.equal(await codeOfCheck(twice, await relayed(alice, 2)), "PROTOCOL_ERROR");
  // Other bytes under a name: bob's certificate introduced as alice's fingerprint.
  const swapped = { ...await relayed(alice, 1), cert: toBase64(bob.certDer) };
  assert.equal(await codeOfCheck(verifier(), swapped), "TAMPERED");
  // alice's record under bob's name (bob introduced before): checked with bob's key.
  const v = verifier();
  await checkOne(v, await relayed(bob, 1));
  const misattributed = {
    ...named(await relayed(alice, 1)),
    author_fp: fingerprintOf(bob.certDer),
  };
  assert.equal(await codeOfCheck(v, misattributed), "SIG_FAIL");
});

Deno.test("SeenStore: marks survive a restart through the file (0600), old ones are dropped", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sc-seen-" });
  try {
    const path = `${dir}/bob.seen.json`;
    const store = await SeenStore.load(seenFile(path), 60_000);
    store.accept("fp", SID, 7, Date.now());
    store.accept("fp", "ab".repeat(16), 3, Date.now() - 120_000); // older than the retention
    await store.save();
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const again = await SeenStore.load(seenFile(path), 60_000);
    assert.equal(again.has("fp", SID, 7), true);
    assert.equal(again.has("fp", SID, 8), false);
    assert.equal(again.has("fp", "ab".repeat(16), 3), false, "dropped: older than the retention");
    await Deno.writeTextFile(path, "not json");
    await assert.rejects(SeenStore.load(seenFile(path), 60_000), (e) => codeOf(e) === "IO_ERROR");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** `relay` as the server sends it from the offline queue (PROTOCOL §6.6). */
async function stored(
  author: Identity,
  seqno: number,
  o: Parameters<typeof relayed>[2] = {},
): Promise<Forwarded> {
  return await relayed(author, seqno, { to: userRecipient("bob"), type: "stored", ...o });
}

const DAY_MS = 24 * 3_600_000;

Deno.test("RelayVerifier.check(): a stored record written days before the session is accepted, flagged stored", async () => {
  const got = await checkOne(verifier(), await stored(alice, 1, { ts: SESSION_TIME - 3 * DAY_MS }));
  assert.equal(got.stored, true);
  assert.equal(got.private, true);
  assert.equal(got.duplicate, false);
  assert.equal((await checkOne(verifier(), await relayed(alice, 1))).stored, false);
});

Deno.test("RelayVerifier.check(): what a server could pass off as stored is refused, each with its code", async () => {
  const cases: [string, Promise<Forwarded>, string][] = [
    // The freshness rule relaxed for stored records must not open a door for old lobby lines.
    [
      "an old lobby line as stored",
      stored(alice, 1, { to: LOBBY, ts: SESSION_TIME - DAY_MS }),
      "TAMPERED",
    ],
    [
      "alice's stored record for carol",
      stored(alice, 1, { to: userRecipient("carol") }),
      "TAMPERED",
    ],
    [
      "older than any queue keeps one",
      stored(alice, 1, { ts: SESSION_TIME - MAX_STORED_AGE_MS - DAY_MS }),
      "REPLAY",
    ],
    ["dated after its delivery", stored(alice, 1, { ts: Date.now() + 3_600_000 }), "STALE"],
    ["ciphertext altered", stored(alice, 1, { edit: (r) => (r.ct[0] ^= 1) }), "SIG_FAIL"],
  ];
  for (const [name, relay, code] of cases) {
    assert.equal(await codeOfCheck(verifier(), await relay), code, name);
  }
});

Deno.test("RelayVerifier.check(): a private record seen live comes back as stored days later: a duplicate, not shown", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sc-seen-" });
  try {
    const path = `${dir}/bob.seen.json`;
    const retention = 10 * 60 * 1000;
    const seen = await SeenStore.load(seenFile(path), retention);
    const original = await relayed(alice, 4, { to: userRecipient("bob") });
    assert.equal((await checkOne(verifier(seen), original)).duplicate, false);
    const lobbyOnly = await relayed(bob, 1);
    await checkOne(verifier(seen), lobbyOnly);
    await seen.save();
    // Five days on, beyond the lobby retention: the private mark is still there.
    const reloaded = await SeenStore.load(seenFile(path), retention, Date.now() + 5 * DAY_MS);
    const fp = toHex(
      new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(bob.certDer))),
    );
    assert.equal(reloaded.has(fp, SID, 1), false, "a lobby-only mark is dropped");
    const again = await checkOne(verifier(reloaded), asStored(original as RelayMessage));
    assert.equal(again.duplicate, true, "the private mark outlives the lobby retention");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** alice's record as the server hands it on end to end, and the `k` its wrap holds. */
function e2eRelayed(
  seqno: number,
  o: { to?: string; type?: "relay" | "stored"; e2e?: E2eEnvelope; text?: string } = {},
): Promise<{ relay: Forwarded; k: Uint8Array }> {
  return signedRelay(alice, seqno, {
    to: o.to ?? userRecipient("bob"),
    type: o.type,
    body: { kind: "text", text: o.text ?? `message ${seqno}` },
    e2e: o.e2e ?? RATCHET_ENVELOPE,
  });
}

/** bob's verifier with an end-to-end layer that is only `unwrap`. */
const e2eVerifier = (unwrap: E2eUnwrap, seen = SeenStore.memory()) =>
  new RelayVerifier({
    trust: pki.trust,
    seen,
    username: "bob",
    sessionTime: SESSION_TIME,
    maxSkewMs: 5 * 60 * 1000,
    unwrap,
  });

Deno.test("RelayVerifier.check(): an end-to-end record accepted before is a duplicate, never unwrapped again (its ratchet key is spent)", async () => {
  const seen = SeenStore.memory();
  let unwraps = 0;
  const { relay, k } = await e2eRelayed(9, { type: "stored", text: "once" });
  // A ratchet hands out each message key once: a second unwrap is REPLAY.
  const unwrap = () => {
    if (unwraps++ > 0) throw new SecureChatError("REPLAY", "message key already used");
    return Promise.resolve(k);
  };
  assert.equal((await checkOne(e2eVerifier(unwrap, seen), relay)).text, "once");
  // The acknowledgement was lost: the next session gets it again from the queue.
  const again = await checkOne(e2eVerifier(unwrap, seen), relay);
  assert.equal(again.duplicate, true);
  assert.equal(unwraps, 1);
});

Deno.test("RelayVerifier.check(): an envelope that does not fit its record's recipients is PROTOCOL_ERROR, even one that would open", async () => {
  // Only the author can make such a record (the wrap is bound to the signed statement), and
  // the server must refuse it from them (PROTOCOL §12.6): a recipient handed one refuses too,
  // rather than show a private line wrapped under the lobby chain every member holds.
  const cases = [
    { to: userRecipient("bob"), e2e: SENDER_ENVELOPE, code: "PROTOCOL_ERROR" },
    { to: LOBBY, e2e: RATCHET_ENVELOPE, code: "PROTOCOL_ERROR" },
    { to: userRecipient("bob"), e2e: RATCHET_ENVELOPE, code: "ok" },
    { to: LOBBY, e2e: SENDER_ENVELOPE, code: "ok" },
  ];
  for (const [i, { to, e2e, code }] of cases.entries()) {
    const { relay, k } = await e2eRelayed(i + 1, { to, e2e });
    // The author's own wrap: it opens.
    const v = e2eVerifier(() => Promise.resolve(k));
    assert.equal(await codeOfCheck(v, relay), code, `${e2e.kind} envelope to ${to}`);
  }
});

Deno.test("RelayVerifier.check(): a new record whose wrap's key this device used already is recorded as unreadable, the session goes on", async () => {
  // The end-to-end state was saved after opening it, the marks were not (a crash between the
  // two saves), and the unacknowledged record comes back from the queue: the chain says REPLAY
  // (PROTOCOL §12.4). Ending the session would end every later one on the same record.
  const seen = SeenStore.memory();
  const { relay } = await e2eRelayed(3, { type: "stored" });
  const spent = () =>
    Promise.reject(new SecureChatError("REPLAY", "ratchet message already opened"));
  const got = await checkOne(e2eVerifier(spent, seen), relay);
  assert.match(got.undecryptable ?? "", /no key for this message \(it used that key already/);
  assert.equal(got.text, "");
  assert.ok(seen.has(got.fingerprint, SID, 3), "accepted: the next delivery is a duplicate");
});

Deno.test("RelayVerifier.check(): an end-to-end line whose wrap opened but whose content does not open or parse is the author's doing: recorded, accepted and shown as such, the session goes on (PROTOCOL §12.6 steps 10–11, interop finding 52)", async () => {
  // The server cannot look inside an end-to-end record (§12.6), so before this one such line
  // from any user ended every recipient's session with the server, at every reconnect.
  const lobby = { to: LOBBY, e2e: SENDER_ENVELOPE };
  const cases: [string, Parameters<typeof signedRelay>[2], boolean][] = [
    [
      "a text over 4000 characters",
      { ...lobby, body: { kind: "text", text: "x".repeat(4001) } },
      false,
    ],
    ["a who on a lobby line", { ...lobby, body: { kind: "who" } }, false],
    [
      "a body that is not JSON",
      { ...lobby, plaintext: new TextEncoder().encode("not json") },
      false,
    ],
    ["content that does not open under the wrapped key", lobby, true],
  ];
  for (const [i, [name, o, otherKey]] of cases.entries()) {
    const seen = SeenStore.memory();
    const { relay, k } = await signedRelay(alice, i + 1, o);
    const wrapped = otherKey ? crypto.getRandomValues(new Uint8Array(32)) : k;
    const got = await checkOne(e2eVerifier(() => Promise.resolve(wrapped), seen), relay);
    assert.match(
      got.malformed ?? "",
      /^alice sent a line this client cannot show \((PROTOCOL_ERROR|DECRYPT_FAIL): /,
      name,
    );
    assert.equal(got.text, "", name);
    assert.equal(got.undecryptable, undefined, name);
    assert.equal(got.k, undefined, `${name}: no key to reveal a line that does not open`);
    assert.ok(seen.has(got.fingerprint, SID, i + 1), `${name}: accepted into the marks`);
  }
  // The same content with `k`: the server checks that itself (§6.3 steps 5–6), so a recipient
  // handed one has the server to blame, and the session ends.
  const readable = await relayed(alice, 9, { body: { kind: "text", text: "x".repeat(4001) } });
  assert.equal(await codeOfCheck(verifier(), readable), "PROTOCOL_ERROR");
});

/** A relay of one record as the server would store it instead (its record made whole). */
function asStored(relay: RelayMessage): StoredMessage {
  const { sig, first, n, proof: _proof, records: [item], ...hop } = relay;
  // A batch of one (signedRelay's): its path is empty.
  assert.equal(n, 1);
  const record = { ...item.record, sig, batch: { i: item.record.seqno - first, n, path: [] } };
  return "k" in item
    ? { ...hop, type: "stored", record, k: item.k }
    : { ...hop, type: "stored", record, e2e: item.e2e };
}

Deno.test("RelayVerifier.check(): a sender key and the lobby line under it in one relay: the key is taken before the line is unwrapped (PROTOCOL §12.6 steps 7–12 per record, interop finding 101)", async () => {
  // Two records of one batch: the private sender_key, then a lobby line under its chain.
  const chain = { kind: "sender_key" as const, id: 7, n: 0, ck: toBase64(new Uint8Array(32)) };
  const bodies: [string, Body][] = [
    [userRecipient("bob"), chain],
    [LOBBY, { kind: "text", text: "under the new chain" }],
  ];
  const made = bodies.map(([to, body], j) => {
    const { k, ct, c } = sealContent(body);
    const record: MessageRecord = { sid: SID, dir: "c2s", to, seqno: j + 1, ts: Date.now(), ct, c };
    return { record, k };
  });
  await signBatch(alice.signingKey, made.map((m) => m.record));
  const relay = relayOf(alice, made);
  relay.records[0] = { record: relay.records[0].record, e2e: RATCHET_ENVELOPE };
  relay.records[1] = { record: relay.records[1].record, e2e: SENDER_ENVELOPE };
  let chainTaken = false;
  const v = new RelayVerifier({
    trust: pki.trust,
    seen: SeenStore.memory(),
    username: "bob",
    sessionTime: SESSION_TIME,
    maxSkewMs: 5 * 60 * 1000,
    // The lobby line's wrap opens only under the chain the first record carries.
    unwrap: (_author, record, e2e) => {
      if (e2e.kind === "sender" && !chainTaken) {
        return Promise.reject(new SecureChatError("DECRYPT_FAIL", "no chain for this line"));
      }
      return Promise.resolve(made[record.seqno - 1].k);
    },
    senderKey: (author, update) => {
      assert.equal(author, "alice");
      assert.equal(update.body.id, 7);
      chainTaken = true;
    },
  });
  const { texts } = await v.check(relay);
  assert.equal(texts[0].senderKey?.body.id, 7);
  assert.equal(texts[1].text, "under the new chain");
  assert.equal(texts[1].undecryptable, undefined);
});

Deno.test("RelayVerifier.check(): every record's addressing (§12.6 step 3) before any envelope's fit (step 4): a misfit envelope before a misaddressed record is TAMPERED (review15 R4)", async () => {
  const made = await signedBatch(2);
  made[1].record = { ...made[1].record };
  const relay = relayOf(alice, made);
  // Record 1: a lobby line under a ratchet envelope (step 4: PROTOCOL_ERROR); record 2: moved
  // to carol (step 3: TAMPERED).
  relay.records[0] = { record: relay.records[0].record, e2e: RATCHET_ENVELOPE };
  relay.records[1] = {
    record: { ...relay.records[1].record, to: userRecipient("carol") },
    e2e: SENDER_ENVELOPE,
  };
  assert.equal(await codeOfCheck(verifier(), relay), "TAMPERED");
});
