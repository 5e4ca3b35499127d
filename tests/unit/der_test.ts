/**
 * lib/der.ts directly: the tables in tests/vectors/der/ (malformed encodings each refused with
 * a DerError naming the defect; canonical ones read back), then the writer against the reader.
 */
import assert from "node:assert/strict";
import { fromHex, toHex } from "../../lib/bytes.ts";
import {
  children,
  DerError,
  encode,
  encodeOid,
  encodeSmallInt,
  encodeUnsigned,
  parseDerAs,
  parseTlv,
  readBitString,
  readBoolean,
  readIntegerBytes,
  readOid,
  readSmallInt,
  readTime,
  readUnsignedIntegerBytes,
  SeqReader,
  TAG,
} from "../../lib/der.ts";
import { SecureChatError } from "../../lib/errors.ts";

interface Row {
  name: string;
  reader: string;
  hex: string;
  fill?: { byte: string; count: number };
  reason?: string;
  expect?: unknown;
}

async function table(file: string): Promise<Row[]> {
  const url = new URL(`../vectors/der/${file}`, import.meta.url);
  return JSON.parse(await Deno.readTextFile(url)).cases;
}

function input(row: Row): Uint8Array {
  const head = fromHex(row.hex.replaceAll(" ", ""));
  if (!row.fill) return head;
  const out = new Uint8Array(head.length + row.fill.count);
  out.set(head);
  out.fill(parseInt(row.fill.byte, 16), head.length);
  return out;
}

/** Each reader of the tables, with its result made comparable to `expect`. */
const READERS: Record<string, (bytes: Uint8Array) => unknown> = {
  tlv: (b) => parseTlv(b),
  tlv_length: (b) => parseTlv(b).value.length,
  children: (b) => children(parseTlv(b)),
  children_count: (b) => children(parseTlv(b)).length,
  integer: (b) => toHex(readIntegerBytes(parseTlv(b))),
  unsigned: (b) => toHex(readUnsignedIntegerBytes(parseTlv(b))),
  small_int: (b) => readSmallInt(parseTlv(b)),
  oid: (b) => readOid(parseTlv(b)),
  boolean: (b) => readBoolean(parseTlv(b)),
  bit_string: (b) => {
    const { bytes, unused } = readBitString(parseTlv(b));
    return unused === 0 && bytes.length === 0 ? "" : toHex(bytes);
  },
  time: (b) => readTime(parseTlv(b)).toISOString(),
};

Deno.test("der: every malformed encoding in the table is a DerError naming its defect", async () => {
  const rows = await table("malformed.json");
  assert.ok(rows.length >= 40, `${rows.length} rows`);
  for (const row of rows) {
    const read = READERS[row.reader];
    assert.ok(read, `${row.name}: unknown reader ${row.reader}`);
    assert.throws(
      () => read(input(row)),
      (error: unknown) => {
        assert.ok(error instanceof DerError, `${row.name}: threw ${error}`);
        assert.ok(
          error.message.includes(row.reason!),
          `${row.name}: "${error.message}" does not say "${row.reason}"`,
        );
        return true;
      },
      row.name,
    );
  }
});

Deno.test("der: every canonical encoding in the table reads back as expected", async () => {
  const rows = await table("valid.json");
  assert.ok(rows.length >= 20, `${rows.length} rows`);
  for (const row of rows) {
    const read = READERS[row.reader];
    assert.ok(read, `${row.name}: unknown reader ${row.reader}`);
    assert.deepEqual(read(input(row)), row.expect, row.name);
  }
});

Deno.test("der: a value cut off at every length is refused, never misread", () => {
  const whole = encode(
    TAG.SEQUENCE,
    encodeSmallInt(2),
    encodeOid("1.2.840.113549.1.1.11"),
    encode(TAG.OCTET_STRING, new Uint8Array(300)),
  );
  for (let n = 0; n < whole.length; n++) {
    assert.throws(() => children(parseTlv(whole.subarray(0, n))), DerError, `first ${n} bytes`);
  }
  assert.equal(children(parseTlv(whole)).length, 3);
});

Deno.test("der: encode*() output reads back through the strict reader", () => {
  for (const n of [0, 1, 127, 128, 255, 256, 65535, 2 ** 32, 2 ** 47 - 1]) {
    assert.equal(readSmallInt(parseTlv(encodeSmallInt(n))), n, String(n));
  }
  for (const hex of ["00", "7f", "80", "0080", "ff", "000000ff", "8000000000000000"]) {
    const magnitude = readUnsignedIntegerBytes(parseTlv(encodeUnsigned(fromHex(hex))));
    assert.equal(BigInt(`0x${toHex(magnitude)}`), BigInt(`0x${hex}`), hex);
  }
  for (const oid of ["1.2.840.113549.1.1.11", "2.5.29.19", "2.999.3", "0.9", "1.3.6.1.4.1.311"]) {
    assert.equal(readOid(parseTlv(encodeOid(oid))), oid);
  }
  for (const size of [0, 127, 128, 255, 256, 65535, 65536]) {
    assert.equal(parseTlv(encode(TAG.OCTET_STRING, new Uint8Array(size))).value.length, size);
  }
});

Deno.test("SeqReader: required, optional, CHOICE and end-of-sequence checks", () => {
  const seq = parseTlv(encode(TAG.SEQUENCE, encodeSmallInt(1), encode(TAG.NULL)));
  const r = new SeqReader(seq, "test");
  assert.equal(r.optional(TAG.BOOLEAN), undefined);
  assert.equal(readSmallInt(r.next(TAG.INTEGER, "version")), 1);
  assert.throws(() => new SeqReader(seq, "test").next(TAG.NULL, "null first"), /bad or missing/);
  const unfinished = new SeqReader(seq, "test");
  unfinished.any("version");
  assert.throws(() => unfinished.end("test"), /unexpected field in test/);
  r.any("null");
  r.end("test");
  assert.throws(() => r.any("more"), /missing more/);
  assert.throws(() => new SeqReader(parseTlv(encodeSmallInt(1)), "x"), /x is not a SEQUENCE/);
});

Deno.test("parseDerAs() gives DerError the caller's code and lets other errors through", () => {
  assert.throws(
    () => parseDerAs("BAD_CERT", () => parseTlv(fromHex("0201"))),
    (e: unknown) =>
      e instanceof SecureChatError && e.code === "BAD_CERT" && e.cause instanceof DerError,
  );
  assert.throws(
    () => parseDerAs("SIG_FAIL", () => parseTlv(fromHex("02")), "bad signature"),
    (e: unknown) =>
      e instanceof SecureChatError && e.code === "SIG_FAIL" && e.message === "bad signature",
  );
  assert.throws(() =>
    parseDerAs("BAD_CERT", () => {
      throw new RangeError("other");
    }), RangeError);
  assert.equal(parseDerAs("BAD_CERT", () => 7), 7);
});
