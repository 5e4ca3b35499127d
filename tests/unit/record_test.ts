/**
 * The record layer's inner plaintext (PROTOCOL §3.2): several messages per record, padded once,
 * against tests/vectors/protocol/records.json (tests/helpers/generate_record_vectors.ts).
 */
import assert from "node:assert/strict";
import { ByteBuilder, fromHex, toHex, utf8 } from "../../lib/bytes.ts";
import { counterNonce, openChaCha20Poly1305, sealChaCha20Poly1305 } from "../../lib/crypto/aead.ts";
import { codeOf } from "../../lib/errors.ts";
import {
  MAX_INNER_BYTES,
  padContents,
  RECORD_AAD,
  RecordLayer,
  RecordOutbox,
  recordRuns,
  sealedLength,
  unpadContent,
  unpadContents,
} from "../../lib/handshake/record.ts";

interface RecordCase {
  name: string;
  context: "session" | "handshake";
  counter: number;
  inner_hex: string;
  payload_hex: string;
  contents?: string[];
  error?: string;
}

const vectors: { key_hex: string; iv_hex: string; cases: RecordCase[] } = JSON.parse(
  await Deno.readTextFile(new URL("../vectors/protocol/records.json", import.meta.url)),
);
const key = fromHex(vectors.key_hex);
const iv = fromHex(vectors.iv_hex);
const decoder = new TextDecoder();

/** What a receiver reads from the case's payload: its contents, or the code it refuses with. */
function receive(c: RecordCase): string[] | string {
  const inner = openChaCha20Poly1305(
    key,
    counterNonce(iv, c.counter),
    fromHex(c.payload_hex),
    RECORD_AAD,
  );
  try {
    const contents = c.context === "handshake" ? [unpadContent(inner)] : unpadContents(inner);
    return contents.map((b) => decoder.decode(b));
  } catch (error) {
    return codeOf(error);
  }
}

for (const c of vectors.cases) {
  Deno.test(`record vector: ${c.name} → ${c.error ?? `${c.contents!.length} content(s)`}`, () => {
    // The payload is the inner plaintext sealed at its counter, byte for byte.
    const sealed = sealChaCha20Poly1305(
      key,
      counterNonce(iv, c.counter),
      fromHex(c.inner_hex),
      RECORD_AAD,
    );
    assert.equal(toHex(sealed), c.payload_hex);
    assert.deepEqual(receive(c), c.error ?? c.contents);
    if (c.contents && c.context === "session") {
      // A sender of the same messages makes the same inner plaintext.
      assert.equal(toHex(padContents(c.contents.map(utf8))), c.inner_hex);
    }
  });
}

Deno.test("RecordLayer.sealInner(): sealed into a caller's place, the bytes a new buffer gets; a place of another length spends no counter", () => {
  const keys = { key, iv };
  const [fresh, inPlace] = [new RecordLayer(keys, keys), new RecordLayer(keys, keys)];
  for (const text of ["a", "x".repeat(300), "y".repeat(5000)]) {
    const inner = padContents([utf8(text)]);
    const batch = new Uint8Array(4 + sealedLength(inner.length) + 4).fill(0xee);
    const into = batch.subarray(4, -4);
    assert.throws(
      () => inPlace.sealInner(inner, batch.subarray(4, -3)),
      (e) => codeOf(e) === "INVALID_INPUT",
    );
    assert.equal(inPlace.sealInner(inner, into), into);
    assert.equal(toHex(batch), "eeeeeeee" + toHex(fresh.sealInner(inner)) + "eeeeeeee", text);
  }
  assert.equal(inPlace.sentUnderKey, 3);
});

Deno.test("RecordLayer.openContentsInPlace: the contents openContents gives, as views of the frame; a refused frame zeroed", () => {
  const keys = { key, iv };
  const sender = new RecordLayer(keys, keys);
  const copying = new RecordLayer(keys, keys);
  const inPlace = new RecordLayer(keys, keys);
  for (const texts of [["a", "bb", "ccc"], ["x".repeat(300), "y".repeat(5000)]]) {
    const payload = sender.sealContents(texts.map(utf8));
    const frame = payload.slice();
    const contents = inPlace.openContentsInPlace(frame);
    assert.deepEqual(copying.openContents(payload).map((b) => decoder.decode(b)), texts);
    assert.deepEqual(contents.map((b) => decoder.decode(b)), texts);
    for (const content of contents) assert.equal(content.buffer, frame.buffer);
  }
  const bad = sender.seal(utf8("z".repeat(700)));
  bad[3] ^= 1;
  assert.throws(() => inPlace.openContentsInPlace(bad), (e) => codeOf(e) === "DECRYPT_FAIL");
  assert.ok(bad.subarray(0, bad.length - 16).every((b) => b === 0));
});

