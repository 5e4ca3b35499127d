/**
 * scan21: a user's msg in its canonical form is read in one pass (canonicalUserMsg), else by the
 * parse chokepoint (parseMessageAndText through C2sMsgShape, then userMsgRead). The fast path must
 * be exactly the slow one where it answers: on msgs our client writes (k and e2e items, lobby,
 * user: and server records, n = 1..32, proofs, `ct` up to MAX_CT_BYTES) and seeded mutations of
 * them (byte flips, deletions, duplications, member reorders, whitespace, escapes, number
 * spellings), it either declines or yields what the slow path yields — the message member for
 * member and in the same order, the decoded records, the items as received — and it never takes
 * what the slow path refuses. SECURECHAT_FUZZ_SEED replays a run.
 */
import assert from "node:assert/strict";
import { ByteBuilder, toBase64, utf8 } from "../../lib/bytes.ts";
import { testSigner as signer } from "../helpers/user_msgs.ts";
import type { E2eEnvelope } from "../../lib/e2e/envelope.ts";
import {
  type C2sMsgMessage,
  C2sMsgShape,
  canonicalUserMsg,
  decodeRecord,
  LOBBY,
  MAX_BATCH,
  MAX_CT_BYTES,
  MAX_SIG_BYTES,
  MAX_TO_CHARS,
  type MessageRecord,
  signBatch,
  TO_SERVER,
  userMsgItem,
  type UserMsgRead,
  userMsgRead,
  userMsgsOf,
} from "../../lib/message/record.ts";
import { parseMessageAndText } from "../../lib/wire/messages.ts";
import { byType } from "../../lib/wire/shape.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { fuzzSeed, mutateBytes, Rng } from "../../testkit/fuzz.ts";

const SEED = fuzzSeed();
/** What the server's session parses a client's message with, for a msg. */
const CLIENT_MSG = byType<C2sMsgMessage>({ msg: C2sMsgShape });

const hex = (rng: Rng, chars: number) =>
  Array.from(rng.bytes(chars / 2), (b) => b.toString(16).padStart(2, "0")).join("");

/** A lobby line's envelope: mostly from the batch's author device `from`, as ours sends them. */
function senderEnvelope(rng: Rng, from: string): E2eEnvelope {
  const id = rng.pick([0, 1, 4, 0xffff_ffff, rng.u32()]);
  return {
    kind: "sender",
    from: rng.chance(0.8) ? from : hex(rng, 16),
    id,
    n: rng.int(1000),
    w: toBase64(rng.bytes(48)),
  };
}

function ratchetEnvelope(rng: Rng): E2eEnvelope {
  return {
    kind: "ratchet",
    from: hex(rng, 16),
    wraps: Array.from({ length: rng.range(1, 3) }, (_, i) => ({
      device: i.toString(16).padStart(16, "0"),
      dh: toBase64(rng.bytes(32)),
      pn: rng.int(5),
      n: rng.int(5),
      w: toBase64(rng.bytes(48)),
      ...(i === 0 && rng.chance(0.5)
        ? {
          pre: {
            ik: toBase64(rng.bytes(32)),
            ik_sig: toBase64(rng.bytes(64)),
            ek: toBase64(rng.bytes(32)),
            spk_id: rng.int(9),
            pq_id: rng.int(9),
            ...(rng.chance(0.5) ? { opk_id: rng.int(9) } : {}),
            kem_ct: toBase64(rng.bytes(1088)),
          },
        }
        : {}),
    })),
  };
}

/** A `ct` length: a lobby line's, now and then one near or at the bound. */
function ctBytes(rng: Rng): number {
  return rng.chance(0.04) ? rng.pick([MAX_CT_BYTES, MAX_CT_BYTES - 1, 20_000]) : rng.range(16, 300);
}

/**
 * The msgs our client sends for one signed batch of `n` records (a random run of it when `part`:
 * a msg with a proof), as bytes: each record a lobby line end to end (`sender`), a private one
 * (`ratchet`), or one with `k` to the lobby, a user or the server.
 */
