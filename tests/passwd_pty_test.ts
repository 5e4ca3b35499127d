/**
 * Issue 17 item 5 in a real terminal: `/passwd` in `connect` under tmux (a pty). The current
 * password and the new one (twice) are typed without echo and kept out of the history; the
 * rules are checked before anything is sent; a wrong current password changes nothing; Ctrl-C
 * cancels the question, not the chat; the session goes on after the change, and from then on
 * only the new password logs in — on the same end-to-end device, whose state file the change
 * re-encrypted (PROTOCOL §12.7).
 */
import assert from "node:assert/strict";
import { openStateFile } from "../lib/store/e2e_state_file.ts";
import { errorCodeOf, runConnect } from "../testkit/server_process.ts";
import { hasTmux } from "../testkit/tmux.ts";
import { withTerminalChat } from "./helpers/terminal_chat.ts";

if (!hasTmux) {
  console.error("/passwd pty test skipped: tmux is not installed (.ci/run installs it)");
}

const OLD = "alice-password-1";
const NEW = "alice-password-2";
const WRONG = "not-alices-password";

Deno.test({
  name:
    "connect in a terminal: /passwd asks unechoed, checks first, changes the password, the chat goes on",
  ignore: !hasTmux,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withTerminalChat({ alicePassword: OLD }, async ({ pki, server, tmux, bob }) => {
      const login = (password: string, transcripts = `${server.workDir}/check`) =>
        runConnect({
          port: server.port,
          user: "alice",
          password,
          pkiDir: pki.dir,
          transcripts,
        });
      const statePath = `${server.workDir}/alice/alice.e2e`;
      const identityKey = async (password: string) =>
        ((await (await openStateFile(statePath, password)).load()) as { ik: string }).ik;
      const asked = (question: string) =>
        tmux.waitFor((rows) => rows.at(-1) === question, `"${question}"`);
      const said = (text: string) =>
        tmux.waitFor((rows) => rows.some((row) => row.includes(text)), `"${text}"`, 30_000);

      // A wrong current password: asked for everything, sent, refused, nothing changed.
      await tmux.keys("/passwd", "Enter");
      await asked("current password:");
      await tmux.keys(WRONG);
      // Typed, not yet entered: nothing of it is on the screen.
      assert.equal((await tmux.screen()).at(-1), "current password:");
      await tmux.keys("Enter");
      await asked("new password:");
      await tmux.keys(NEW, "Enter");
      await asked("repeat it:");
      await tmux.keys(NEW, "Enter");
      await said("password not changed: the server refused the password change: AUTH_FAIL");
      await said("hint: the current password was not right");

      // A new password that breaks the rules is refused before the repeat, and never sent.
      await tmux.keys("/passwd", "Enter");
      await asked("current password:");
      await tmux.keys(OLD, "Enter");
      await asked("new password:");
      await tmux.keys("short", "Enter");
      await said("password not changed: password must be 8 to 1024 bytes of UTF-8");

      // Ctrl-C at a question cancels the change and leaves the chat running.
      await tmux.keys("/passwd", "Enter");
      await asked("current password:");
      await tmux.keys("C-c");
      await said("password not changed: cancelled");

      // The refused changes left her end-to-end state under the old password alone.
      const before = await identityKey(OLD);
      await tmux.keys("/passwd", "Enter");
      await asked("current password:");
      await tmux.keys(OLD, "Enter");
      await asked("new password:");
      await tmux.keys(NEW, "Enter");
      await asked("repeat it:");
      await tmux.keys(NEW, "Enter");
      await said("password changed: log in with the new one from now on");

      // Her end-to-end state followed the password: the same device, under the new one.
      const device = await identityKey(OLD).catch(() => undefined);
      assert.equal(device, undefined, "the old password no longer opens the state");
      const reencrypted = await identityKey(NEW);
      assert.equal(reencrypted, before);

      // The chat goes on, and none of what was typed at the questions went to anyone.
      await tmux.waitFor((rows) => rows.at(-1) === "alice>", "the prompt again");
      await tmux.keys("still here", "Enter");
      await bob.waitForLine((l) => l.endsWith("alice \u2713 still here"));
      // Up recalls the chat line, then /passwd: no answer to a question is in the history.
      await tmux.keys("Up");
      await tmux.waitFor((rows) => rows.at(-1) === "alice> still here", "history: the chat line");
      await tmux.keys("Up");
      await tmux.waitFor((rows) => rows.at(-1) === "alice> /passwd", "history: /passwd");
      await tmux.keys("C-u");
      const screen = (await tmux.screen()).join("\n");
      for (const secret of [OLD, NEW, WRONG, "short"]) {
        assert.ok(!screen.includes(secret), `"${secret}" was echoed:\n${screen}`);
        assert.ok(!bob.stdout.join("\n").includes(secret), `"${secret}" reached bob`);
      }

      await tmux.keys("C-d");
      const end = await tmux.waitFor((r) => r.some((row) => row.startsWith("EXIT=")), "the exit");
      assert.ok(end.includes("EXIT=0"), end.join("\n"));
      assert.equal(errorCodeOf(await login(OLD)), "AUTH_FAIL");
      const fresh = await login(NEW);
      assert.equal(fresh.code, 0, fresh.stderr);
      // Her own directory: the state opens with the new password, and she is the same device.
      const again = await login(NEW, `${server.workDir}/alice`);
      assert.equal(again.code, 0, again.stderr);
      assert.ok(!again.stderr.includes("end-to-end state"), again.stderr);
      assert.equal(await identityKey(NEW), reencrypted);
      assert.ok(server.logs.some((e) => e.event === "PASSWORD_CHANGED" && e.user === "alice"));
    });
  },
});