Deno.test("RecordLayer: contents sealed together open together, in order, one counter each record", () => {
  const keys = { key, iv };
  const sender = new RecordLayer(keys, keys);
  const receiver = new RecordLayer(keys, keys);
  const first = sender.sealContents(["a", "bb", "ccc"].map(utf8));
  const second = sender.seal(utf8("d"));
  assert.deepEqual(receiver.openContents(first).map((b) => decoder.decode(b)), ["a", "bb", "ccc"]);
  assert.deepEqual(receiver.openContents(second).map((b) => decoder.decode(b)), ["d"]);
  // Handshake reads take one content only.
  const third = sender.sealContents(["e", "f"].map(utf8));
  assert.throws(() => receiver.open(third), (e) => codeOf(e) === "PROTOCOL_ERROR");
});

Deno.test("padContents() refuses no content, an empty one, or more than one record holds", () => {
  for (
    const contents of [[], [new Uint8Array(0)], [new Uint8Array(MAX_INNER_BYTES - 3)]]
  ) {
    assert.throws(() => padContents(contents), (e) => codeOf(e) === "INVALID_INPUT");
  }
  assert.equal(padContents([new Uint8Array(MAX_INNER_BYTES - 4)]).length, MAX_INNER_BYTES);
});

Deno.test("RecordOutbox: contents in order, each record as padContents lays it out, split as recordRuns splits", () => {
  const big = new Uint8Array(MAX_INNER_BYTES / 2).fill(7);
  const small = utf8('{"type":"queued"}');
  const contents = [small, big, small, big, big, small];
  const outbox = new RecordOutbox();
  for (const content of contents) outbox.add(content);
  assert.equal(outbox.bytes, contents.reduce((n, c) => n + 4 + c.length, 0));
  const inners: string[] = [];
  outbox.seal((inner) => void inners.push(toHex(inner)));
  assert.deepEqual(inners, recordRuns(contents).map((run) => toHex(padContents(run))));
  assert.throws(
    () => new RecordOutbox().add(new Uint8Array(MAX_INNER_BYTES)),
    (e) => codeOf(e) === "INVALID_INPUT",
  );
  assert.throws(
    () => new RecordOutbox().add(new Uint8Array(0)),
    (e) => codeOf(e) === "INVALID_INPUT",
  );
});

Deno.test("recordRuns() keeps order and fills each record up to the largest inner plaintext", () => {
  const big = new Uint8Array(40_000);
  const small = new Uint8Array(100);
  const runs = recordRuns([big, small, big, big, small]);
  assert.deepEqual(runs.map((r) => r.length), [2, 1, 2]);
  assert.deepEqual(runs.flat(), [big, small, big, big, small]);
  for (const run of runs) assert.ok(padContents(run).length <= MAX_INNER_BYTES);
  assert.throws(
    () => recordRuns([new Uint8Array(MAX_INNER_BYTES)]),
    (e) => codeOf(e) === "INVALID_INPUT",
  );
});

Deno.test("RecordOutbox.seal(): a content that throws mid-layout, or a larger record before, leaves none of its bytes in the next session's record (review9 R9-1)", () => {
  // One scratch buffer lays out every record of every session: what one session's record held
  // must never show in another's padding, even when its layout stopped half-way.
  const secret = new Uint8Array(3000).fill(0xa5);
  const throwing = {
    length: secret.length + 10,
    writeTo(out: ByteBuilder) {
      out.bytes(secret).text("é non-ASCII too");
      throw new Error("a relay that fails half-way through its layout");
    },
  };
  const failed = new RecordOutbox();
  failed.add(utf8('{"type":"queued"}'));
  failed.add(throwing);
  assert.throws(() => failed.seal(() => {}), /half-way/);

  const large = new RecordOutbox();
  large.add(new Uint8Array(MAX_INNER_BYTES - 4).fill(0x5a));
  large.seal(() => {});

  const small = utf8('{"type":"refused"}');
  const next = new RecordOutbox();
  next.add(small);
  const inners: Uint8Array[] = [];
  next.seal((inner) => void inners.push(inner.slice()));
  assert.equal(inners.length, 1);
  assert.deepEqual(inners[0], padContents([small]), "only its own content, then zeros");
});