async function sentMsgs(rng: Rng, n: number, part: boolean): Promise<Uint8Array[]> {
  const sid = hex(rng, 32);
  const firstSeqno = rng.pick([1, 2, 40, 2 ** 53 - 1 - MAX_BATCH]);
  const ts = rng.pick([0, 1_796_000_000_000, 2 ** 53 - 1 - MAX_BATCH]);
  const device = hex(rng, 16);
  const made = Array.from({ length: n }, (_, j) => {
    const kind = rng.int(5);
    const record: MessageRecord = {
      sid,
      dir: "c2s",
      to: kind === 0 ? LOBBY : kind === 1
        ? rng.pick([
          "user:bob",
          "@bob",
          "user:" + "a".repeat(75),
          " ~!#$%&'()*+,-./:;<=>?@[]^_`{|}",
        ])
        : rng.pick([LOBBY, "user:carol", TO_SERVER]),
      seqno: firstSeqno + j,
      ts: ts + rng.int(2) * j,
      ct: rng.bytes(ctBytes(rng)),
      c: rng.bytes(32),
    };
    const e2e = kind === 0
      ? senderEnvelope(rng, device)
      : kind === 1
      ? ratchetEnvelope(rng)
      : undefined;
    return { record, k: rng.bytes(32), e2e };
  });
  await signBatch(signer, made.map((m) => m.record));
  const from = part ? rng.int(n) : 0;
  const to = part ? rng.range(from + 1, n) : n;
  const items = made.slice(from, to).map(({ record, k, e2e }) => userMsgItem(record, k, e2e));
  return userMsgsOf(items).map((msg) => {
    const out = new ByteBuilder(msg.length);
    msg.writeTo(out);
    return out.done().slice();
  });
}

/** Today's path: the parse chokepoint, then the records and items read from what it made. */
function slowRead(content: Uint8Array): UserMsgRead | SecureChatError {
  try {
    const { message, text } = parseMessageAndText(content, CLIENT_MSG);
    return userMsgRead(message, content, text);
  } catch (error) {
    if (error instanceof SecureChatError) return error;
    throw error;
  }
}

// ---- mutations of a msg's text: each yields JSON spelt otherwise, or something else entirely ----

type Mutation = (rng: Rng, text: string) => string;

/** The index of a random match of `pattern` in `text`, or -1. */
function someMatch(rng: Rng, text: string, pattern: RegExp): RegExpExecArray | undefined {
  const matches = [...text.matchAll(pattern)];
  return matches.length === 0 ? undefined : rng.pick(matches);
}

