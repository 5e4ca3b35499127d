/**
 * The hand-written shapes of the hot messages (lib/message/record.ts) against a reference
 * model: the zod schemas they replaced, kept here verbatim. On fixed cases and on fuzzed
 * inputs both must accept the same values with the same output, and refuse the same.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { toBase64 } from "../../lib/bytes.ts";
import {
  BodyShape,
  C2sMsgShape,
  CONTENT_KEY_BYTES,
  LineShape,
  MAX_BATCH,
  MAX_CERT_BYTES,
  MAX_CT_BYTES,
  MAX_S2C_CT_BYTES,
  MAX_SIG_BYTES,
  MAX_TEXT_CHARS,
  MAX_UNREAD,
  QueuedMessageShape,
  RecordJsonShape,
  REFUSAL_CODES,
  RefusedMessageShape,
  RelayMessageShape,
  S2cMsgShape,
  StoredMessageShape,
} from "../../lib/message/record.ts";
import { base64Text } from "../../lib/wire/schema.ts";
import type { Shape } from "../../lib/wire/shape.ts";
import { CORPUS, fuzzNearSeeds, fuzzSeed, Rng } from "../../testkit/fuzz.ts";

// ---- the reference: the zod schemas of lib/message/record.ts before the shapes ----

const text = z.string().min(1).max(MAX_TEXT_CHARS);
const seqnoValue = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const Body = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("text"), text }).strict(),
  z.object({ kind: z.literal("who") }).strict(),
  z.object({ kind: z.literal("notice"), text }).strict(),
  z.object({ kind: z.literal("operator"), text, private: z.literal(true).optional() }).strict(),
  z.object({
    kind: z.literal("received"),
    upto: seqnoValue,
    unread: z.array(seqnoValue).max(MAX_UNREAD).optional(),
  }).strict(),
]);
/** PROTOCOL §6.1: a `c2s` record's `ct` is at most MAX_CT_BYTES decoded (an `s2c` one's, 64 KiB). */
const c2sCtFits = (r: { dir: string; ct: string }) =>
  r.dir === "s2c" ||
  r.ct.length / 4 * 3 - (r.ct.endsWith("==") ? 2 : r.ct.endsWith("=") ? 1 : 0) <= MAX_CT_BYTES;
const uint = () => z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const RecordJson = z.object({
  sid: z.string().regex(/^[0-9a-f]{32}$/),
  dir: z.enum(["c2s", "s2c"]),
  to: z.string().min(1).max(80),
  seqno: uint().min(1),
  ts: uint(),
  ct: base64Text(16, MAX_S2C_CT_BYTES),
  c: base64Text(32, 32),
  sig: base64Text(1, MAX_SIG_BYTES).optional(),
  batch: z.object({
    i: uint(),
    n: z.number().int().min(1).max(MAX_BATCH),
    path: z.array(base64Text(32, 32)).max(5),
  }).strict().optional(),
}).strict()
  .refine((r) => (r.sig === undefined) === (r.batch === undefined))
  .refine((r) => r.batch === undefined || (r.batch.i < r.batch.n && r.batch.i < r.seqno))
  .refine(c2sCtFits);
const k = base64Text(CONTENT_KEY_BYTES, CONTENT_KEY_BYTES);
const cert = base64Text(1, MAX_CERT_BYTES).optional();
const authorFp = z.string().regex(/^[0-9a-f]{64}$/);
const S2cMsg = z.object({ type: z.literal("msg"), record: RecordJson, k }).strict();
const Stored = z.object({
  type: z.literal("stored"),
  seqno: uint().min(1),
  ts: uint(),
  author_fp: authorFp,
  cert,
  record: RecordJson,
  k,
}).strict();
// A relay (PROTOCOL §6.4, session 15): records without sig and batch, the batch's once.
const RelayedRecordJson = z.object({
  sid: z.string().regex(/^[0-9a-f]{32}$/),
  dir: z.enum(["c2s", "s2c"]),
  to: z.string().min(1).max(80),
  seqno: uint().min(1),
  ts: uint(),
  ct: base64Text(16, MAX_S2C_CT_BYTES),
  c: base64Text(32, 32),
}).strict().refine(c2sCtFits);
const group = {
  sig: base64Text(1, MAX_SIG_BYTES),
  first: uint().min(1),
  n: z.number().int().min(1).max(MAX_BATCH),
  proof: z.array(base64Text(32, 32)).max(MAX_BATCH - 1),
};
/** §6.4's paragraph after the table: 1..n records, one sid, seqnos increasing within the batch. */
const groupFits = (
  g: { first: number; n: number; records: { record: { sid: string; seqno: number } }[] },
) =>
  g.records.length >= 1 && g.records.length <= g.n &&
  g.records.every(({ record }, j) =>
    record.seqno >= g.first && record.seqno <= g.first + g.n - 1 &&
    (j === 0 ||
      (record.sid === g.records[j - 1].record.sid && record.seqno > g.records[j - 1].record.seqno))
  );
