/** lib/bytes.ts: base64 through the runtime codec behind one strict, canonical form (PROTOCOL §2), and the big-endian integers of signed input. */
import assert from "node:assert/strict";
import {
  ByteBuilder,
  concat,
  fromBase64,
  fromBase64Each,
  fromHex,
  fromUtf8,
  ScratchBytes,
  toBase64,
  toHex,
  u32be,
  u64be,
  utf8,
  Utf8Text,
} from "../../lib/bytes.ts";
import { canonicalBase64Length } from "../../lib/wire/schema.ts";

/** RFC 4648 through binary strings: the reference the codec must agree with. */
function reference(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

Deno.test("toBase64() and fromBase64() agree with RFC 4648 for every length 0..130", () => {
  for (let n = 0; n <= 130; n++) {
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    assert.equal(toBase64(bytes), reference(bytes), `${n} bytes`);
    assert.deepEqual(fromBase64(reference(bytes)), bytes, `${n} bytes`);
  }
});

Deno.test("fromBase64() refuses every non-canonical or foreign form with a TypeError", () => {
  const refused = {
    "unused bits set before ==": "QR==",
    "unused bits set before =": "QUJ=",
    "missing padding": "QUI",
    "too much padding": "Q===",
    "padding in the middle": "QQ==QUJD",
    "inner space (the codec would skip it)": "QU JD",
    "trailing newline (the codec would skip it)": "QUJD\n",
    "tab, carriage return or form feed inside (the codec would skip them)": "QU\tJ\rD\f",
    "a non-ASCII space": "QUJD\u00a0",
    "url-safe alphabet": "-_8=",
    "not base64 at all": "Q!JD",
  };
  for (const [name, text] of Object.entries(refused)) {
    assert.throws(() => fromBase64(text), TypeError, name);
    assert.throws(() => fromBase64Each(["QUJD", text, "QQ=="]), TypeError, `${name}, among others`);
  }
  assert.deepEqual(fromBase64(""), new Uint8Array(0));
});

Deno.test("fromBase64Each() decodes each text as fromBase64() does, into views of one buffer", () => {
  const parts = [0, 1, 2, 3, 32, 100, 0, 64].map((n) => crypto.getRandomValues(new Uint8Array(n)));
  const decoded = fromBase64Each(parts.map(toBase64));
  assert.deepEqual(decoded, parts);
  assert.ok(decoded.every((d) => d.buffer === decoded[0].buffer));
  assert.deepEqual(fromBase64Each([]), []);
});

Deno.test("canonicalBase64Length() accepts exactly what fromBase64() decodes, and its length", () => {
  const alphabet = "AQgw/+9=-_ \n\t\r\f!é";
  const verdict = (f: () => number) => {
    try {
      return f();
    } catch (error) {
      assert.ok(error instanceof TypeError);
      return "refused";
    }
  };
  // Every string of 0..4 characters over an alphabet holding each kind of character
  // (zero and non-zero low bits, both specials, padding, foreign ones), and longer ones.
  const texts = [""];
  for (let len = 1; len <= 4; len++) {
    for (const prefix of texts.filter((t) => t.length === len - 1)) {
      for (const c of alphabet) texts.push(prefix + c);
    }
  }
  for (let n = 0; n <= 40; n++) texts.push(toBase64(crypto.getRandomValues(new Uint8Array(n))));
  texts.push("QR==QUJD", "QUJDQR==", "QUJDQUI=", "QUJDQUJ=");
  let accepted = 0;
  for (const text of texts) {
    const want = verdict(() => fromBase64(text).length);
    assert.equal(verdict(() => canonicalBase64Length(text)), want, JSON.stringify(text));
    if (want !== "refused") accepted++;
  }
  assert.ok(accepted > 100, `${accepted} accepted`);
});

Deno.test("utf8() encodes exactly as TextEncoder, short ASCII (its own loop) and everything else", () => {
  const encoder = new TextEncoder();
  const odd = ["é", "€", "😀", "\ud800", "\udc00", "\u0080", "\u007f", "\u0000"];
  for (let n = 0; n <= 70; n++) {
    const ascii = Array.from({ length: n }, (_, i) => String.fromCharCode((i * 37) % 128)).join("");
    assert.deepEqual(utf8(ascii), encoder.encode(ascii), `ASCII of ${n}`);
    for (const c of odd) {
      for (const at of [0, n >> 1, n]) {
        const text = ascii.slice(0, at) + c + ascii.slice(at);
        assert.deepEqual(utf8(text), encoder.encode(text), `${JSON.stringify(c)} at ${at} of ${n}`);
      }
    }
  }
});

Deno.test("ByteBuilder.text() and textWithLength() write exactly what TextEncoder encodes, short (the loop) and long (the encoder)", () => {
  const pieces = ["a", "~", "é", "€", "😀", "\ud800", "\udc00", "\u0000", "\u007f", "\u0080"];
  const texts: string[] = [""];
  for (const length of [1, 2, 63, 64, 65, 66, 100, 300]) {
    for (const piece of pieces) {
      texts.push("x".repeat(length - 1) + piece, piece + "x".repeat(length - 1));
      texts.push(piece.repeat(length));
    }
  }
  for (let n = 0; n < 50; n++) {
    const codes = Array.from({ length: 1 + (n * 7) % 140 }, (_, i) => (n * 31 + i * 97) % 0xffff);
    texts.push(String.fromCharCode(...codes));
  }
  for (const text of texts) {
    const expected = new TextEncoder().encode(text);
    const out = new ByteBuilder(3).u8(9).text(text).u8(9).done();
    assert.deepEqual(out, Uint8Array.of(9, ...expected, 9), JSON.stringify(text));
    const framed = new ByteBuilder(3).textWithLength(text).done();
    assert.deepEqual(framed, concat(u32be(expected.length), expected), JSON.stringify(text));
  }
});

Deno.test("ByteBuilder.text() fills a buffer sized for its ASCII text without growing it; other text still fits", () => {
  // A record's inner plaintext and its JSON are laid out in buffers sized for them: a long text
  // asking for 3 bytes a character regrew them (a native allocation and a copy) per message.
  for (const length of [65, 200, 4000]) {
    const text = "a".repeat(length);
    const exact = new ByteBuilder(length + 2).u8(1).text(text).u8(2);
    assert.equal(exact.capacity, length + 2, `${length} ASCII characters`);
    assert.deepEqual(exact.done(), Uint8Array.of(1, ...utf8(text), 2));
    // Not ASCII past the room: the rest is encoded after the buffer grows, none of it lost.
    for (const tail of ["é", "😀", "\ud800"]) {
      const mixed = "b".repeat(length) + tail + "c";
      const out = new ByteBuilder(length + 1).text(mixed).done();
      assert.deepEqual(out, new TextEncoder().encode(mixed), `${length} + ${JSON.stringify(tail)}`);
    }
  }
});

Deno.test("u64be() writes numbers and bigints alike, refusing what does not fit", () => {
  const cases: [number | bigint, string][] = [
    [0, "0000000000000000"],
    [1, "0000000000000001"],
    [0xffff_ffff, "00000000ffffffff"],
    [0x1_0000_0000, "0000000100000000"],
    [1_700_000_000_000, "0000018bcfe56800"],
    [Number.MAX_SAFE_INTEGER, "001fffffffffffff"],
    [2n ** 64n - 1n, "ffffffffffffffff"],
  ];
  for (const [value, hex] of cases) {
    assert.equal(toHex(u64be(value)), hex, String(value));
    assert.equal(toHex(u64be(BigInt(value))), hex, `${value}n`);
  }
  for (const bad of [-1, 1.5, Number.NaN, 2n ** 64n, -1n]) {
    assert.throws(() => u64be(bad), RangeError, String(bad));
  }
});

Deno.test("ByteBuilder writes fields in order and refuses a wrong size, bad hex or range", () => {
  const length = 1 + 4 + 8 + 2 + 2;
  const out = new ByteBuilder(length).u8(7).u32(0x01020304).u64(2 ** 40 + 5)
    .hex("aB0f").bytes(Uint8Array.of(9, 8)).exactly(length);
  assert.equal(toHex(out), "07" + "01020304" + "0000010000000005" + "ab0f" + "0908");
  assert.throws(() => new ByteBuilder(2).u8(1).exactly(2), RangeError);
  assert.throws(() => new ByteBuilder(1).hex("zz"), TypeError);
  assert.throws(() => new ByteBuilder(1).hex("abc"), TypeError);
  assert.throws(() => new ByteBuilder(8).u64(-1), RangeError);
  assert.throws(() => new ByteBuilder(8).u64(2 ** 53), RangeError);
  assert.throws(() => new ByteBuilder(4).u32(2 ** 32), RangeError);
});

Deno.test("ByteBuilder writes parts in order across growth, and pads with zeros", () => {
  const out = new ByteBuilder(1).u8(7).u32(0x01020304).u64(2 ** 40 + 5).text("a é 😀")
    .bytes(new Uint8Array(3000).fill(9));
  assert.equal(out.length, 1 + 4 + 8 + 9 + 3000);
  const bytes = out.done(256);
  assert.equal(bytes.length, 3072);
  assert.equal(toHex(bytes.subarray(0, 13)), "07" + "01020304" + "0000010000000005");
  assert.equal(new TextDecoder().decode(bytes.subarray(13, 22)), "a é 😀");
  assert.ok(bytes.subarray(22, 3022).every((b) => b === 9));
  assert.ok(bytes.subarray(3022).every((b) => b === 0));
  assert.throws(() => out.u8(1), RangeError);
  out.reset();
  assert.equal(out.u8(3).length, 1);
  assert.throws(() => new ByteBuilder().u64(-1), RangeError);
  assert.throws(() => new ByteBuilder().u32(2 ** 32), RangeError);
});

Deno.test("ScratchBytes: the reused buffer is zeroed between uses, nothing left of the last one", () => {
  // A record is laid out in it and sealed, then the next one: padding must never show what an
  // earlier record held (PROTOCOL §3.2).
  const scratch = new ScratchBytes(64 * 1024);
  const first = scratch.use((out) => out.bytes(new Uint8Array(4000).fill(0xaa)).done(256));
  assert.ok(first.every((b) => b === 0), "zeroed once the use is over");
  const second = scratch.use((out) => {
    const bytes = out.u8(1).done(4096);
    assert.equal(bytes.buffer, first.buffer, "the buffer is reused");
    return bytes.slice();
  });
  assert.equal(second[0], 1);
  assert.ok(second.subarray(1).every((b) => b === 0));
  // Lent twice at once (a use inside a use): the inner one gets a buffer of its own.
  scratch.use((outer) => {
    outer.u8(5);
    scratch.use((inner) => assert.equal(inner.length, 0));
    assert.equal(outer.length, 1);
  });
  // A buffer grown past keepBytes is not kept.
  const big = scratch.use((out) => out.bytes(new Uint8Array(100_000)).done());
  const after = scratch.use((out) => out.u8(1).done());
  assert.notEqual(after.buffer, big.buffer);
});

Deno.test("ScratchBytes keeps its buffer for records up to keepBytes made of large parts", () => {
  // A record of four 15 KiB contents, padded (PROTOCOL §3.2): a part larger than the buffer's
  // double used to grow it to an odd size whose next doubling passed keepBytes (122 KiB), so
  // the buffer was dropped and every such record allocated and zeroed ~200 KiB afresh.
  const scratch = new ScratchBytes(64 * 1024);
  const layOut = () =>
    scratch.use((out) => {
      for (let i = 0; i < 4; i++) out.u32(15_000).bytes(new Uint8Array(15_000).fill(i + 1));
      return out.done(256);
    });
  const first = layOut();
  assert.equal(first.length, 60_160);
  const second = layOut();
  assert.equal(second.buffer, first.buffer, "the buffer is reused");
  assert.equal(second.buffer.byteLength, 64 * 1024);
});

Deno.test("ByteBuilder grows by doubling, to the first double that holds what is asked", () => {
  const out = new ByteBuilder(1024).bytes(new Uint8Array(5000));
  assert.equal(out.capacity, 8192);
  assert.equal(out.bytes(new Uint8Array(4000)).capacity, 16_384);
  assert.equal(new ByteBuilder(0).u8(1).capacity, 1);
  assert.equal(new ByteBuilder(0).bytes(new Uint8Array(3)).capacity, 4);
});

Deno.test("fromUtf8() throws on malformed UTF-8 and keeps a real U+FFFD, as a fatal TextDecoder", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  const malformed = [
    [0xff],
    [0xc0, 0xaf], // overlong '/'
    [0xed, 0xa0, 0x80], // a lone surrogate
    [0xe2, 0x82], // truncated
    [0x61, 0xef, 0xbf, 0xbd, 0x80], // a real U+FFFD, then a stray continuation byte
  ];
  for (const bytes of malformed) {
    assert.throws(() => fromUtf8(Uint8Array.from(bytes)), TypeError, `${bytes}`);
  }
  for (const text of ["", "plain ascii", "a \uFFFD b", "\uFFFD", "h\u00e9llo \u{1F600}"]) {
    const bytes = new TextEncoder().encode(text);
    assert.equal(fromUtf8(bytes), fatal.decode(bytes));
  }
  // Random bytes, mostly malformed: the same verdict and text as the fatal decoder.
  for (let i = 0; i < 2000; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(i % 12));
    let expected: string | TypeError;
    try {
      expected = fatal.decode(bytes);
    } catch (error) {
      expected = error as TypeError;
    }
    if (expected instanceof TypeError) assert.throws(() => fromUtf8(bytes), TypeError);
    else assert.equal(fromUtf8(bytes), expected);
  }
});

