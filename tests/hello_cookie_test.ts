/**
 * Issue 11 item 7, PROTOCOL §5.1: under load the server answers `hello` with a stateless
 * `retry` cookie and spends nothing (no key agreement, no signature) until a hello echoes
 * it; a cookie is bound to the client's address, to that hello, and to a short lifetime.
 */
import assert from "node:assert/strict";
import { toBase64 } from "../lib/bytes.ts";
import { COOKIE_LIFETIME_MS, CookieJar } from "../lib/handshake/cookie.ts";
import { RetrySchema } from "../lib/wire/messages.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";
import { makePki } from "../testkit/pki.ts";
import { registerUser, runConnect, ServerProcess } from "../testkit/server_process.ts";

const PASSWORD = "the-right-password";
const hello = {
  version: 1,
  nonce: new Uint8Array(32).fill(7),
  groups: ["x25519", "p256"],
  key_share: { group: "x25519", pub: new Uint8Array(32).fill(9) },
};

Deno.test("CookieJar: a cookie holds for its address and hello, for 30 s, across one secret rotation", () => {
  const jar = new CookieJar(0);
  const cookie = jar.issue("10.0.0.1", hello, 1000);
  assert.ok(jar.check("10.0.0.1", hello, cookie, 2000));
  assert.ok(!jar.check("10.0.0.2", hello, cookie, 2000), "another address");
  for (
    const other of [
      { ...hello, nonce: new Uint8Array(32).fill(8) },
      { ...hello, groups: ["x25519"] },
      { ...hello, key_share: { group: "x25519", pub: new Uint8Array(32).fill(1) } },
    ]
  ) {
    assert.ok(!jar.check("10.0.0.1", other, cookie, 2000), "another hello");
  }
  const flipped = cookie.slice();
  flipped[20] ^= 1;
  assert.ok(!jar.check("10.0.0.1", hello, flipped, 2000), "a forged MAC");
  const late = jar.issue("10.0.0.1", hello, 29_000);
  assert.ok(jar.check("10.0.0.1", hello, late, 31_000), "valid under the previous secret");
  assert.ok(!jar.check("10.0.0.1", hello, cookie, 1000 + COOKIE_LIFETIME_MS + 1), "expired");
  assert.ok(!jar.check("10.0.0.1", hello, jar.issue("10.0.0.1", hello, 5000), 4000), "future");
  assert.ok(!jar.check("10.0.0.1", hello, cookie.subarray(0, 20), 2000), "truncated");
});

Deno.test("hello cookies: under load the server answers retry, and only a hello echoing its cookie goes on", async () => {
  const pki = await makePki(["alice"]);
  const srv = await startInProcessServer(pki, { alice: PASSWORD }, {
    admission: { cookieThreshold: 0, handshakeBurst: 1000, handshakesPerSecond: 1000 },
  });
  const decode = (payload: Uint8Array | null) => JSON.parse(new TextDecoder().decode(payload!));
  try {
    // The honest path (the hostile client answers a retry as the real one does).
    const honest = await srv.client({ username: "alice", password: PASSWORD });
    await honest.handshake();
    honest.close();
    const cases: [string, (cookie: Uint8Array) => Record<string, unknown> | undefined][] = [
      ["the same hello without the cookie", () => undefined],
      ["a forged cookie", (c) => ({ cookie: toBase64(c.map((b) => b ^ 1)) })],
      ["the cookie on another hello", (c) => ({
        cookie: toBase64(c),
        nonce: toBase64(new Uint8Array(32).fill(3)),
      })],
    ];
    for (const [what, change] of cases) {
      const h = await srv.client({ username: "alice", password: PASSWORD });
      await h.sendHello();
      const retry = RetrySchema.parse(decode(await h.conn.readFrame(10_000)));
      // The retry is all the server spent: resend the hello, changed as the case says.
      const first = JSON.parse(new TextDecoder().decode(h.conn.sent[0].subarray(4)));
      await h.conn.sendFrame({ ...first, ...change(retry.cookie) });
      assert.deepEqual(decode(await h.conn.readFrame(10_000)), {
        type: "error",
        code: "PROTOCOL_ERROR",
      }, what);
      h.close();
    }
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("connect completes the cookie round trip against serve --cookie-threshold 0", async () => {
  const pki = await makePki(["alice"]);
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--cookie-threshold", "0"] });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    const login = await runConnect({
      port: server.port,
      user: "alice",
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice`,
    }, ["hello through a cookie"]);
    assert.equal(login.code, 0, login.stderr);
    assert.equal(server.events((e) => e.event === "LOGIN" && e.user === "alice").length, 2);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
