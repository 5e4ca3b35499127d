/**
 * Seeded fuzzing for issue 8: a small PRNG, byte- and JSON-level mutators, a corpus of
 * well-formed messages, and three fuzz targets used by tests/fuzz_test.ts (short, in CI)
 * and scripts/fuzz.ts (long, `deno task fuzz`):
 *
 *   - the frame reader (FrameReader) against a reference model of PROTOCOL §2;
 *   - every schema through parseMessage (only PROTOCOL_ERROR may come out);
 *   - a live in-process ChatServer: mutated frames at each handshake step and after it;
 *     every connection must end with a code the server logged, never INTERNAL, never hang.
 *
 * Everything random comes from one `Rng` seeded by a u32, so a failure replays with
 * `SECURECHAT_FUZZ_SEED=<seed>`.
 */
import { PROTOCOL_VERSION } from "../lib/wire/messages.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import assert from "node:assert/strict";
import v8 from "node:v8";
import vm from "node:vm";
import { concat, fromBase64, fromHex, fromUtf8, toBase64, u32be, utf8 } from "../lib/bytes.ts";
import { generateKeyShare } from "../lib/crypto/ecdh.ts";
import { keyAgreement, phase2Group } from "../lib/crypto/kex.ts";
import { sign } from "../lib/crypto/signature.ts";
import { SecureChatError } from "../lib/errors.ts";
import { finishedMac, signatureInput } from "../lib/handshake/key_schedule.ts";
import type { LogFields } from "../lib/log.ts";
import { FrameReader, MAX_FRAME_BYTES } from "../lib/wire/frame.ts";
import { parseStrictJson } from "../lib/wire/strict_json.ts";
import {
  AuthOkSchema,
  CertificateSchema,
  CertificateVerifySchema,
  CloseSchema,
  DhClientSchema,
  DhServerSchema,
  ErrorSchema,
  FinishedSchema,
  HelloSchema,
  KeyUpdateSchema,
  LoginSchema,
  parseMessage,
  peerErrorOf,
  ReceiptEnvelopeSchema,
  RegisterSchema,
  ServerHelloSchema,
} from "../lib/wire/messages.ts";
import {
  BodyShape,
  C2sMsgShape,
  RefusedMessageShape,
  RelayMessageShape,
  S2cMsgShape,
  StoredMessageShape,
} from "../lib/message/record.ts";
import type { Shape } from "../lib/wire/shape.ts";
import { ChatServer } from "../lib/server/server.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import { ChatSession, type ReceivedMessage, type SessionEnd } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { HostileClient, type HostileOptions, RawConn, X25519_LOW_ORDER } from "./hostile.ts";
import { sharedPasswordStore } from "./memory_store.ts";
import { makePki, type TestPki } from "./pki.ts";

// ---------------------------------------------------------------- PRNG and seeds

/** Draws below their argument from a {@link Rng} seeded with `seed`: `rand(n)` is 0 … n − 1. */
export function seededInts(seed: number): (below: number) => number {
  const rng = new Rng(seed);
  return (below) => rng.int(below);
}

/** sfc32: a small, fast, well-mixed 32-bit PRNG; the whole state comes from one u32 seed. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  constructor(readonly seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.u32();
  }
  u32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }
  /** 0 <= n < max */
  int(max: number): number {
    return max <= 1 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * max);
  }
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
  /** A child generator: lets concurrent workers stay reproducible. */
  fork(): Rng {
    return new Rng(this.u32());
  }
}

export const SEED_ENV = "SECURECHAT_FUZZ_SEED";

/** The seed to use: `SECURECHAT_FUZZ_SEED` (decimal or 0x hex) to replay, else a fresh one. */
export function fuzzSeed(explicit?: string): number {
  const text = explicit ?? Deno.env.get(SEED_ENV);
  if (text !== undefined && text !== "") {
    const seed = Number(text);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) {
      throw new Error(`${SEED_ENV} must be a u32, got ${text}`);
    }
    return seed;
  }
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

// ---------------------------------------------------------------- corpus

const b64 = (n: number, fill = 7) => toBase64(new Uint8Array(n).fill(fill));
const CERT = b64(300, 0x30);
const RECORD = {
  sid: "0f".repeat(16),
  dir: "c2s",
  to: "lobby",
  seqno: 1,
  ts: 1_700_000_000_000,
  ct: b64(40),
  c: b64(32),
  sig: b64(64),
  batch: { i: 0, n: 1, path: [] },
};

/** RECORD as a relay carries it (PROTOCOL §6.4): without `sig` and `batch`. */
const { sig: _sig, batch: _batch, ...RELAYED_RECORD } = RECORD;