/** PROTOCOL §6.3: a user's msg's records have consecutive seqnos. */
const consecutive = (g: { records: { record: { seqno: number } }[] }) =>
  g.records.every(({ record }, j) => j === 0 || record.seqno === g.records[j - 1].record.seqno + 1);
// A user's msg (PROTOCOL §6.3, session 16): a relay's group members without hop and author.
const C2sMsg = z.object({
  type: z.literal("msg"),
  ...group,
  records: z.array(z.object({ record: RelayedRecordJson, k }).strict()),
}).strict().refine(groupFits).refine(consecutive);
const Relay = z.object({
  type: z.literal("relay"),
  seqno: uint().min(1),
  ts: uint(),
  author_fp: authorFp,
  cert,
  ...group,
  records: z.array(z.object({ record: RelayedRecordJson, k }).strict()),
}).strict().refine(groupFits);
const refusal = {
  seqno: uint().min(1),
  ts: uint(),
  of: uint().min(1),
  code: z.enum(REFUSAL_CODES),
};
const Refused = z.object({ type: z.literal("refused"), ...refusal }).strict();
const queued = { seqno: uint().min(1), ts: uint(), of: uint().min(1) };
const Queued = z.object({ type: z.literal("queued"), ...queued }).strict();
const Line = z.union([
  z.object({ dir: z.literal("s2c"), type: z.literal("msg"), record: RecordJson }).strict(),
  z.object({
    dir: z.literal("c2s"),
    type: z.literal("msg"),
    ...group,
    records: z.array(z.object({ record: RelayedRecordJson }).strict()),
  }).strict().refine(groupFits).refine(consecutive),
  z.object({
    dir: z.literal("s2c"),
    type: z.literal("stored"),
    seqno: uint().min(1),
    ts: uint(),
    author_fp: authorFp,
    cert,
    record: RecordJson,
  }).strict(),
  z.object({
    dir: z.literal("s2c"),
    type: z.literal("relay"),
    seqno: uint().min(1),
    ts: uint(),
    author_fp: authorFp,
    cert,
    ...group,
    records: z.array(z.object({ record: RelayedRecordJson }).strict()),
  }).strict().refine(groupFits),
  z.object({ dir: z.literal("s2c"), type: z.literal("refused"), ...refusal }).strict(),
  z.object({ dir: z.literal("s2c"), type: z.literal("queued"), ...queued }).strict(),
]);

const PAIRS: [string, Shape<unknown>, z.ZodTypeAny][] = [
  ["body", BodyShape, Body],
  ["record", RecordJsonShape, RecordJson],
  ["msg", C2sMsgShape, C2sMsg],
  ["server msg", S2cMsgShape, S2cMsg],
  ["relay", RelayMessageShape, Relay],
  ["stored", StoredMessageShape, Stored],
  ["refused", RefusedMessageShape, Refused],
  ["queued", QueuedMessageShape, Queued],
  ["line", LineShape, Line],
];

/** Same verdict, and for an accepted value the same output, members in the same order. */
function agree(value: unknown, what: string): boolean {
  let accepted = false;
  for (const [name, shape, reference] of PAIRS) {
    const got = shape.safeParse(value);
    const want = reference.safeParse(value);
    assert.equal(got.success, want.success, `${name} on ${what}`);
    if (got.success && want.success) {
      assert.deepEqual(got.data, want.data, `${name} on ${what}`);
      assert.deepEqual(Object.keys(got.data as object), Object.keys(want.data), `${name} order`);
      accepted = true;
    }
    if (!got.success) assert.ok(got.error.issues[0].message.length > 0, `${name} says why`);
  }
  return accepted;
}

const RECORD = {
  sid: "0f".repeat(16),
  dir: "c2s",
  to: "user:bob",
  seqno: 7,
  ts: 1_700_000_000_000,
  ct: toBase64(new Uint8Array(18).fill(1)),
  c: toBase64(new Uint8Array(32).fill(2)),
};
/** RECORD signed as leaf 1 of a batch of 2. */
const SIGNED = {
  ...RECORD,
  sig: toBase64(new Uint8Array(64).fill(3)),
  batch: { i: 1, n: 2, path: [toBase64(new Uint8Array(32).fill(4))] },
};