const MUTATIONS: Record<string, Mutation> = {
  whitespace: (rng, text) => {
    // Before or after a colon, comma, brace or bracket outside the strings.
    const structural: number[] = [];
    let inString = false;
    for (let i = 0; i < text.length; i++) {
      if (text[i] === '"') inString = !inString;
      else if (!inString && ":,{}[]".includes(text[i])) structural.push(i);
    }
    const at = rng.pick(structural) + rng.int(2);
    return text.slice(0, at) + rng.pick([" ", "\n", "\t", "\r"]) + text.slice(at);
  },
  escape: (rng, text) => {
    // A character inside a string written as \uXXXX, \/ or \" where JSON allows.
    const m = someMatch(rng, text, /"[^"]+"/g);
    if (!m) return text;
    const at = m.index + 1 + rng.int(m[0].length - 2);
    const ch = text[at];
    const escaped = ch === "/" && rng.chance(0.5)
      ? "\\/"
      : `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`;
    return text.slice(0, at) + (rng.chance(0.2) ? escaped.toUpperCase() : escaped) +
      text.slice(at + 1);
  },
  number: (rng, text) => {
    const m = someMatch(rng, text, /:(\d+)(?=[,}\]])/g);
    if (!m) return text;
    const digits = m[1];
    const spelt = rng.pick([
      `0${digits}`,
      `${digits}.0`,
      `${digits}e0`,
      `${digits}E+0`,
      `-${digits}`,
      `-0`,
      `${digits}0`,
      `${BigInt(digits) + 1n}`,
      `${BigInt(digits) - 1n}`,
      `${2n ** 53n}`,
      `${2n ** 53n - 1n}`,
      `${2n ** 32n}`,
      `${2n ** 32n - 1n}`,
      "99999999999999999",
      "1" + "0".repeat(20),
    ]);
    return text.slice(0, m.index + 1) + spelt + text.slice(m.index + 1 + digits.length);
  },
  reorder: (rng, text) => {
    // Two neighbouring members of one object swapped (their values simple: strings, numbers).
    const m = someMatch(rng, text, /("[a-z_]+":(?:"[^"]*"|\d+)),("[a-z_]+":(?:"[^"]*"|\d+))/g);
    if (!m) return text;
    return text.slice(0, m.index) + `${m[2]},${m[1]}` + text.slice(m.index + m[0].length);
  },
  duplicate: (rng, text) => {
    const m = someMatch(rng, text, /"[a-z_]+":(?:"[^"]*"|\d+)[,}]/g);
    if (!m) return text;
    const member = m[0].slice(0, -1);
    return text.slice(0, m.index) + `${member},` + text.slice(m.index);
  },
  drop: (rng, text) => {
    const m = someMatch(rng, text, /,"[a-z_0-9]+":(?:"[^"]*"|\d+)/g);
    if (!m) return text;
    return text.slice(0, m.index) + text.slice(m.index + m[0].length);
  },
  retext: (rng, text) => {
    // A string's value changed: another `dir`, `to`, `kind`, a hex or base64 value off by a char.
    const m = someMatch(rng, text, /"([a-z_]+)":"([^"]*)"/g);
    if (!m) return text;
    const value = m[2];
    const other = rng.pick([
      "s2c",
      "c2s",
      "",
      "é",
      "lobby",
      "x".repeat(81),
      "x".repeat(80),
      value.slice(1),
      value + "A",
      value.toUpperCase(),
      value.slice(0, -1) + rng.pick(["A", "B", "=", "g", "+", "/", "0"]),
      value.slice(0, -2) + "==",
      value + "AAAA",
      "sender",
      "ratchet",
    ]);
    const at = m.index + m[1].length + 4;
    return text.slice(0, at) + other + text.slice(at + value.length);
  },
  items: (rng, text) => {
    // An item repeated, or the last dropped: a count, order or seqno rule broken.
    const m = someMatch(rng, text, /\{"record":\{[^{}]*\},"(?:k":"[^"]*"|e2e":\{[^{}]*\})\}/g);
    if (!m) return text;
    return rng.chance(0.5)
      ? text.slice(0, m.index) + `${m[0]},${m[0]}` + text.slice(m.index + m[0].length)
      : text.slice(0, m.index) + text.slice(m.index + m[0].length + 1);
  },
  proof: (rng, text) => {
    // The proof's entries, valid or not, as many as the bound or past it.
    const entries = rng.pick([0, 1, 5, MAX_BATCH - 2, MAX_BATCH - 1, MAX_BATCH, 40]);
    const proof = Array.from(
      { length: entries },
      () => `"${toBase64(rng.bytes(rng.chance(0.95) ? 32 : rng.pick([31, 33])))}"`,
    );
    return text.replace(/"proof":\[[^\]]*\]/, `"proof":[${proof.join(",")}]`);
  },
  sig: (rng, text) => {
    const bytes = rng.pick([0, 1, 2, 3, 64, 512, 1022, 1023, 1024, 1025, 1026, 2048]);
    return text.replace(/"sig":"[^"]*"/, `"sig":"${toBase64(rng.bytes(bytes))}"`);
  },
  bytes: (rng, text) => new TextDecoder().decode(mutateBytes(rng, utf8(text))),
};

/** Mutations that spell the msg otherwise (or name a member twice): never its canonical form. */
const RESPELLINGS = ["whitespace", "escape", "reorder", "duplicate"];

/** The same message, member for member in the same order, with the same records and items. */
function assertSame(fast: UserMsgRead, slow: UserMsgRead, what: string): void {
  assert.equal(JSON.stringify(fast.message), JSON.stringify(slow.message), what);
  assert.deepEqual(fast.message, slow.message, what);
  assert.deepEqual(fast.records, slow.records, what);
  for (const [j, r] of fast.records.entries()) {
    assert.deepEqual(Object.keys(r), Object.keys(slow.records[j]), what);
    // One buffer for all of a msg's decoded bytes, as the shape decodes them.
    assert.equal(r.ct.buffer, fast.records[0].ct.buffer, what);
    assert.equal(r.c.buffer, fast.records[0].ct.buffer, what);
  }
  assert.ok(slow.received, `${what}: the slow path forwards it as it came`);
  assert.deepEqual(fast.received, slow.received, what);
  assert.equal(fast.received!.bytes.buffer.byteLength, fast.received!.bytes.length, what);
}