Deno.test("toHex() and fromHex() round-trip every byte; fromHex() takes even-length hex digits of either case only", () => {
  const every = Uint8Array.from({ length: 256 }, (_, i) => i);
  const hex = toHex(every);
  assert.equal(hex, Array.from(every, (b) => b.toString(16).padStart(2, "0")).join(""));
  assert.deepEqual(fromHex(hex), every);
  assert.deepEqual(fromHex(hex.toUpperCase()), every);
  assert.deepEqual(fromHex(""), new Uint8Array(0));
  for (
    const bad of ["0", "abc", "0g", "g0", " 00", "00 ", "0\n", "+0", "0x00", "\u0660\u0660", "ａａ"]
  ) {
    assert.throws(() => fromHex(bad), TypeError, JSON.stringify(bad));
  }
});

Deno.test("Utf8Text is as long as its UTF-8 and writes exactly it", () => {
  const samples = [
    "",
    "plain",
    "é",
    "€",
    "😀",
    "a\uD800b",
    "\uDC00",
    "\uD83D",
    "x\uD83D\uDE00\uDE00",
    "ü".repeat(70),
  ];
  for (const text of samples) {
    const encoded = new TextEncoder().encode(text);
    const piece = new Utf8Text(text);
    assert.equal(piece.length, encoded.length, JSON.stringify(text));
    const out = new ByteBuilder(1);
    piece.writeTo(out);
    assert.deepEqual(out.done(), encoded, JSON.stringify(text));
  }
});
