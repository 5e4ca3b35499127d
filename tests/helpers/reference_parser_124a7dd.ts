/**
 * REFERENCE, NOT LIB: the strict JSON parser and the hand-written shape helpers exactly as they
 * were on main at 124a7dd (lib/wire/strict_json.ts, lib/wire/shape.ts, canonicalBase64Length
 * from lib/wire/schema.ts and fromBase64 from lib/bytes.ts), before session 9 made the parse
 * path faster.
 * tests/unit/parser_differential_test.ts feeds this copy and lib's current code the same
 * hostile inputs and requires the same verdicts: a twin kept on purpose, as an oracle (a shared
 * copy would test lib against itself). Do not edit it to follow lib; it is what lib must equal.
 */
import { z } from "zod";

// ---- lib/wire/strict_json.ts at 124a7dd ----

export class ReferenceStrictJsonError extends Error {}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Characters a string holds as they are: not a quote, a backslash or a control character. */
// deno-lint-ignore no-control-regex -- matching control characters is the point: JSON refuses them raw
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;

/** @throws ReferenceStrictJsonError for invalid JSON or a repeated member name */
export function referenceParseStrictJson(text: string): unknown {
  const p = new Parser(text);
  p.ws();
  const value = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail("trailing characters");
  return value;
}

const MAX_DEPTH = 64;

class Parser {
  i = 0;
  constructor(readonly s: string) {}

  fail(what: string): never {
    throw new ReferenceStrictJsonError(`${what} at offset ${this.i}`);
  }

  ws(): void {
    while (this.i < this.s.length && WS.has(this.s.charCodeAt(this.i))) this.i++;
  }

  value(depth: number): unknown {
    if (depth > MAX_DEPTH) this.fail("nesting too deep");
    const c = this.s[this.i];
    if (c === "{") return this.object(depth);
    if (c === "[") return this.array(depth);
    if (c === '"') return this.string();
    if (c === "t") return this.literal("true", true);
    if (c === "f") return this.literal("false", false);
    if (c === "n") return this.literal("null", null);
    return this.number();
  }

  literal<T>(word: string, value: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail("unexpected token");
    this.i += word.length;
    return value;
  }

  number(): number {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.s);
    if (!m || m[0].length === 0) this.fail("unexpected token");
    this.i += m[0].length;
    return Number(m[0]);
  }

  string(): string {
    this.i++; // opening quote
    let out = "";
    while (true) {
      // The run up to the next quote, backslash or control character, at the regex
      // engine's speed: most strings (names, base64) are one such run.
      PLAIN_RUN.lastIndex = this.i;
      PLAIN_RUN.test(this.s);
      out += this.s.slice(this.i, PLAIN_RUN.lastIndex);
      this.i = PLAIN_RUN.lastIndex;
      if (this.i >= this.s.length) this.fail("unterminated string");
      const code = this.s.charCodeAt(this.i);
      if (code === 0x22) {
        this.i++;
        return out;
      }
      if (code < 0x20) this.fail("control character in string");
      const e = this.s[this.i + 1];
      this.i += 2;
      switch (e) {
        case '"':
          out += '"';
          break;
        case "\\":
          out += "\\";
          break;
        case "/":
          out += "/";
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "n":
          out += "\n";
          break;
        case "r":
          out += "\r";
          break;
        case "t":
          out += "\t";
          break;
        case "u": {
          const hex = this.s.slice(this.i, this.i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("bad \\u escape");
          out += String.fromCharCode(parseInt(hex, 16));
          this.i += 4;
          break;
        }
        default:
          this.fail("bad escape");
      }
    }
  }

  array(depth: number): unknown[] {
    this.i++;
    const out: unknown[] = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return out;
    }
    while (true) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === "]") return out;
      if (c !== ",") this.fail("expected , or ]");
    }
  }

  object(depth: number): Record<string, unknown> {
    this.i++;
    const out: Record<string, unknown> = {};
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return out;
    }
    while (true) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("expected a member name");
      const key = this.string();
      if (Object.hasOwn(out, key)) this.fail(`member "${key.slice(0, 32)}" appears twice`);
      this.ws();
      if (this.s[this.i++] !== ":") this.fail("expected :");
      this.ws();
      const value = this.value(depth + 1);
      if (key === "__proto__") {
        // defineProperty, not assignment: "__proto__" must stay an ordinary own member.
        Object.defineProperty(out, key, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else {
        out[key] = value;
      }
      this.ws();
      const c = this.s[this.i++];
      if (c === "}") return out;
      if (c !== ",") this.fail("expected , or }");
    }
  }
}