Deno.test(`canonicalUserMsg(): every msg our client writes is read in one pass, exactly as the parse chokepoint reads it (seed ${SEED})`, async () => {
  const rng = new Rng(SEED);
  let msgs = 0;
  for (let n = 1; n <= MAX_BATCH; n++) {
    for (const part of [false, true]) {
      for (const content of await sentMsgs(rng, n, part && n > 1)) {
        // As the session reads it: the fast path first; the chokepoint too, to hold them to each other.
        const fast = canonicalUserMsg(content);
        const slow = slowRead(content);
        assert.ok(!(slow instanceof Error), `${slow}`);
        assert.ok(fast, `n=${n}: ${new TextDecoder().decode(content).slice(0, 200)}`);
        assertSame(fast, slow, `n=${n}`);
        msgs++;
      }
    }
  }
  assert.ok(msgs >= 2 * MAX_BATCH, `${msgs} msgs`);
});

Deno.test(`canonicalUserMsg(): a mutated msg is declined or read as the parse chokepoint reads it, never taken when it is refused (seed ${SEED})`, async () => {
  const rng = new Rng(SEED ^ 0x5ca2_1000);
  const corpus: string[] = [];
  for (let round = 0; round < 24; round++) {
    const n = rng.pick([1, 2, 3, 5, 8, 16, 31, MAX_BATCH]);
    for (const content of await sentMsgs(rng, n, rng.chance(0.4))) {
      corpus.push(new TextDecoder().decode(content));
    }
  }
  const tally: Record<string, { taken: number; declined: number; refused: number }> = {};
  const names = Object.keys(MUTATIONS);
  const deadline = performance.now() + 6_000;
  let cases = 0;
  for (; cases < 12_000 && performance.now() < deadline; cases++) {
    const name = rng.pick(names);
    let text = rng.pick(corpus);
    // Twice at most, but a respelling once: a second could undo the first (a swap swapped back).
    const rounds = RESPELLINGS.includes(name) ? 1 : rng.range(1, 2);
    for (let r = rounds; r > 0; r--) text = MUTATIONS[name](rng, text);
    const content = name === "bytes" && rng.chance(0.5)
      ? mutateBytes(rng, utf8(rng.pick(corpus)))
      : utf8(text);
    // As the session reads it: the fast path first, so that the chokepoint reads after a fast
    // read declined part way, with the msg's shared decoding buffer (userMsgBytes) half filled.
    const fast = canonicalUserMsg(content);
    const slow = slowRead(content);
    const counts = tally[name] ??= { taken: 0, declined: 0, refused: 0 };
    if (slow instanceof Error) counts.refused++;
    else {
      const what = `${name} (seed ${SEED}, case ${cases}), the chokepoint's records`;
      assert.deepEqual(
        slow.records,
        slow.message.records.map((item) => decodeRecord(item.record)),
        what,
      );
    }
    if (fast === undefined) {
      counts.declined++;
      continue;
    }
    const what = `${name} (seed ${SEED}, case ${cases}): ${text.slice(0, 300)}`;
    assert.ok(!(slow instanceof Error), `taken, but the slow path refuses: ${slow}: ${what}`);
    assertSame(fast, slow, what);
    counts.taken++;
  }
  assert.ok(cases >= 2_000, `${cases} cases in the time`);
  // The mutations reach both sides: some spellings are taken (a value changed within its
  // bounds), most declined; the slow path refuses many and accepts some the fast one declines.
  const all = Object.values(tally);
  assert.ok(all.reduce((s, t) => s + t.taken, 0) > 0, JSON.stringify(tally));
  assert.ok(all.reduce((s, t) => s + t.refused, 0) > 0, JSON.stringify(tally));
  for (const name of RESPELLINGS) {
    assert.equal(tally[name]?.taken ?? 0, 0, `${name} is never the canonical form`);
  }
});

/**
 * A msg of `records` lobby records, canonical, with fixed members: `ct` of 40 bytes, `to` the
 * lobby, seqnos 1…, each with a `sender` envelope (`e2e`) or a content key.
 */
async function boundsMsgText(records: number, e2e: boolean): Promise<string> {
  const made = Array.from({ length: records }, (_, j) => {
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: LOBBY,
      seqno: 1 + j,
      ts: j,
      ct: new Uint8Array(40).fill(j + 1),
      c: new Uint8Array(32).fill(j + 2),
    };
    const envelope: E2eEnvelope | undefined = e2e
      ? { kind: "sender", from: "0a".repeat(8), id: 3, n: j, w: toBase64(new Uint8Array(48)) }
      : undefined;
    return { record, k: new Uint8Array(32).fill(7), e2e: envelope };
  });
  await signBatch(signer, made.map((m) => m.record));
  const [msg] = userMsgsOf(made.map(({ record, k, e2e }) => userMsgItem(record, k, e2e)));
  const out = new ByteBuilder(msg.length);
  msg.writeTo(out);
  return new TextDecoder().decode(out.done());
}

