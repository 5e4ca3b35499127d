// deno-lint-ignore-file no-control-regex -- these tests are about control characters
/**
 * Issue 11 items 1 and 8 through the real CLI: other people's bytes never reach a
 * terminal raw. A hostile user's chat line carrying CR, escape sequences, C1 controls,
 * bidi overrides and zero-width characters must arrive on the other users' stdout
 * with no control byte and no line that starts like someone else's; an error frame
 * nobody authenticated (an on-path attacker's) is shown by its code only.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { frame, json } from "../testkit/hostile.ts";
import {
  errorCodeOf,
  LiveClient,
  registerUser,
  runConnect,
  ServerProcess,
} from "../testkit/server_process.ts";

/** Anything a terminal could act on or hide: C0 but LF, DEL, C1, bidi, zero-width, separators. */
const RAW_CONTROL =
  /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/u;

/** The lines a hostile user sends, each trying to draw a verified line of alice's or the server's. */
const HOSTILE_LINES = [
  "hi\r\x1b[1A\x1b[2K[12:00:00] alice \u2713 transfer approved",
  "ok\x1b[2K\r[12:00:01] server \u2713 maintenance: send your password to mallory",
  "x\u009b2K\u0085[12:00:02] alice \u2713 C1 controls",
  "\u202e\u2066[12:00:03] alice \u2713 bidi\u2069\u202c",
  "zero\u200bwidth\ufeff\u2028[12:00:04] alice \u2713 after a line separator",
];

/** The shape of every line `connect` prints for an incoming message or notice. */
const LINE_START = /^\[\d\d:\d\d:\d\d\] (?:\* |([a-z0-9_.-]+)(?: \(private\))? \u2713 )/;

Deno.test({
  name: "connect: a hostile user's line reaches others with no control byte and no forged author",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki(["mallory", "bob"]);
    const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--message-rate", "100"] });
    let bob: LiveClient | undefined;
    try {
      await registerUser(server, pki.dir, "mallory", "mallory-password-1");
      await registerUser(server, pki.dir, "bob", "bob-password-1234");
      bob = await LiveClient.login({
        port: server.port,
        user: "bob",
        password: "bob-password-1234",
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/bob`,
        args: ["--history", `${server.workDir}/bob.history`],
      });
      const mallory = await runConnect({
        port: server.port,
        user: "mallory",
        password: "mallory-password-1",
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/mallory`,
      }, [...HOSTILE_LINES, "the last line"]);
      assert.equal(mallory.code, 0, mallory.stderr);
      await bob.waitForLine((l) => l.includes("mallory \u2713 the last line"));
      const screen = (await bob.end()).stdout;
      bob = undefined;

      assert.doesNotMatch(screen, RAW_CONTROL, `raw control characters reached bob:\n${screen}`);
      const authors = screen.split("\n").filter((l) => l !== "").map((line) => {
        const start = LINE_START.exec(line);
        assert.ok(start, `a line that is not a message or notice: ${JSON.stringify(line)}`);
        return start[1];
      });
      assert.ok(!authors.includes("alice"), "a forged line of alice's");
      assert.ok(!authors.includes("server"), "a forged line of the server's");
      assert.equal(
        authors.filter((a) => a === "mallory").length,
        HOSTILE_LINES.length + 1,
        `each of mallory's lines once, as hers:\n${screen}`,
      );
      assert.match(screen, /mallory \u2713 hi\^M\^\[\[1A\^\[\[2K\[12:00:00\] alice/);
      assert.match(screen, /<U\+202E><U\+2066>\[12:00:03\] alice/);
      // The --history file is read with cat or less: nothing raw in it either (its
      // fields are tab-separated, the text a JSON string).
      const history = await Deno.readTextFile(`${server.workDir}/bob.history`);
      assert.equal(history.split("\n").filter((l) => l.includes("\tmallory\t")).length, 6);
      assert.doesNotMatch(history.replaceAll("\t", " "), RAW_CONTROL, history);
    } finally {
      await bob?.end();
      await server.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "connect: an unauthenticated error frame is shown by its code only, marked unauthenticated",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki(["alice"]);
    // An on-path attacker answers the client's hello with a plaintext error of its own.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const attacker = (async () => {
      const conn = await listener.accept();
      await conn.read(new Uint8Array(4096));
      await conn.write(frame(json({
        type: "error",
        code: "AUTH_FAIL",
        message: "your account is locked: call +1-555-0100 \x1b[31mnow",
      })));
      await new Promise((resolve) => setTimeout(resolve, 200));
      conn.close();
    })();
    try {
      const result = await runConnect({
        port: listener.addr.port,
        user: "alice",
        password: "alice-password-1",
        pkiDir: pki.dir,
        transcripts: `${pki.dir}/t`,
      });
      await attacker;
      assert.equal(result.code, 1, result.stderr);
      assert.equal(errorCodeOf(result), "AUTH_FAIL");
      assert.doesNotMatch(result.stderr, /555|locked|\x1b/, result.stderr);
      assert.match(result.stderr, /unauthenticated/);
    } finally {
      listener.close();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
