// deno-lint-ignore-file no-control-regex -- these tests are about control characters
/**
 * safeText(), safeJson(), layoutLine() and the log's quoting: the one place where
 * other people's text meets a terminal (issue 11 item 1).
 */
import assert from "node:assert/strict";
import { safeJson, safeText } from "../lib/safe_text.ts";
import { createLogger } from "../lib/log.ts";
import { layoutLine } from "../commands/_screen.ts";
import { formatReport } from "../commands/verify.ts";
import type { VerifyReport } from "../lib/transcript/verify.ts";
import { runCli } from "../testkit/cli.ts";
import { openssl } from "./helpers/openssl.ts";

/** [input, shown]: what each kind of hostile character becomes. */
const VECTORS: [string, string][] = [
  ["plain text, é, 日本語, ✓", "plain text, é, 日本語, ✓"],
  ["hi\r\x1b[1A\x1b[2K[12:00:00] alice", "hi^M^[[1A^[[2K[12:00:00] alice"],
  ["tab\tline\nnul\x00del\x7f", "tab^Iline^Jnul^@del^?"],
  ["c1 \u0085\u009b2K", "c1 <U+0085><U+009B>2K"],
  [
    "bidi \u202ab\u202e\u2066\u2069\u200e\u200f\u061c",
    "bidi <U+202A>b<U+202E><U+2066><U+2069><U+200E><U+200F><U+061C>",
  ],
  ["zero\u200bwidth\ufeff\u2060\u00ad", "zero<U+200B>width<U+FEFF><U+2060><U+00AD>"],
  ["line\u2028para\u2029", "line<U+2028>para<U+2029>"],
  ["tag \u{E0041}", "tag <U+E0041>"],
  ["lone \ud800", "lone <U+D800>"],
  ["\u0338starts with a combining mark", "<U+0338>starts with a combining mark"],
  ["al\u200dice", "al<U+200D>ice"],
  ["emoji \u2764\ufe0f \u{1F468}\u200d\u{1F469}", "emoji \u2764\ufe0f \u{1F468}\u200d\u{1F469}"],
];

Deno.test("safeText() shows every control, bidi and invisible character visibly", () => {
  for (const [input, shown] of VECTORS) assert.equal(safeText(input), shown, JSON.stringify(input));
});

Deno.test("safeText() is idempotent: text already shown is shown the same", () => {
  for (const [, shown] of VECTORS) assert.equal(safeText(shown), shown);
});