/** One well-formed example of every message and body: the seeds for mutation. */
export const CORPUS: Record<string, unknown> = {
  hello: {
    type: "hello",
    version: PROTOCOL_VERSION,
    nonce: b64(32),
    groups: ["x25519", "p256"],
    key_share: { group: "x25519", pub: b64(32, 9) },
  },
  server_hello: {
    type: "server_hello",
    version: PROTOCOL_VERSION,
    nonce: b64(32),
    time: 1_700_000_000_000,
    key_share: { group: "x25519", pub: b64(32, 9) },
  },
  msg: {
    type: "msg",
    sig: b64(64),
    first: 1,
    n: 1,
    proof: [],
    records: [{ record: RELAYED_RECORD, k: b64(32) }],
  },
  server_msg: { type: "msg", record: { ...RELAYED_RECORD, dir: "s2c" }, k: b64(32) },
  relay: {
    type: "relay",
    seqno: 3,
    ts: 1_700_000_000_000,
    author_fp: "ab".repeat(32),
    cert: CERT,
    sig: b64(64),
    first: 1,
    n: 2,
    proof: [b64(32, 5)],
    records: [{ record: RELAYED_RECORD, k: b64(32) }],
  },
  stored: {
    type: "stored",
    seqno: 3,
    ts: 1_700_000_000_000,
    author_fp: "ab".repeat(32),
    cert: CERT,
    record: RECORD,
    k: b64(32),
  },
  refused: { type: "refused", seqno: 2, ts: 1_700_000_000_000, of: 1, code: "RATE_LIMITED" },
  key_update: { type: "key_update" },
  error: { type: "error", code: "PROTOCOL_ERROR", message: "bad" },
  certificate: { type: "certificate", cert: CERT },
  certificate_verify: { type: "certificate_verify", sig: b64(64) },
  finished: { type: "finished", mac: b64(32) },
  register: { type: "register", email: "a@example.com", username: "alice", password: "pw" },
  login: { type: "login", username: "alice", password: "pw" },
  auth_ok: { type: "auth_ok", username: "alice", registered: false },
  dh_client: { type: "dh_client", key_share: { group: "x25519", pub: b64(32, 9) } },
  dh_server: { type: "dh_server", key_share: { group: "p256", pub: b64(65, 4) } },
  close: { type: "close" },
  receipt: { type: "receipt", hash: b64(32), sig: b64(64) },
  text: { kind: "text", text: "hi" },
  operator: { kind: "operator", text: "hello", private: true },
  notice: { kind: "notice", text: "alice joined" },
  who: { kind: "who" },
};

/** Every schema parseMessage is used with, and the discriminator it is used with. */
export const SCHEMAS: [string, Shape<unknown>, "type" | "kind"][] = [
  ["hello", HelloSchema, "type"],
  ["server_hello", ServerHelloSchema, "type"],
  ["msg", C2sMsgShape, "type"],
  ["server_msg", S2cMsgShape, "type"],
  ["relay", RelayMessageShape, "type"],
  ["stored", StoredMessageShape, "type"],
  ["refused", RefusedMessageShape, "type"],
  ["key_update", KeyUpdateSchema, "type"],
  ["error", ErrorSchema, "type"],
  ["certificate", CertificateSchema, "type"],
  ["certificate_verify", CertificateVerifySchema, "type"],
  ["finished", FinishedSchema, "type"],
  ["register", RegisterSchema, "type"],
  ["login", LoginSchema, "type"],
  ["login|register", LoginSchema.or(RegisterSchema), "type"],
  ["auth_ok", AuthOkSchema, "type"],
  ["dh_client", DhClientSchema, "type"],
  ["dh_server", DhServerSchema, "type"],
  ["close", CloseSchema, "type"],
  ["receipt", ReceiptEnvelopeSchema, "type"],
  ["control", CloseSchema.or(ReceiptEnvelopeSchema).or(ErrorSchema), "type"],
  ["body", BodyShape, "kind"],
];

// ---------------------------------------------------------------- mutators

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x2c, 0x3a];
const INTERESTING_NUMBERS = [
  0,
  -1,
  1,
  0.5,
  2 ** 31,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 53 + 2,
  1e308,
  -1e308,
  65535,
  65536,
];
const INTERESTING_STRINGS = [
  "",
  "=",
  "A",
  "AA==",
  "AB==", // non-canonical padding bits
  "AAA",
  "====",
  "\u0000",
  "\ud800", // lone surrogate
  "💥",
  "__proto__",
  "constructor",
  "x25519",
  "p256",
  "PROTOCOL_ERROR",
  "INTERNAL",
];
const KNOWN_TYPES = Object.values(CORPUS).map((m) =>
  (m as Record<string, unknown>).type ?? (m as Record<string, unknown>).kind
) as string[];