// ---- canonicalBase64Length, lib/wire/schema.ts at 124a7dd ----

const B64_ALPHABET_RE = /^[A-Za-z0-9+/]*={0,2}$/;
/** The 6-bit value of a base64 character (A-Z, a-z, 0-9, +, /). */
function sextet(code: number): number {
  if (code >= 0x61) return code - 0x61 + 26; // a-z
  if (code >= 0x41) return code - 0x41; // A-Z
  if (code >= 0x30) return code - 0x30 + 52; // 0-9
  return code === 0x2b ? 62 : 63; // + /
}

/**
 * How many bytes canonical standard base64 decodes to, without decoding it: the same
 * acceptance as {@link decodeBase64Strict} (padding required, unused bits zero), for
 * members that are checked here and decoded later (or never).
 * @throws {TypeError} for anything else
 */
export function canonicalBase64Length(text: string): number {
  // 4k characters of the alphabet with at most two trailing "=" is exactly the
  // quads-then-padding grammar; a flat character class costs half of that grammar's regex.
  const n = text.length;
  if (n % 4 !== 0 || !B64_ALPHABET_RE.test(text)) throw new TypeError("invalid base64");
  if (n > 0 && text.charCodeAt(n - 1) === 0x3d) {
    const doubled = text.charCodeAt(n - 2) === 0x3d;
    // The last data character carries 4 (==) or 2 (=) unused bits, which must be zero.
    const last = sextet(text.charCodeAt(n - (doubled ? 3 : 2)));
    if ((last & (doubled ? 0x0f : 0x03)) !== 0) throw new TypeError("non-canonical base64");
    return (n / 4) * 3 - (doubled ? 2 : 1);
  }
  return (n / 4) * 3;
}

// ---- lib/wire/shape.ts at 124a7dd (the helpers a hot shape is built of) ----

export type Path = readonly (string | number)[];

export interface Issue {
  path: (string | number)[];
  message: string;
}

export type ShapeResult<T> =
  | { success: true; data: T }
  | { success: false; error: { issues: Issue[] } };

/** What parseMessage takes: a zod schema or a hand-written shape. */
export interface Shape<T> {
  safeParse(value: unknown): ShapeResult<T>;
}

/** Thrown by the checks below, caught by {@link shape}: never escapes a shape. */
class ShapeFailure {
  constructor(readonly path: (string | number)[], readonly message: string) {}
}

/** Fails the shape being checked at `path` + `key`: for a rule the helpers here do not cover. */
export function fail(path: Path, key: string | number | undefined, message: string): never {
  throw new ShapeFailure(key === undefined ? [...path] : [...path, key], message);
}

/** A shape from a check that returns the typed value or fails through the helpers here. */
export function shape<T>(check: (value: unknown, path: Path) => T): Shape<T> {
  return {
    safeParse(value: unknown): ShapeResult<T> {
      try {
        return { success: true, data: check(value, []) };
      } catch (error) {
        if (!(error instanceof ShapeFailure)) throw error;
        return {
          success: false,
          error: { issues: [{ path: error.path, message: error.message }] },
        };
      }
    },
  };
}

/** One of several shapes, chosen by the member `type` (or another discriminator). */
export function byType<T>(
  shapes: Readonly<Record<string, Shape<T>>>,
  discriminator = "type",
): Shape<T> {
  return shape((value, path) => {
    const type = isObject(value) ? value[discriminator] : undefined;
    if (typeof type !== "string" || !Object.hasOwn(shapes, type)) {
      fail(path, discriminator, `not one of ${Object.keys(shapes).join(", ")}`);
    }
    return unwrap(shapes[type].safeParse(value));
  });
}

/** The data of a result, or its issue thrown on. */
function unwrap<T>(result: ShapeResult<T>): T {
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new ShapeFailure(issue.path, issue.message);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * `value` as an object whose own members are all of `required` and some of `optional`,
 * nothing else.
 */
export function members(
  value: unknown,
  path: Path,
  required: readonly string[],
  optional: readonly string[] = [],
): Record<string, unknown> {
  if (!isObject(value)) fail(path, undefined, "expected an object");
  let found = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (required.includes(key)) found++;
    else if (!optional.includes(key)) fail(path, key, "unrecognized member");
  }
  if (found !== required.length) {
    fail(path, required.find((key) => !Object.hasOwn(value, key)), "required");
  }
  return value;
}

