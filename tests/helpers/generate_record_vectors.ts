/**
 * Writes tests/vectors/protocol/records.json: the record layer's inner plaintext (PROTOCOL
 * §3.2) with one and several messages, sealed under a fixed key, and records a receiver must
 * refuse. Deterministic: a rerun reproduces the file byte for byte.
 *
 *   deno run -A tests/helpers/generate_record_vectors.ts
 */
import { toHex, u32be, utf8 } from "../../lib/bytes.ts";
import { padContents, sealRecord } from "../../lib/handshake/record.ts";

const key = Uint8Array.from({ length: 32 }, (_, i) => i);
const iv = Uint8Array.from({ length: 12 }, (_, i) => 0xa0 + i);

const queued = (seqno: number) =>
  `{"type":"queued","seqno":${seqno},"ts":${1767225600000 + seqno},"of":${seqno}}`;

/** An inner plaintext made by hand: lengths and contents as given, zeros to `size`. */
function rawInner(size: number, parts: (Uint8Array | string)[]): Uint8Array {
  const inner = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    const bytes = typeof part === "string" ? utf8(part) : part;
    inner.set(bytes, at);
    at += bytes.length;
  }
  return inner;
}

type Case =
  & { name: string; context: "session" | "handshake"; counter: number; inner: Uint8Array }
  & ({ contents: string[] } | { error: string; why: string });

/** 248 bytes: with its length, one content ends 4 bytes before the first 256. */
const fill = (n: number) => `{"type":"msg","pad":"${"x".repeat(n - 23)}"}`;
const exactly248 = fill(248);
const exactly250 = fill(250);

const cases: Case[] = [
  {
    name: "one message",
    context: "session",
    counter: 0,
    inner: padContents([utf8(queued(1))]),
    contents: [queued(1)],
  },
  {
    name: "three messages, padded once",
    context: "session",
    counter: 7,
    inner: padContents([queued(1), queued(2), queued(3)].map(utf8)),
    contents: [queued(1), queued(2), queued(3)],
  },
  {
    name: "a content ending 4 bytes before the end: a zero length starts the padding",
    context: "session",
    counter: 1,
    inner: padContents([utf8(exactly248)]),
    contents: [exactly248],
  },
  {
    name: "a content ending 2 bytes before the end: fewer than 4 bytes left are padding",
    context: "session",
    counter: 2,
    inner: padContents([utf8(exactly250)]),
    contents: [exactly250],
  },
  {
    name: "a content filling the inner plaintext exactly (no padding byte)",
    context: "session",
    counter: 3,
    inner: padContents([utf8(fill(252))]),
    contents: [fill(252)],
  },
  {
    name: "a key_update as the last message of its record",
    context: "session",
    counter: 4,
    inner: padContents([queued(1), '{"type":"key_update"}'].map(utf8)),
    contents: [queued(1), '{"type":"key_update"}'],
  },
  {
    name: "no content: the first length is zero",
    context: "session",
    counter: 0,
    inner: new Uint8Array(256),
    error: "PROTOCOL_ERROR",
    why: "a record holds at least one message",
  },
  {
    name: "a non-zero byte in the padding after the last content",
    context: "session",
    counter: 0,
    inner: rawInner(256, [u32be(queued(1).length), queued(1), u32be(0), "\x01"]),
    error: "PROTOCOL_ERROR",
    why: "every byte after the contents is zero",
  },
  {
    name: "a second length beyond the record",
    context: "session",
    counter: 0,
    inner: rawInner(256, [u32be(queued(1).length), queued(1), u32be(256)]),
    error: "PROTOCOL_ERROR",
    why: "a length is at most the bytes left after it",
  },
  {
    name: "an inner plaintext that is not a multiple of 256 bytes",
    context: "session",
    counter: 0,
    inner: rawInner(300, [u32be(queued(1).length), queued(1)]),
    error: "PROTOCOL_ERROR",
    why: "the inner plaintext is padded to a multiple of 256",
  },
  {
    name: "two messages in a handshake record",
    context: "handshake",
    counter: 0,
    inner: padContents(['{"type":"dh_client"}', '{"type":"finished"}'].map(utf8)),
    error: "PROTOCOL_ERROR",
    why: "handshake records hold one message each",
  },
];

const file = {
  description: "Sealed records of one and several messages (PROTOCOL §3.2), and records a " +
    "receiver refuses. Each case: the inner plaintext, the payload sealed under key and iv at " +
    "`counter` (nonce = iv XOR u64be(counter), aad = 'securechat/v2 record'), and either the " +
    "contents a receiver reads, in order, or the code it must end the session with.",
  spec: "PROTOCOL §3.2",
  generator: "tests/helpers/generate_record_vectors.ts",
  key_hex: toHex(key),
  iv_hex: toHex(iv),
  cases: cases.map((c) => ({
    name: c.name,
    context: c.context,
    counter: c.counter,
    inner_hex: toHex(c.inner),
    payload_hex: toHex(sealRecord({ key, iv }, c.counter, c.inner)),
    ...("contents" in c ? { contents: c.contents } : { error: c.error, why: c.why }),
  })),
};

const path = new URL("../vectors/protocol/records.json", import.meta.url);
await Deno.writeTextFile(path, JSON.stringify(file, null, 2) + "\n");
console.log(`wrote ${path.pathname}: ${cases.length} cases`);