/** Byte-level: flips, interesting bytes, inserts, deletes, duplicates, truncation, splices. */
export function mutateBytes(rng: Rng, input: Uint8Array, rounds = rng.range(1, 4)): Uint8Array {
  let b: Uint8Array = input.slice();
  for (let r = 0; r < rounds; r++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(8)) {
      case 0:
        if (b.length) b[Math.min(at, b.length - 1)] ^= 1 << rng.int(8);
        break;
      case 1:
        if (b.length) b[Math.min(at, b.length - 1)] = rng.pick(INTERESTING_BYTES);
        break;
      case 2:
        b = concat(b.subarray(0, at), rng.bytes(rng.range(1, 16)), b.subarray(at));
        break;
      case 3:
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + rng.range(1, 16))));
        break;
      case 4: {
        const len = rng.range(1, 32);
        b = concat(b.subarray(0, at), b.subarray(at, at + len), b.subarray(at));
        break;
      }
      case 5:
        b = b.slice(0, at);
        break;
      case 6:
        b = concat(b, rng.bytes(rng.range(1, 8)));
        break;
      default: {
        const other = utf8(JSON.stringify(rng.pick(Object.values(CORPUS))));
        const from = rng.int(other.length);
        b = concat(b.subarray(0, at), other.subarray(from, from + rng.range(1, 24)));
      }
    }
  }
  return b;
}

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 3 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick(INTERESTING_NUMBERS);
    case 3:
      return rng.pick(INTERESTING_STRINGS);
    case 4:
      return "x".repeat(rng.pick([1, 16, 33, 65, 255, 257, 1025, 5000, 70_000]));
    case 5:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    case 6:
      return Object.fromEntries(
        Array.from(
          { length: rng.int(4) },
          () => [rng.pick(INTERESTING_STRINGS), randomValue(rng, depth + 1)],
        ),
      );
    default:
      return structuredClone(rng.pick(Object.values(CORPUS)));
  }
}

/** JSON-level: drop, add, retype or corrupt a member somewhere in the tree; change the type. */
export function mutateJson(rng: Rng, input: unknown, rounds = rng.range(1, 3)): unknown {
  let value = structuredClone(input);
  for (let r = 0; r < rounds; r++) {
    const holders: Record<string, unknown>[] = [];
    const stack: unknown[] = [value];
    while (stack.length && holders.length < 2000) {
      const v = stack.pop();
      if (v && typeof v === "object") {
        holders.push(v as Record<string, unknown>);
        stack.push(...Object.values(v));
      }
    }
    if (holders.length === 0 || rng.chance(0.05)) {
      value = randomValue(rng);
      continue;
    }
    const holder = rng.pick(holders);
    const keys = Object.keys(holder);
    const key = keys.length ? rng.pick(keys) : "type";
    switch (rng.int(7)) {
      case 0:
        delete holder[key];
        break;
      case 1:
        // defineProperty: a plain assignment to "__proto__" would set the prototype instead
        Object.defineProperty(holder, rng.pick(["extra", "__proto__", "TYPE", key + "_"]), {
          value: randomValue(rng),
          enumerable: true,
          configurable: true,
          writable: true,
        });
        break;
      case 2:
        holder[key] = randomValue(rng);
        break;
      case 3: {
        const v = holder[key];
        if (typeof v === "string") {
          const chars = [...v];
          const at = rng.int(chars.length + 1);
          chars.splice(
            at,
            rng.int(3),
            ...rng.pick([["="], ["*"], ["A"], [""], ["\n"], ["-", "_"]]),
          );
          holder[key] = chars.join("");
        } else if (typeof v === "number") holder[key] = rng.pick(INTERESTING_NUMBERS);
        else holder[key] = randomValue(rng);
        break;
      }
      case 4:
        if ("type" in holder) holder.type = rng.pick(KNOWN_TYPES);
        else if ("kind" in holder) holder.kind = rng.pick(KNOWN_TYPES);
        else holder[key] = randomValue(rng);
        break;
      case 5: {
        // nest deeply: a parser must not overflow its stack on a hostile document
        let deep: unknown = holder[key];
        for (let i = 0; i < rng.pick([10, 100, 1000]); i++) deep = [deep];
        holder[key] = deep;
        break;
      }
      default:
        holder[key] = structuredClone(rng.pick(Object.values(CORPUS)));
    }
  }
  return value;
}

/** A payload to fuzz a parser with: mutated corpus JSON, mutated bytes, or noise. */
export function fuzzPayload(rng: Rng, seedMessage?: unknown): Uint8Array {
  const base = seedMessage ?? structuredClone(rng.pick(Object.values(CORPUS)));
  if (rng.chance(0.02)) {
    // deep nesting as raw text: where recursive parsers overflow their stack
    const depth = rng.pick([100, 1000, 10_000, 32_000]); // 32k levels fill a 64 KiB frame
    return utf8("[".repeat(depth) + "]".repeat(rng.chance(0.5) ? depth : 0));
  }
  switch (rng.int(5)) {
    case 0:
      return rng.bytes(rng.range(0, 64));
    case 1:
      return mutateBytes(rng, utf8(JSON.stringify(base)));
    case 2:
      return mutateBytes(rng, utf8(JSON.stringify(mutateJson(rng, base))));
    default:
      return utf8(JSON.stringify(mutateJson(rng, base)));
  }
}