/** A string of `min..max` UTF-16 code units (zod's string length). */
export function text(
  value: unknown,
  path: Path,
  key: string | number,
  min: number,
  max: number,
): string {
  if (typeof value !== "string") fail(path, key, "expected a string");
  if (value.length < min || value.length > max) fail(path, key, `expected ${min}..${max} chars`);
  return value;
}

/** One of the given strings. */
export function literal<T extends string>(
  value: unknown,
  path: Path,
  key: string | number,
  options: readonly T[],
): T {
  if (typeof value !== "string" || !options.includes(value as T)) {
    fail(path, key, `expected ${options.join(" or ")}`);
  }
  return value as T;
}

/** A string matching `re`. */
export function matching(
  value: unknown,
  path: Path,
  key: string | number,
  re: RegExp,
  what: string,
): string {
  if (typeof value !== "string" || !re.test(value)) fail(path, key, `expected ${what}`);
  return value;
}

/** An integer `min..2^53-1`. */
export function uint(value: unknown, path: Path, key: string | number, min = 0): number {
  if (typeof value !== "number" || !Number.isInteger(value)) fail(path, key, "expected an integer");
  if (value < min || value > Number.MAX_SAFE_INTEGER) {
    fail(path, key, `expected ${min}..${Number.MAX_SAFE_INTEGER}`);
  }
  return value;
}

/** An array of at most `max` items (each checked by the caller). */
export function list(value: unknown, path: Path, key: string, max: number): unknown[] {
  if (!Array.isArray(value)) fail(path, key, "expected an array");
  if (value.length > max) fail(path, key, `expected at most ${max} items`);
  return value;
}

/** `true`, the only value of an optional flag. */
export function isTrue(value: unknown, path: Path, key: string | number): true {
  if (value !== true) fail(path, key, "expected true");
  return true;
}

/**
 * Canonical standard base64 of `minBytes..maxBytes` bytes, kept as text; the length cap
 * is checked before anything is decoded.
 */
export function base64Text(
  value: unknown,
  path: Path,
  key: string | number,
  minBytes: number,
  maxBytes: number,
): string {
  if (typeof value !== "string") fail(path, key, "expected a string");
  if (value.length > Math.ceil(maxBytes / 3) * 4) fail(path, key, `expected ..${maxBytes} bytes`);
  let length: number;
  try {
    length = canonicalBase64Length(value);
  } catch {
    fail(path, key, "not canonical standard base64");
  }
  if (length < minBytes || length > maxBytes) {
    fail(path, key, `expected ${minBytes}..${maxBytes} bytes`);
  }
  return value;
}

/** A hand-written shape inside a zod schema (cold paths: cluster records, openings). */
export function zodOf<T>(inner: Shape<T>): z.ZodType<T, z.ZodTypeDef, unknown> {
  return z.unknown().transform((value, ctx) => {
    const result = inner.safeParse(value);
    if (result.success) return result.data;
    const issue = result.error.issues[0];
    ctx.addIssue({ code: "custom", path: issue.path, message: issue.message });
    return z.NEVER;
  });
}

/** `value` (the member `key` of `path`) checked by another shape or a zod schema (cold parts). */
export function nested<T>(inner: Shape<T>, value: unknown, path: Path, key: string): T {
  const result = inner.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new ShapeFailure([...path, key, ...issue.path], issue.message);
}

// ---- fromBase64, lib/bytes.ts at 124a7dd ----

const codec = Uint8Array as unknown as {
  fromBase64(text: string, options: { lastChunkHandling: "strict" }): Uint8Array;
};

/** ASCII whitespace (the codec's one leniency: it skips it anywhere, even in strict mode). */
const ASCII_WHITESPACE_RE = /[\t\n\f\r ]/;

/** Strict, canonical standard base64 (with padding); anything else is a TypeError. */
export function fromBase64(text: string): Uint8Array {
  if (ASCII_WHITESPACE_RE.test(text)) throw new TypeError("invalid base64");
  try {
    return codec.fromBase64(text, { lastChunkHandling: "strict" });
  } catch {
    throw new TypeError("invalid base64");
  }
}
