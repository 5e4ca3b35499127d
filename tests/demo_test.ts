/**
 * Issue 17 item 8: `deno task demo` (the quickstart) ends in a short summary, and
 * `--verbose` shows every command with its output.
 */
import assert from "node:assert/strict";

const CONFIG = new URL("../deno.json", import.meta.url).pathname;

async function demo(...args: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "securechat-demo-test-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--config", CONFIG, "demo", ...args, dir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr));
    return text;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "deno task demo prints a summary; --verbose every command and its output",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const summary = await demo();
    const lines = summary.trimEnd().split("\n");
    assert.ok(lines.length <= 20, `a summary, not a transcript:\n${summary}`);
    assert.match(summary, /^ {2}ok {2}verify: all \d+ transcripts/m);
    assert.match(summary, /demo complete: \d+ transcripts verified/);
    assert.doesNotMatch(summary, /LISTEN|Fingerprint:/, "details only with --verbose");
    assert.doesNotMatch(summary, /allow-builtin-rsa/, "libcrypto signs: nothing to say");

    const verbose = await demo("--verbose");
    assert.match(verbose, /^\$ securechat ca init$/m);
    assert.match(verbose, /Fingerprint: sha256:/);
    assert.match(verbose, /--- server log ---/);
  },
});

Deno.test({
  name:
    "deno task demo --without-ffi: where the CLI cannot load libcrypto, the demo still runs, and says why",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // The CLI without --allow-ffi takes the path of a machine without OpenSSL 3: serve refuses
    // Deno's built-in RSA, and the demo starts it with --allow-builtin-rsa, saying so once.
    const summary = await demo("--without-ffi");
    const notes = summary.split("\n").filter((line) => line.includes("--allow-builtin-rsa"));
    assert.equal(notes.length, 1, summary);
    assert.match(notes[0], /^ {2}note {2}.*cannot sign RSA through OpenSSL 3 \(no --allow-ffi/);
    assert.match(notes[0], /install libssl3/);
    assert.match(summary, /demo complete: \d+ transcripts verified/);
  },
});