/**
 * A differential fuzz of shapes: `cases` inputs near `seeds` (one JSON edit two times in three,
 * inputs near the boundary; else heavier noise, fuzzPayload), each that parses as strict JSON
 * (what parseMessage would hand a shape) given to `agree` with its case number.
 * @returns how many `agree` counted as accepted (true), so a test can show it is not vacuous
 */
export function fuzzNearSeeds(
  rng: Rng,
  seeds: readonly unknown[],
  cases: number,
  agree: (value: unknown, i: number) => boolean,
): number {
  let accepted = 0;
  for (let i = 0; i < cases; i++) {
    const base = rng.pick(seeds);
    const payload = i % 3 === 0
      ? fuzzPayload(rng, base)
      : utf8(JSON.stringify(mutateJson(rng, base, 1)));
    let value: unknown;
    try {
      value = parseStrictJson(fromUtf8(payload));
    } catch {
      continue; // parseMessage refuses it before any shape sees it
    }
    if (agree(value, i)) accepted++;
  }
  return accepted;
}

/** Flips one bit inside a decoded base64 member: still well-formed, now wrong. */
export function flipBase64Member(rng: Rng, message: unknown): unknown {
  const copy = structuredClone(message) as Record<string, unknown>;
  const spots: [Record<string, unknown>, string][] = [];
  const stack: unknown[] = [copy];
  while (stack.length) {
    const v = stack.pop() as Record<string, unknown>;
    for (const [k, child] of Object.entries(v)) {
      if (child && typeof child === "object") stack.push(child);
      else if (typeof child === "string" && child.length >= 4 && /^[A-Za-z0-9+/]+=*$/.test(child)) {
        spots.push([v, k]);
      }
    }
  }
  if (spots.length === 0) return mutateJson(rng, copy, 1);
  const [holder, key] = rng.pick(spots);
  const bytes = fromBase64(holder[key] as string);
  if (bytes.length) bytes[rng.int(bytes.length)] ^= 1 << rng.int(8);
  holder[key] = toBase64(bytes);
  return copy;
}

/**
 * A mutation of one honest protocol message, weighted toward inputs that get past the
 * parser: a flipped bit in a binary member, one JSON edit, another valid message out of
 * order, a byte edit, or heavier noise.
 */
export function fuzzMessage(rng: Rng, honest: unknown): Uint8Array {
  const r = rng.int(20);
  if (r < 7) return utf8(JSON.stringify(flipBase64Member(rng, honest)));
  if (r < 13) return utf8(JSON.stringify(mutateJson(rng, honest, 1)));
  if (r < 15) return utf8(JSON.stringify(rng.pick(Object.values(CORPUS))));
  if (r < 17) return mutateBytes(rng, utf8(JSON.stringify(honest)), 1);
  return fuzzPayload(rng, honest);
}

// ---------------------------------------------------------------- target 1: schemas

const PARSER_CODES = new Set(["PROTOCOL_ERROR"]);

export interface Stats {
  [outcome: string]: number;
}

function count(stats: Stats, key: string): void {
  stats[key] = (stats[key] ?? 0) + 1;
}

/** One payload through every schema: a value or PROTOCOL_ERROR, nothing else. */
export function fuzzSchemasOnce(rng: Rng, stats: Stats): void {
  const payload = fuzzPayload(rng);
  for (const [name, schema, discriminator] of SCHEMAS) {
    try {
      parseMessage(payload, schema, discriminator);
      count(stats, `accepted by ${name}`);
    } catch (error) {
      if (!(error instanceof SecureChatError) || !PARSER_CODES.has(error.code)) {
        throw new Error(
          `parseMessage(${name}) threw ${String(error)} for payload ${
            JSON.stringify(new TextDecoder().decode(payload).slice(0, 300))
          }`,
          { cause: error },
        );
      }
      count(stats, "PROTOCOL_ERROR");
    }
  }
  // peerErrorOf is called on every handshake payload before any schema: it must never throw.
  peerErrorOf(payload);
}

// ---------------------------------------------------------------- target 2: FrameReader

type Expected = { frames: Uint8Array[]; end: "null" | "FRAME_TOO_LARGE" | "PROTOCOL_ERROR" };