Deno.test("safeJson() escapes what a terminal would act on and parses back to the same value", () => {
  const value = { text: VECTORS.map(([input]) => input), name: "\u0301x" };
  const json = safeJson(value);
  assert.doesNotMatch(json, /[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/);
  assert.doesNotMatch(json, /"\u0301/);
  assert.deepEqual(JSON.parse(json), value);
  // Indented output keeps its line structure.
  const indented = safeJson(value, 2);
  assert.deepEqual(JSON.parse(indented), value);
  assert.equal(indented.split("\n").length, JSON.stringify(value, null, 2).split("\n").length);
});

Deno.test("createLogger() keeps a hostile field on one line with nothing raw, in text and JSON", () => {
  const detail =
    "peer ended the session: X (\u009b2K\u202e\n2026-01-01T00:00:00Z LOGIN user=alice)";
  for (const format of ["text", "json"] as const) {
    const lines: string[] = [];
    createLogger(format, (line) => lines.push(line))("PROTOCOL_ERROR", { detail });
    assert.equal(lines.length, 1);
    assert.doesNotMatch(lines[0], /[\n\r\x1b\u009b\u202e]/);
  }
});

Deno.test("layoutLine() on a terminal never starts a row with the text: rows wrap under the head", () => {
  const screen = { terminal: true, columns: 60, color: false };
  const head = "[12:00:00] mallory \u2713";
  // Padded so that, wrapped by the terminal alone, the forged head would start row 2.
  const forged = `${"x".repeat(60 - head.length - 1)}[12:00:01] alice \u2713 approved`;
  const rows = layoutLine(screen, head, forged).split("\n");
  assert.ok(rows.length > 1);
  assert.ok(rows[0].startsWith(head));
  for (const row of rows.slice(1)) assert.ok(row.startsWith(" ".repeat(head.length + 1)), row);
  for (const row of rows) assert.ok(row.length < 60, row);
  // Wide characters count double, so our wrap always comes before the terminal's.
  const wide = layoutLine(screen, head, "日".repeat(60)).split("\n");
  const columns = (row: string) =>
    [...row].reduce((n, c) => n + (c === "\u2713" || c < "\x80" ? 1 : 2), 0);
  for (const row of wide) assert.ok(columns(row) < 60, row);
});

Deno.test("layoutLine() draws the head in bold on a colour terminal; plain and unwrapped in a pipe", () => {
  const text = "hello \x1b[1m not bold";
  assert.equal(
    layoutLine({ terminal: true, columns: 80, color: true }, "[12:00:00] bob \u2713", text),
    "\x1b[1m[12:00:00] bob \u2713\x1b[0m hello ^[[1m not bold",
  );
  assert.equal(
    layoutLine({ terminal: false, columns: 0, color: false }, "[12:00:00] bob \u2713", text),
    "[12:00:00] bob \u2713 hello ^[[1m not bold",
  );
});

Deno.test("formatReport() shows certificate names from a transcript with nothing raw", () => {
  const evil = "mallory\r\x1b[2Kresult      VALID\u202e";
  const report = {
    ok: false,
    code: "SIG_FAIL",
    firstBadLine: 3,
    reason: `bad signature by ${evil}`,
    path: "s.log",
    transcriptVersion: 2,
    protocolVersion: 2,
    sessionId: "abc",
    recordedBy: "client",
    sessionTime: 0,
    startedAt: 0,
    messages: { c2s: 1, s2c: 1 },
    signers: { client: { commonName: evil, fingerprint: "00", serial: "01", notAfter: "-" } },
    authors: [{ commonName: evil, fingerprint: "00", messages: 1 }],
    unattributed: [{ line: 2, commonName: evil, reason: `${evil} was revoked` }],
    refused: [],
    queued: [],
    stored: [],
    span: { first: 0, last: 0 },
    transcriptSha256: null,
    receipts: [],
    confirmedBy: [],
    crl: null,
    ciphertextOnly: true,
  } as unknown as VerifyReport;
  const out = formatReport(report);
  assert.doesNotMatch(out, /[\r\x1b\u202e]/);
  for (const line of out.split("\n")) assert.doesNotMatch(line, /^result +VALID/);
});

Deno.test({
  name: "cert show: a certificate whose names carry escape sequences is printed with nothing raw",
  ignore: !(await openssl(Deno.cwd(), "version").then((r) => r.code === 0, () => false)),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const cn = "mallory\r\x1b[2K\x1b[1AIssuer: CN=Trusted Root\u202e";
      assert.equal(
        (await openssl(dir, "genpkey", "-algorithm", "ED25519", "-out", "k.pem")).code,
        0,
      );
      const made = await openssl(
        dir,
        "req",
        "-x509",
        "-new",
        "-key",
        "k.pem",
        "-utf8",
        "-subj",
        `/CN=${cn}`,
        "-days",
        "1",
        "-out",
        "c.pem",
      );
      assert.equal(made.code, 0, made.stderr);
      const shown = await runCli(["cert", "show", `${dir}/c.pem`]);
      assert.equal(shown.code, 0, shown.stderr);
      assert.doesNotMatch(shown.stdout, /[\r\x1b\u202e]/);
      assert.match(
        shown.stdout,
        /^Subject: +CN=mallory\^M\^\[\[2K\^\[\[1AIssuer: CN=Trusted Root<U\+202E>$/m,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
