/**
 * Losing the client's end-to-end state file (issue 13): the client says what happened, starts
 * again as a new device with a fresh bundle published at once, and the conversation goes on
 * both ways — never a silent failure. Real CLI subprocesses.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import {
  type ConnectOptions,
  LiveClient,
  registerUser,
  ServerProcess,
} from "../testkit/server_process.ts";

const PASSWORDS: Record<string, string> = { alice: "alice-password-1", bob: "bob-password-12" };

Deno.test("state loss: the client says its end-to-end state is gone, republishes as a new device, and peers' next messages work", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const options = (user: string): ConnectOptions => ({
    port: server.port,
    user,
    password: PASSWORDS[user],
    pkiDir: pki.dir,
    transcripts: `${server.workDir}/${user}-transcripts`,
  });
  try {
    for (const user of ["alice", "bob"]) {
      await registerUser(server, pki.dir, user, PASSWORDS[user], options(user).transcripts);
    }
    let alice = await LiveClient.login(options("alice"));
    let bob = await LiveClient.login(options("bob"));
    await alice.send("/msg bob before the loss");
    await bob.waitForLine((l) => l.includes("alice (private) ✓ before the loss"));
    await bob.send("/msg alice got it");
    await alice.waitForLine((l) => l.includes("bob (private) ✓ got it"));
    for (const c of [alice, bob]) assert.equal((await c.end()).code, 0);
    assert.ok(!bob.stderr.some((l) => l.includes("is missing")), "no false alarm before");

    await Deno.remove(`${options("bob").transcripts}/bob.e2e`);
    const mark = server.mark();
    bob = await LiveClient.login(options("bob"));
    const said = bob.stderr.find((l) => l.includes("end-to-end state"));
    assert.match(said ?? bob.stderr.join("\n"), /is missing \(lost or deleted\).*new device/);
    const published = await server.waitFor(
      (e) => e.event === "KEYS_PUBLISHED" && e.user === "bob",
      10_000,
      mark,
    );
    const device = /new device \(([0-9a-f]{16})\)/.exec(said!)![1];
    assert.match(String(published.detail), new RegExp(`^device ${device}: \\d+ one-time prekeys`));

    // alice's next run fetches bob's devices: the new one is among them.
    alice = await LiveClient.login(options("alice"));
    await alice.send("/msg bob after the loss");
    await bob.waitForLine((l) => l.includes("alice (private) ✓ after the loss"));
    await bob.send("/msg alice from my new device");
    await alice.waitForLine((l) => l.includes("bob (private) ✓ from my new device"));
    for (const c of [alice, bob]) assert.equal((await c.end()).code, 0);
    assert.deepEqual(bob.lines((l) => l.includes("cannot decrypt")), []);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