/** `text` with the match of `pattern` (each, if global) replaced by `by`: there is one at least. */
function replaced(text: string, pattern: RegExp, by: string): string {
  assert.match(text, pattern);
  return text.replace(pattern, by);
}
/** Every `"name":"…"` member's value replaced by canonical base64 of `bytes` bytes. */
const withBase64 = (text: string, name: string, bytes: number) =>
  replaced(
    text,
    new RegExp(`"${name}":"[^"]*"`, "g"),
    `"${name}":"${toBase64(new Uint8Array(bytes).fill(0x5a))}"`,
  );
/** The first `"name":<integer>` member's value replaced by `value` (the msg's, before any item's). */
const withNumber = (text: string, name: string, value: number) =>
  replaced(text, new RegExp(`"${name}":\\d+`), `"${name}":${value}`);
const UINT32_MAX = 2 ** 32 - 1;

Deno.test("canonicalUserMsg(): each bounded member at min−1, min, max and max+1 is taken exactly when the parse chokepoint accepts it", async () => {
  const e2e = await boundsMsgText(2, true);
  const k = await boundsMsgText(2, false);
  const one = await boundsMsgText(1, true);
  const hash = (bytes: number) => `"${toBase64(new Uint8Array(bytes).fill(0x33))}"`;
  const withProof = (entries: string[]) =>
    replaced(one, /"proof":\[\]/g, `"proof":[${entries.join(",")}]`);
  // [what, text, whether the chokepoint accepts it]
  const cases: [string, string, boolean][] = [];
  for (
    const [name, min, max, text] of [
      ["ct", 16, MAX_CT_BYTES, e2e],
      ["c", 32, 32, e2e],
      ["w", 48, 48, e2e],
      ["k", 32, 32, k],
      ["sig", 1, MAX_SIG_BYTES, e2e],
    ] as const
  ) {
    for (const bytes of [min - 1, min, max, max + 1]) {
      cases.push([
        `${name} of ${bytes} bytes`,
        withBase64(text, name, bytes),
        bytes >= min && bytes <= max,
      ]);
    }
  }
  for (const chars of [0, 1, MAX_TO_CHARS, MAX_TO_CHARS + 1]) {
    cases.push([
      `to of ${chars} characters`,
      replaced(e2e, new RegExp(`"to":"${LOBBY}"`, "g"), `"to":"${"t".repeat(chars)}"`),
      chars >= 1 && chars <= MAX_TO_CHARS,
    ]);
  }
  // A one-record msg: its seqno 1 within first … first + n − 1 for every n from 1.
  for (const n of [0, 1, MAX_BATCH, MAX_BATCH + 1]) {
    cases.push([`n ${n}`, withNumber(one, "n", n), n >= 1 && n <= MAX_BATCH]);
  }
  for (const id of [0, UINT32_MAX, UINT32_MAX + 1]) {
    cases.push([`id ${id}`, withNumber(e2e, "id", id), id <= UINT32_MAX]);
  }
  for (const entries of [0, 1, MAX_BATCH - 1, MAX_BATCH]) {
    cases.push([
      `proof of ${entries} hashes`,
      withProof(Array.from({ length: entries }, () => hash(32))),
      entries <= MAX_BATCH - 1,
    ]);
  }
  for (const bytes of [31, 33]) {
    cases.push([`a proof hash of ${bytes} bytes`, withProof([hash(bytes)]), false]);
  }
  // first 0 with every seqno still within first … first + n − 1: refused for first alone.
  cases.push(["first 0, n 3", replaced(e2e, /"first":1,"n":2/g, '"first":0,"n":3'), false]);
  cases.push(["first 1, n 2", e2e, true]);

  for (const [what, text, accepted] of cases) {
    const content = utf8(text);
    // As the session reads it: the fast path first, the chokepoint after it.
    const fast = canonicalUserMsg(content);
    const slow = slowRead(content);
    assert.equal(!(slow instanceof Error), accepted, `${what}: the chokepoint ${slow}`);
    if (slow instanceof Error) {
      assert.equal(fast, undefined, `${what}: taken, but the chokepoint refuses it: ${slow}`);
    } else {
      assert.ok(fast, `${what}: canonical and accepted, but declined`);
      assertSame(fast, slow, what);
    }
  }
});