/** PROTOCOL §2 as a reference model: what a correct reader yields for these bytes. */
export function referenceFrames(bytes: Uint8Array, maxFrame: number): Expected {
  const frames: Uint8Array[] = [];
  let at = 0;
  while (true) {
    if (at === bytes.length) return { frames, end: "null" };
    if (bytes.length - at < 4) return { frames, end: "PROTOCOL_ERROR" };
    const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
    if (length === 0 || length > maxFrame) return { frames, end: "FRAME_TOO_LARGE" };
    if (bytes.length - at - 4 < length) return { frames, end: "PROTOCOL_ERROR" };
    frames.push(bytes.slice(at + 4, at + 4 + length));
    at += 4 + length;
  }
}

/** A stream of frames, some with hostile length prefixes, some truncated. */
function fuzzStreamBytes(rng: Rng, maxFrame: number): Uint8Array {
  const parts: Uint8Array[] = [];
  const n = rng.range(0, 6);
  for (let i = 0; i < n; i++) {
    const payload = rng.chance(0.7) ? fuzzPayload(rng) : rng.bytes(rng.range(0, 200));
    let length = payload.length;
    if (rng.chance(0.2)) {
      length = rng.pick([
        0,
        1,
        maxFrame,
        maxFrame + 1,
        MAX_FRAME_BYTES,
        MAX_FRAME_BYTES + 1,
        0xffff_ffff,
        0x8000_0000,
        rng.u32(),
        payload.length + rng.range(1, 5),
        Math.max(0, payload.length - rng.range(1, 5)),
      ]);
    }
    parts.push(u32be(length >>> 0), payload);
  }
  let bytes = concat(...parts);
  if (rng.chance(0.3)) bytes = bytes.slice(0, rng.int(bytes.length + 1));
  if (rng.chance(0.1)) bytes = mutateBytes(rng, bytes);
  return bytes;
}

/** Delivers `bytes` in random chunks (down to one byte), from a pull source. */
function chunkedStream(rng: Rng, bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  const oneByte = rng.chance(0.2);
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      const size = oneByte ? 1 : rng.range(1, rng.pick([3, 17, 256, 70_000]));
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

/** One random stream through FrameReader, compared frame by frame with the model. */
export async function fuzzFrameReaderOnce(rng: Rng, stats: Stats): Promise<void> {
  const maxFrame = rng.chance(0.5) ? MAX_FRAME_BYTES : rng.range(1, 300);
  const bytes = fuzzStreamBytes(rng, maxFrame);
  const expected = referenceFrames(bytes, maxFrame);
  const reader = new FrameReader(chunkedStream(rng, bytes), maxFrame);
  const got: Uint8Array[] = [];
  let end: string;
  while (true) {
    try {
      const frame = await reader.read();
      if (frame === null) {
        end = "null";
        break;
      }
      got.push(frame);
    } catch (error) {
      if (!(error instanceof SecureChatError)) {
        throw new Error(`FrameReader threw a non-SecureChatError: ${String(error)}`);
      }
      end = error.code;
      break;
    }
    if (got.length > 100) throw new Error("FrameReader yielded more frames than were sent");
  }
  await reader.cancel();
  const where = `maxFrame=${maxFrame}, ${bytes.length} bytes`;
  assert.equal(end, expected.end, `end of stream (${where})`);
  assert.equal(got.length, expected.frames.length, `frame count (${where})`);
  for (let i = 0; i < got.length; i++) assert.deepEqual(got[i], expected.frames[i]);
  count(stats, end);
}

// ---------------------------------------------------------------- target 3: live server

/** Where a mutated frame is sent: before the handshake, at each client step, or after it. */
export const SERVER_TARGETS = [
  "raw",
  "hello",
  "certificate",
  "certificate_verify",
  "finished",
  "credentials",
  "dh_client",
  "finished2",
  "msg",
  "control",
] as const;
export type ServerTarget = typeof SERVER_TARGETS[number];

export interface LoggedEvent extends LogFields {
  event: string;
}

export interface LiveFuzzContext {
  port: number;
  client: Omit<HostileOptions, "group">;
  /** The in-process server's log, appended to as it runs. */
  logs: LoggedEvent[];
  /** How long the server has to end a connection after we stop (its handshake timeout + slack). */
  endWithinMs: number;
  /** How long to wait for the server to close on its own before we close. */
  waitMs: number;
}

const NOT_TERMINAL = new Set(["CONNECT", "LOGIN", "SESSION_REPLACED"]);

/** The server has finished with this peer: a handshake code (no session) or CLOSE. */
export function terminalFor(peer: string) {
  return (e: LoggedEvent) =>
    e.peer === peer && (e.event === "CLOSE" || (!e.session && !NOT_TERMINAL.has(e.event)));
}

/** The first event at or after index `from` passing `test`, waiting up to `timeoutMs`. */
export async function waitForLog(
  logs: LoggedEvent[],
  test: (e: LoggedEvent) => boolean,
  timeoutMs: number,
  from: number,
): Promise<LoggedEvent | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const found = logs.slice(from).find(test);
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return logs.slice(from).find(test);
}

