/**
 * Issue 17 item 7 through the real `serve --console`: `/who` says who is online, from
 * which address and since when; a message to someone offline says so; `/kick NAME`
 * closes that session cleanly; `/unlock` ends a lockout; `/quit` stops the server.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, pollUntil, registerUser, ServerProcess } from "../testkit/server_process.ts";
import { ALICE_PASSWORD, lockedOutAlice } from "./helpers/lockout.ts";

Deno.test({
  name: "serve --console: /who with address and time, offline /msg, /kick, /quit",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki(["alice"]);
    const server = await ServerProcess.start({ pkiDir: pki.dir, console: true });
    let alice: LiveClient | undefined;
    const said = (test: RegExp, from = 0) =>
      pollUntil(
        () => server.otherOutput.slice(from).find((l) => test.test(l)),
        10_000,
        () => server.otherOutput.join("\n"),
      );
    try {
      await registerUser(server, pki.dir, "alice", "alice-password-1");
      alice = await LiveClient.login({
        port: server.port,
        user: "alice",
        password: "alice-password-1",
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/alice`,
      });
      await server.say("/who");
      await said(/online: 1$/);
      await said(/^securechat: {3}alice {2}127\.0\.0\.1:\d+ {2}since \d\d:\d\d:\d\d \(just now\)$/);

      let mark = server.otherOutput.length;
      await server.say("/msg nobody are you there?");
      await said(/nobody is not online: not sent/, mark);

      mark = server.otherOutput.length;
      await server.say("/kick alice");
      await said(/closed alice's session/, mark);
      const end = await alice.end();
      alice = undefined;
      assert.equal(end.code, 0, end.stderr);
      assert.match(end.stdout, /\* the operator closed your session/);
      assert.match(end.stderr, /server's receipt:/);
      await server.waitFor((e) => e.event === "KICKED" && e.user === "alice");

      // /quit alone stops it: SHUTDOWN is logged and the process exits before any signal.
      await server.say("/quit");
      await server.waitFor((e) => e.event === "SHUTDOWN", 15_000);
      const status = await Promise.race([
        server.child.status,
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 15_000)),
      ]);
      assert.equal(status?.code, 0, "serve exited by itself after /quit");
    } finally {
      await alice?.end();
      await server.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "serve --console: /unlock ends a lockout after too many failed logins",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { server, login, dispose } = await lockedOutAlice({ console: true });
    try {
      // This server still locks per user and per address: the operator forgives both.
      await server.say("/unlock alice");
      await server.say("/unlock 127.0.0.1");
      await server.waitFor((e) => e.event === "UNLOCKED" && e.peer === "127.0.0.1");
      const ok = await login(ALICE_PASSWORD);
      assert.equal(ok.code, 0, ok.stderr);
    } finally {
      await dispose();
    }
  },
});