Deno.test("record shapes agree with the zod reference on fixed cases", () => {
  const line = { dir: "s2c", type: "msg", record: { ...RECORD, dir: "s2c" } };
  const k = toBase64(new Uint8Array(32));
  const msg = {
    type: "msg",
    sig: SIGNED.sig,
    first: 6,
    n: 3,
    proof: [SIGNED.batch.path[0]],
    records: [{ record: RECORD, k }, { record: { ...RECORD, seqno: 8 }, k }],
  };
  const { type: _type, ...group } = msg;
  const msgLine = {
    dir: "c2s",
    type: "msg",
    ...group,
    records: msg.records.map(({ record }) => ({ record })),
  };
  const cases: [string, unknown][] = [
    ["a record", RECORD],
    ["a signed record", SIGNED],
    ["a signed record without batch", { ...RECORD, sig: toBase64(new Uint8Array(64).fill(3)) }],
    ["a batch without sig", { ...RECORD, batch: SIGNED.batch }],
    ["a batch of 33", { ...SIGNED, batch: { ...SIGNED.batch, n: 33 } }],
    ["a batch of 0", { ...SIGNED, batch: { i: 0, n: 0, path: [] } }],
    ["i not below n", { ...SIGNED, batch: { ...SIGNED.batch, i: 2 } }],
    ["i not below seqno", { ...SIGNED, seqno: 1 }],
    ["a path entry of 31 bytes", {
      ...SIGNED,
      batch: { ...SIGNED.batch, path: [toBase64(new Uint8Array(31))] },
    }],
    ["a path of 6", {
      ...SIGNED,
      batch: { ...SIGNED.batch, path: Array(6).fill(SIGNED.batch.path[0]) },
    }],
    ["an unknown batch member", { ...SIGNED, batch: { ...SIGNED.batch, root: "x" } }],
    ["a line", line],
    ["a server's msg", { type: "msg", record: RECORD, k }],
    ["a user's msg", msg],
    ["a user's msg line", msgLine],
    ["a user's msg line as s2c", { ...msgLine, dir: "s2c" }],
    ["a server's msg line as c2s", { ...line, dir: "c2s" }],
    ["a user's msg with a gap", {
      ...msg,
      n: 4,
      records: [msg.records[0], { record: { ...RECORD, seqno: 9 }, k }],
    }],
    ["a user's msg line with a gap", {
      ...msgLine,
      n: 4,
      records: [msgLine.records[0], { record: { ...RECORD, seqno: 9 } }],
    }],
    ["a user's msg with a record carrying sig", {
      ...msg,
      records: [{ record: SIGNED, k }],
    }],
    ["a user's msg with the hop's seqno", { ...msg, seqno: 3 }],
    ["a user's msg without records", { ...msg, records: [] }],
    ["an unknown member", { ...RECORD, extra: 1 }],
    ["a missing member", { ...RECORD, ts: undefined }],
    ["__proto__ as a member", JSON.parse(`{"__proto__":1,${JSON.stringify(RECORD).slice(1)}`)],
    ["a float seqno", { ...RECORD, seqno: 1.5 }],
    ["seqno 0", { ...RECORD, seqno: 0 }],
    ["ts beyond 2^53", { ...RECORD, ts: 2 ** 53 }],
    ["a string ts", { ...RECORD, ts: "1" }],
    ["an uppercase sid", { ...RECORD, sid: "0F".repeat(16) }],
    ["an 81-char recipient", { ...RECORD, to: "x".repeat(81) }],
    ["an empty recipient", { ...RECORD, to: "" }],
    ["a short ct", { ...RECORD, ct: "AAAA" }],
    ["a c2s ct at MAX_CT_BYTES", { ...RECORD, ct: toBase64(new Uint8Array(MAX_CT_BYTES)) }],
    ["a c2s ct one byte above", { ...RECORD, ct: toBase64(new Uint8Array(MAX_CT_BYTES + 1)) }],
    ["a c2s msg one byte above", {
      ...msg,
      records: [{ record: { ...RECORD, ct: toBase64(new Uint8Array(MAX_CT_BYTES + 1)) }, k }],
    }],
    ["an s2c ct above MAX_CT_BYTES", {
      ...RECORD,
      dir: "s2c",
      ct: toBase64(new Uint8Array(MAX_CT_BYTES + 1)),
    }],
    ["non-canonical base64", { ...RECORD, c: RECORD.c.slice(0, 42) + "B=" }],
    ["unpadded base64", { ...RECORD, c: RECORD.c.slice(0, 43) }],
    ["a relay line from c2s", { ...line, type: "relay", dir: "c2s" }],
    ["an array", [RECORD]],
    ["null", null],
    ["a body with private false", { kind: "operator", text: "hi", private: false }],
    ["a body with private true", { kind: "operator", text: "hi", private: true }],
    ["an empty text", { kind: "text", text: "" }],
    ["a text at the limit", { kind: "text", text: "é".repeat(MAX_TEXT_CHARS) }],
    ["a text past the limit", { kind: "text", text: "é".repeat(MAX_TEXT_CHARS + 1) }],
    ["an unknown kind", { kind: "shout", text: "hi" }],
    ["a received", { kind: "received", upto: 3 }],
    ["a received with unread", { kind: "received", upto: 9, unread: [2, 5] }],
    ["a received with a bad unread", { kind: "received", upto: 9, unread: [0] }],
    ["a received with too many unread", {
      kind: "received",
      upto: 9,
      unread: Array.from({ length: MAX_UNREAD + 1 }, (_, i) => i + 1),
    }],
    ["a received with unread not a list", { kind: "received", upto: 9, unread: 5 }],
    ["a stored line", {
      ...line,
      dir: "s2c",
      type: "stored",
      seqno: 2,
      ts: 5,
      author_fp: "cd".repeat(32),
      cert: RECORD.c,
    }],
    ["a stored line naming its certificate", {
      ...line,
      dir: "s2c",
      type: "stored",
      seqno: 2,
      ts: 5,
      author_fp: "cd".repeat(32),
    }],
    ["a relay line with an upper-case author_fp", {
      ...line,
      dir: "s2c",
      type: "relay",
      seqno: 2,
      ts: 5,
      author_fp: "CD".repeat(32),
    }],
    ["a relay line without author_fp", { ...line, dir: "s2c", type: "relay", seqno: 2, ts: 5 }],
    ["a queued line", { dir: "s2c", type: "queued", seqno: 2, ts: 5, of: 1 }],
    ["a queued message", { type: "queued", seqno: 2, ts: 5, of: 1 }],
    ["a queued line with a code", {
      dir: "s2c",
      type: "queued",
      seqno: 2,
      ts: 5,
      of: 1,
      code: "x",
    }],
  ];
  for (const [what, value] of cases) agree(value, what);
  // The bound itself, not only agreement (PROTOCOL §6.1).
  const ctOf = (dir: string, bytes: number) => ({
    ...RECORD,
    dir,
    ct: toBase64(new Uint8Array(bytes)),
  });
  assert.ok(RecordJsonShape.safeParse(ctOf("c2s", MAX_CT_BYTES)).success);
  assert.ok(!RecordJsonShape.safeParse(ctOf("c2s", MAX_CT_BYTES + 1)).success);
  assert.ok(RecordJsonShape.safeParse(ctOf("s2c", MAX_CT_BYTES + 1)).success);
});