/** An honest inner message for a sealed handshake step, as the hostile client would send it. */
async function honestInner(h: HostileClient, step: ServerTarget): Promise<Record<string, unknown>> {
  const { identity, username, password } = h.opts;
  switch (step) {
    case "certificate":
      return { type: "certificate", cert: toBase64(identity.certDer) };
    case "certificate_verify": {
      const signed = signatureInput("client", h.transcript.hash());
      return { type: "certificate_verify", sig: toBase64(await sign(identity.signingKey, signed)) };
    }
    case "finished": {
      const mac = finishedMac(h.phase1!.clientFinishedKey, h.transcript.hash());
      return { type: "finished", mac: toBase64(mac) };
    }
    case "credentials":
      return { type: "login", username, password };
    case "dh_client": {
      const { group, share } = await keyAgreement(phase2Group(h.group)).generate();
      return { type: "dh_client", key_share: { group, pub: toBase64(share) } };
    }
    case "finished2": {
      const mac = finishedMac(h.master!.clientFinishedKey, h.transcript.hash());
      return { type: "finished", mac: toBase64(mac) };
    }
    default:
      return { type: "close" };
  }
}

/** The client step that runs just before a target's frame would be sent. */
const STEP_BEFORE: Partial<Record<ServerTarget, Parameters<HostileClient["upTo"]>[0]>> = {
  certificate: "certificate",
  certificate_verify: "certificate_verify",
  finished: "finished",
  credentials: "credentials",
  dh_client: "dh_client",
  finished2: "finished2",
};

/** Writes `payload` as a frame, sometimes with a lying length prefix or split into bytes. */
async function sendMutatedFrame(rng: Rng, conn: RawConn, payload: Uint8Array): Promise<string> {
  const how = rng.int(20);
  if (how === 0) {
    const length = rng.pick([0, MAX_FRAME_BYTES + 1, 0xffff_ffff, payload.length + 100]);
    await conn.write(concat(u32be(length), payload));
    return "bad-length";
  }
  if (how === 1) {
    await conn.writeSplit(concat(u32be(payload.length), payload), rng.range(1, 7));
    return "split";
  }
  if (how === 2) {
    await conn.write(concat(u32be(payload.length), payload).slice(0, rng.range(1, 4)));
    return "torn";
  }
  await conn.write(concat(u32be(payload.length), payload));
  return "frame";
}

export interface LiveOutcome {
  target: ServerTarget;
  /** The code (or CLOSE) the server logged to end this connection. */
  code: string;
  closedByServer: boolean;
}

/**
 * One hostile connection: an honest handshake up to the target step, then one mutated
 * frame there (inner JSON mutated and properly sealed, or the outer frame mutated), then
 * wait for the server to close; if it does not, we close. The server must log the end
 * of the connection with a code other than INTERNAL within `endWithinMs`.
 */
