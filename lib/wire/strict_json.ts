/**
 * JSON (RFC 8259) that refuses a repeated member name (PROTOCOL §2, TRANSCRIPT §2).
 * `JSON.parse` keeps the last of two equal names, so two tools could read different
 * values from one file; this parser is the one chokepoint for every JSON input the
 * protocol and the verifier take. It returns what `JSON.parse` would for any input
 * without duplicates (member `__proto__` included, as an own property) and not nested
 * deeper than {@link MAX_DEPTH}.
 *
 * Every relayed line is parsed by the server and by each recipient, so the common case
 * runs at the engine's speed: `JSON.parse` itself decides the grammar, and the members of the
 * value it returns are counted against the member names of the text. A value whose objects
 * hold fewer members than the text names had a name twice. The names are counted by the
 * text's colons when it has no backslash and no colon inside a string (every protocol
 * message an honest peer sends: base64, hex, numbers), else by one scan of the text outside
 * its strings. Anything that is not plainly fine — JSON.parse refuses, the counts differ, or
 * the value nests near the limit — goes to the careful parser below, which decides and says
 * exactly what is wrong and where.
 */

export class StrictJsonError extends Error {}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Characters a string holds as they are: not a quote, a backslash or a control character. */
// deno-lint-ignore no-control-regex -- matching control characters is the point: JSON refuses them raw
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;

/** @throws StrictJsonError for invalid JSON, a repeated member name or nesting too deep */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    parseCarefully(text); // throws, saying why and where
    throw new StrictJsonError("not JSON"); // a grammar the two parsers read alike never gets here
  }
  const members = typeof value === "object" && value !== null ? membersOf(value, 0) : 0;
  if (members === UNSURE) return parseCarefully(text);
  // Without a backslash every name reads as written (review9 R9-4), and each has one colon
  // after it: colons anywhere no more than the members parsed means no name came twice. The
  // scan below finds the names themselves, for text whose strings hold colons or escapes.
  const plain = text.indexOf("\\") === -1;
  if (plain && colonsIn(text) === members) return value;
  const named = plain ? plainMemberNamesOf(text) : memberNamesOf(text);
  return named === members ? value : parseCarefully(text);
}

/** How many colons the text has, strings included: at least as many as it names members. */
function colonsIn(text: string): number {
  let colons = 0;
  for (let at = text.indexOf(":"); at !== -1; at = text.indexOf(":", at + 1)) colons++;
  return colons;
}

/** The careful parser: the reference for what is accepted, and the wording of every refusal. */
function parseCarefully(text: string): unknown {
  const p = new Parser(text);
  p.ws();
  const value = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail("trailing characters");
  return value;
}

/** What {@link memberNamesOf} answers when the careful parser must judge. */
const UNSURE = -1;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

/**
 * How many member names the text of a value JSON.parse accepted has: the colons outside its
 * strings. {@link UNSURE} when containers nest more than MAX_DEPTH deep (the limit's exact
 * edge is the careful parser's to judge, and {@link membersOf} must not recurse into a hostile
 * depth), or a string does not end (never, after JSON.parse).
 */
function memberNamesOf(text: string): number {
  let names = 0;
  let open = 0;
  let i = 0;
  const n = text.length;
  let backslash = text.indexOf("\\");
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // A string: its end is the next quote not escaped, i.e. after an even run of backslashes.
      let end = text.indexOf('"', i + 1);
      while (end > 0 && escaped(text, end)) end = text.indexOf('"', end + 1);
      if (end < 0) return UNSURE;
      if (backslash !== -1 && backslash < i) backslash = text.indexOf("\\", i);
      // A member name with an escape is not taken from JSON.parse: V8 (Deno 2.9) reads such a
      // name by the object shapes earlier parses left, so `a\"` can come back as `a\\` and a
      // repeated name go uncounted (review9 R9-4). Honest peers never escape a name.
      if (backslash !== -1 && backslash < end && isName(text, end + 1)) return UNSURE;
      i = end + 1;
      continue;
    }
    if (c === COLON) names++;
    else if (c === 0x7b || c === 0x5b) {
      if (++open > MAX_DEPTH) return UNSURE;
    } else if (c === 0x7d || c === 0x5d) open--;
    i++;
  }
  return names;
}

/**
 * {@link memberNamesOf} for a text without a backslash, where no quote is escaped: every
 * string ends at the next quote. A user msg's text (`"to":"user:…"`, a colon in a string) comes
 * here. Kept apart because V8 (Deno 2.9) compiles memberNamesOf's escape handling into a loop
 * some 50 times slower on such text (dm18: ~1.7 ms for a 63 KB msg of 25 records, 30 µs here),
 * which was about half of the server's CPU per direct message.
 */
function plainMemberNamesOf(text: string): number {
  let names = 0;
  let open = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i = text.indexOf('"', i + 1);
      if (i < 0) return UNSURE;
    } else if (c === COLON) names++;
    else if (c === 0x7b || c === 0x5b) {
      if (++open > MAX_DEPTH) return UNSURE;
    } else if (c === 0x7d || c === 0x5d) open--;
  }
  return names;
}

/** Whether the string that ended before `at` is a member name: a colon follows it. */
function isName(text: string, at: number): boolean {
  while (WS.has(text.charCodeAt(at))) at++;
  return text.charCodeAt(at) === COLON;
}

/** Whether the quote at `at` is escaped: an odd run of backslashes before it. */
function escaped(text: string, at: number): boolean {
  let j = at - 1;
  while (text.charCodeAt(j) === BACKSLASH) j--;
  return (at - 1 - j) % 2 === 1;
}

/**
 * The members of every object in a parsed value: `for…in` and no key array, as JSON.parse's
 * objects have nothing enumerable but their own members. {@link UNSURE} when containers nest
 * more than MAX_DEPTH deep (the careful parser judges that edge; this must not recurse into a
 * hostile depth).
 */
function membersOf(value: object, depth: number): number {
  if (depth >= MAX_DEPTH) return UNSURE;
  let count = 0;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (typeof item !== "object" || item === null) continue;
      const inner = membersOf(item, depth + 1);
      if (inner === UNSURE) return UNSURE;
      count += inner;
    }
    return count;
  }
  for (const key in value) {
    count++;
    const item = (value as Record<string, unknown>)[key];
    if (typeof item !== "object" || item === null) continue;
    const inner = membersOf(item, depth + 1);
    if (inner === UNSURE) return UNSURE;
    count += inner;
  }
  return count;
}

/** The deepest a value may nest: the careful parser refuses one inside more containers. */
const MAX_DEPTH = 64;

class Parser {
  i = 0;
  constructor(readonly s: string) {}

  fail(what: string): never {
    throw new StrictJsonError(`${what} at offset ${this.i}`);
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
