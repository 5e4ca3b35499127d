/**
 * A password changed from another client (here the operator's `user passwd`, the same change
 * in the account store as a /passwd elsewhere): this directory's end-to-end state is still
 * sealed under the previous password (PROTOCOL §12.7). `connect` says so with what to do when
 * it cannot ask; at a terminal (tmux: a real pty) it asks for the previous password with echo
 * off, opens the state with it and seals it again under the current one — the same device.
 * Real CLI subprocesses.
 */
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";
import {
  connectArgs,
  type ConnectOptions,
  errorCodeOf,
  registerUser,
  runConnect,
  ServerProcess,
} from "../testkit/server_process.ts";
import { hasTmux, Tmux } from "../testkit/tmux.ts";
import { openStateFile } from "../lib/store/e2e_state_file.ts";

if (!hasTmux) {
  console.error("state re-seal pty test skipped: tmux is not installed (.ci/run installs it)");
}

const OLD = "alice-password-1";
const NEW = "alice-password-2";
const WRONG = "not-alices-password";

Deno.test({
  name: "connect: a state sealed under the password before a change made elsewhere: an error " +
    "saying what to do without a terminal; at one, the previous password re-seals it",
  ignore: !hasTmux,
  fn: async () => {
    const pki = await makePki(["alice"]);
    const server = await ServerProcess.start({ pkiDir: pki.dir });
    const tmux = new Tmux();
    try {
      const alice = (password: string): ConnectOptions => ({
        port: server.port,
        user: "alice",
        password,
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/alice`,
      });
      await registerUser(server, pki.dir, "alice", OLD, alice(OLD).transcripts);
      const statePath = `${server.workDir}/alice/alice.e2e`;
      const identityKey = async (password: string) =>
        ((await (await openStateFile(statePath, password)).load()) as { ik: string }).ik;
      const device = await identityKey(OLD);

      const file = async (name: string, password: string) => {
        const path = `${server.workDir}/${name}`;
        await Deno.writeTextFile(path, password + "\n");
        return path;
      };
      const changed = await runCli([
        "user",
        "passwd",
        "alice",
        "--password-file",
        await file("new-password", NEW),
        "--db",
        server.db,
      ]);
      assert.equal(changed.code, 0, changed.stderr);

      // No terminal to ask at: the new password logs in, and the client says what to do.
      const piped = await runConnect(alice(NEW));
      assert.equal(errorCodeOf(piped), "DECRYPT_FAIL", piped.stderr);
      assert.match(piped.stderr, /does not open with the password you logged in with/);
      assert.match(piped.stderr, /--previous-password-file FILE/);
      // A wrong previous password: refused, and nothing changed.
      const wrong = await runConnect({
        ...alice(NEW),
        args: ["--previous-password-file", await file("wrong", WRONG)],
      });
      assert.equal(errorCodeOf(wrong), "DECRYPT_FAIL", wrong.stderr);
      assert.match(wrong.stderr, /opens with neither your password nor the previous one given/);
      assert.equal(await identityKey(OLD), device);

      // At a terminal: asked for, with echo off; the state is sealed again, the chat starts.
      await tmux.startCli([
        ...connectArgs(alice(NEW)),
        "--password-file",
        await file("login", NEW),
      ]);
      await tmux.waitFor((rows) => rows.at(-1) === "previous password:", "the question", 30_000);
      await tmux.keys(OLD);
      assert.equal((await tmux.screen()).at(-1), "previous password:", "the answer was echoed");
      await tmux.keys("Enter");
      await tmux.waitFor((rows) => rows.at(-1) === "alice>", "the prompt", 30_000);
      const screen = (await tmux.screen()).join(""); // long rows wrap
      assert.match(screen, /sealed under your current password now: the same device/);
      assert.ok(!screen.includes(OLD), screen);
      await tmux.keys("C-d");
      const end = await tmux.waitFor((r) => r.some((row) => row.startsWith("EXIT=")), "the exit");
      assert.ok(end.includes("EXIT=0"), end.join("\n"));

      // The same device, under the new password alone; the next login just opens it.
      assert.equal(await identityKey(NEW), device);
      await assert.rejects(identityKey(OLD));
      const again = await runConnect(alice(NEW));
      assert.equal(again.code, 0, again.stderr);
      assert.ok(!again.stderr.includes("end-to-end state"), again.stderr);
    } finally {
      await tmux.kill();
      await server.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