export async function fuzzServerOnce(
  rng: Rng,
  ctx: LiveFuzzContext,
  target: ServerTarget = rng.pick(SERVER_TARGETS),
): Promise<LiveOutcome> {
  // Ephemeral ports are reused over thousands of connections: only look at what this
  // connection can have caused, from here on.
  const from = ctx.logs.length;
  const h = await HostileClient.connect(ctx.port, {
    ...ctx.client,
    group: rng.chance(0.8) ? "x25519" : "p256",
  });
  const local = h.conn.tcp.localAddr as Deno.NetAddr;
  const peer = `${local.hostname}:${local.port}`;
  let closedByServer = false;
  try {
    if (target === "raw") {
      await sendMutatedFrame(rng, h.conn, fuzzPayload(rng, CORPUS.hello));
    } else if (target === "hello") {
      const pub = rng.chance(0.15)
        ? toBase64(fromHex(rng.pick(Object.values(X25519_LOW_ORDER))))
        : toBase64((await generateKeyShare("x25519")).publicKey);
      const hello = {
        ...(CORPUS.hello as Record<string, unknown>),
        nonce: toBase64(rng.bytes(32)),
        key_share: { group: "x25519", pub },
      };
      await sendMutatedFrame(rng, h.conn, fuzzMessage(rng, hello));
    } else if (target === "msg" || target === "control") {
      await h.handshake();
      if (target === "msg") {
        const body = rng.chance(0.8) ? { kind: "text" as const, text: "fuzz" } : undefined;
        const seqno = rng.chance(0.15) ? rng.pick([0, 1, 2, 5, 2 ** 53]) : undefined;
        const ts = rng.chance(0.1)
          ? rng.pick([0, Date.now() - 3_600_000, Date.now() + 3_600_000])
          : undefined;
        const content = await h.msgContent(body ?? fuzzMessage(rng, CORPUS.text), {
          record: (r) => {
            if (seqno !== undefined) r.seqno = seqno;
            if (ts !== undefined) r.ts = ts;
          },
        });
        const parsed = JSON.parse(new TextDecoder().decode(content));
        const inner = rng.chance(0.2) ? content : fuzzMessage(rng, parsed);
        if (rng.chance(0.8)) await h.sendSealed(inner); // reaches the session's checks
        else await sendMutatedFrame(rng, h.conn, inner); // a plaintext frame: the record layer
      } else {
        const honest = rng.pick([CORPUS.close, CORPUS.receipt, CORPUS.error]);
        await h.sendSealed(fuzzMessage(rng, honest));
      }
    } else {
      await h.upTo(STEP_BEFORE[target]!);
      const inner = await honestInner(h, target);
      if (rng.chance(0.65)) {
        // inner message mutated, sealed correctly: reaches the schema and the step logic
        await h.sendSealed(fuzzMessage(rng, inner));
      } else {
        // outer frame mutated: reaches the frame parser and the record layer
        const sealed = h.records!.seal(utf8(JSON.stringify(inner)));
        await sendMutatedFrame(rng, h.conn, mutateBytes(rng, sealed));
      }
    }
    closedByServer = (await h.expectEnd(ctx.waitMs)).closed;
  } catch {
    // the server refused earlier than the honest steps expected (e.g. a mutated hello
    // it rejects before server_hello): that is an outcome, the log says which
  } finally {
    h.close();
  }
  const end = await waitForLog(ctx.logs, terminalFor(peer), ctx.endWithinMs, from);
  if (!end) {
    const seen = ctx.logs.slice(from).filter((e) => e.peer === peer);
    throw new Error(
      `server did not log the end of ${peer} (${target}) within ${ctx.endWithinMs} ms: ${
        JSON.stringify(seen)
      }`,
    );
  }
  const mine = ctx.logs.slice(from, ctx.logs.indexOf(end, from) + 1).filter((e) => e.peer === peer);
  const internal = mine.find((e) => e.event === "INTERNAL");
  if (internal) {
    throw new Error(`server logged INTERNAL for ${target}: ${JSON.stringify(internal)}`);
  }
  const first = mine.find((e) => !NOT_TERMINAL.has(e.event));
  return { target, code: first?.event ?? end.event, closedByServer };
}

// ---------------------------------------------------------------- memory

export interface MemorySample {
  heapUsed: number;
  rss: number;
}

/**
 * A full garbage collection, if one can be had: `--v8-flags=--expose-gc` puts `gc` on
 * globalThis; without it, the flag is set at run time through node:v8 and `gc` fetched
 * from a fresh context (the usual Node trick, which Deno's V8 honours). Undefined if
 * neither works.
 */
export const fullGc: (() => void) | undefined = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === "function") return exposed;
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc");
    return typeof gc === "function" ? gc as () => void : undefined;
  } catch {
    return undefined;
  }
})();