Deno.test("record shapes agree with the zod reference on fuzzed messages", () => {
  const seed = fuzzSeed();
  const rng = new Rng(seed ^ 0x5a9e);
  const seeds = [
    CORPUS.msg,
    CORPUS.relay,
    CORPUS.stored,
    CORPUS.refused,
    CORPUS.text,
    CORPUS.operator,
    {
      type: "queued",
      seqno: 4,
      ts: 9,
      of: 2,
    },
    { kind: "received", upto: 7, unread: [3, 4] },
    {
      dir: "s2c",
      type: "stored",
      seqno: 2,
      ts: 5,
      author_fp: "ef".repeat(32),
      record: RECORD,
    },
    (() => {
      const { type, seqno, ts, author_fp, sig, first, n, proof, records } = CORPUS.relay as {
        records: { record: unknown }[];
      } & Record<string, unknown>;
      return {
        dir: "s2c",
        type,
        seqno,
        ts,
        author_fp,
        sig,
        first,
        n,
        proof,
        records: records.map(({ record }) => ({ record })),
      };
    })(),
  ];
  const accepted = fuzzNearSeeds(
    rng,
    seeds,
    4000,
    (value, i) => agree(value, `seed ${seed}, case ${i}`),
  );
  assert.ok(accepted > 100, `${accepted} fuzzed values were accepted by some shape`);
});