/** Heap and RSS, after full GCs when `fullGc` is available. */
export async function memorySample(): Promise<MemorySample> {
  for (let i = 0; i < 3; i++) {
    fullGc?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const { heapUsed, rss } = Deno.memoryUsage();
  return { heapUsed, rss };
}

export const MiB = 1024 * 1024;

export function formatStats(stats: Stats): string {
  return Object.entries(stats).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(
    ", ",
  );
}

// ---------------------------------------------------------------- an in-process server to fuzz

/** A received message as the tests need it: its kind, text and (for a relay) verified author. */
export interface Seen {
  kind: string;
  text?: string;
  author?: string;
}

function seen(m: ReceivedMessage): Seen {
  if (m.type === "relay") return { kind: "relay", text: m.relayed.text, author: m.relayed.author };
  if (m.type === "refused") return { kind: "refused", text: m.code };
  if (m.type === "queued") return { kind: "queued", text: String(m.of) };
  if (m.type === "sealed") return { kind: "sealed" };
  const body = m.body as { kind: string; text?: string };
  return { kind: body.kind, text: body.text };
}

/** An honest, in-process client session: handshake, chat session, run loop. */
export class HonestClient {
  /** What arrived, kept small (a soak receives tens of thousands of relays). */
  readonly received: Seen[] = [];
  readonly running: Promise<SessionEnd>;
  private constructor(readonly session: ChatSession) {
    this.running = session.run({ onMessage: (m) => void this.received.push(seen(m)) });
  }

  static async login(
    port: number,
    pki: TestPki,
    user: string,
    password: string,
    transcriptDir: string,
  ): Promise<HonestClient> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    const established = await clientHandshake(new FrameConnection(tcp), {
      identity: await pki.identity(user),
      trust: pki.trust,
      serverName: "localhost",
      credentials: { mode: "login", username: user, password },
    });
    const session = await ChatSession.start(established, {
      transcripts: transcriptDirectory(transcriptDir),
      serverName: "localhost",
      relayTrust: pki.trust,
    });
    return new HonestClient(session);
  }

  /** Waits until a received message satisfies `test`. */
  async waitFor(test: (m: Seen) => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.received.some(test)) {
      if (Date.now() > deadline) {
        throw new Error(
          `${this.session.username}: no matching message; got ${
            JSON.stringify(this.received.slice(-20))
          }`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Proves the session works (`who` answered), then closes with receipts. */
  async finish(): Promise<SessionEnd> {
    const before = this.received.length;
    await this.session.send({ kind: "who" }, "server");
    await this.waitFor((m) =>
      this.received.indexOf(m) >= before && m.kind === "notice" && !!m.text?.startsWith("online:")
    );
    await this.session.close();
    return await this.running;
  }
}

export interface FuzzServer {
  server: ChatServer;
  pki: TestPki;
  logs: LoggedEvent[];
  transcripts: string;
  password: string;
  handshakeTimeoutMs: number;
  /** Logs `user` in honestly, its transcripts in `<transcripts>/<user>`. */
  login(user: string): Promise<HonestClient>;
  dispose(): Promise<void>;
}

/**
 * A ChatServer on a free loopback port with a fake store, a log captured in memory, and
 * limits opened up (the fuzzer makes hundreds of handshakes a second from one address).
 */
export async function startFuzzServer(
  users: string[],
  o: { handshakeTimeoutMs?: number; echo?: boolean } = {},
): Promise<FuzzServer> {
  const pki = await makePki(users, "ed25519");
  const transcripts = await Deno.makeTempDir({ prefix: "securechat-fuzz-" });
  const logs: LoggedEvent[] = [];
  const password = "fuzz-password";
  const handshakeTimeoutMs = o.handshakeTimeoutMs ?? 3000;
  const server = ChatServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    identity: await pki.identity("server"),
    trust: pki.trust,
    store: sharedPasswordStore(password),
    log: (event, fields = {}) => {
      logs.push({ event, ...fields });
      if (o.echo) console.log(JSON.stringify({ event, ...fields }));
    },
    session: { transcripts: transcriptDirectory(transcripts) },
    handshakeTimeoutMs,
    admission: {
      maxConnections: 10_000,
      maxConnectionsPerAddress: 10_000,
      handshakeBurst: 1_000_000,
      handshakesPerSecond: 1_000_000,
    },
    loginThrottle: { baseDelayMs: 0, maxDelayMs: 0, lockoutFailures: 1e9, windowMs: 1 },
    lobby: { messagesPerSecond: 10_000, messageBurst: 10_000 },
  });
  return {
    server,
    pki,
    logs,
    transcripts,
    password,
    handshakeTimeoutMs,
    login: (user) => HonestClient.login(server.port, pki, user, password, `${transcripts}/${user}`),
    async dispose() {
      await server.shutdown();
      await Deno.remove(transcripts, { recursive: true }).catch(() => {});
      await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Live fuzzing with `workers` hostile connections at a time until `until()` says stop;
 * returns the outcome counts. Each worker logs in as its own user (fuzz0, fuzz1, ...).
 */
export async function fuzzServerLoop(
  rng: Rng,
  fs: FuzzServer,
  workers: number,
  until: (done: number) => boolean,
  onOutcome?: (o: LiveOutcome) => void,
): Promise<{ stats: Stats; done: number; closedByServer: number }> {
  const stats: Stats = {};
  let done = 0;
  let closedByServer = 0;
  const rngs = Array.from({ length: workers }, () => rng.fork());
  await Promise.all(rngs.map(async (wrng, i) => {
    const ctx = await liveContext(fs, i);
    while (!until(done)) {
      const outcome = await fuzzServerOnce(wrng, ctx);
      done++;
      if (outcome.closedByServer) closedByServer++;
      count(stats, `${outcome.target}:${outcome.code}`);
      onOutcome?.(outcome);
    }
  }));
  return { stats, done, closedByServer };
}

/** The context for worker `i`: it logs in as `fuzz<i>`. */
export async function liveContext(fs: FuzzServer, i: number): Promise<LiveFuzzContext> {
  return {
    port: fs.server.port,
    client: {
      identity: await fs.pki.identity(`fuzz${i}`),
      trust: fs.pki.trust,
      username: `fuzz${i}`,
      password: fs.password,
    },
    logs: fs.logs,
    endWithinMs: fs.handshakeTimeoutMs + 3000,
    waitMs: 500,
  };
}
