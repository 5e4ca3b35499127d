/**
 * One-time prekeys are replenished by the client (issue 13, PROTOCOL §12.6): each first contact
 * from a device bob has never talked to takes one of his device's prekeys from the server;
 * when fewer than PREKEYS_LOW are left the server tells bob's device, which publishes more at
 * once, while bob stays online. Every contact in between is a PQXDH first contact over keys
 * from the store (bob never talked with any of those devices).
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, registerUser, runConnect, ServerProcess } from "../testkit/server_process.ts";
import { PREKEYS_LOW } from "../lib/store/key_directory.ts";
import { PREKEY_TARGET } from "../lib/e2e/client.ts";

Deno.test("prekeys: first contacts use up bob's one-time prekeys; told it is low, his client tops them up", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--message-rate", "100"] });
  try {
    const bobTranscripts = `${server.workDir}/bob-transcripts`;
    await registerUser(server, pki.dir, "alice", "alice-password-1");
    await registerUser(server, pki.dir, "bob", "bob-password-12", bobTranscripts);
    const bob = await LiveClient.login({
      port: server.port,
      user: "bob",
      password: "bob-password-12",
      pkiDir: pki.dir,
      transcripts: bobTranscripts,
    });
    // Each run of alice's with a fresh state directory is a device bob has never seen.
    const contacts = PREKEY_TARGET - PREKEYS_LOW + 1;
    const mark = server.mark();
    for (let i = 1; i <= contacts; i++) {
      const result = await runConnect({
        port: server.port,
        user: "alice",
        password: "alice-password-1",
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/alice-device-${i}`,
      }, [`/msg bob first contact ${i}`]);
      assert.equal(result.code, 0, result.stderr);
      await bob.waitForLine((l) => l.includes(`alice (private) ✓ first contact ${i}`));
    }
    const low = await server.waitFor(
      (e) => e.event === "PREKEYS_LOW" && e.user === "bob",
      10_000,
      mark,
    );
    assert.match(String(low.detail), new RegExp(`: ${PREKEYS_LOW - 1} one-time prekeys left$`));
    assert.equal(
      server.events((e) => e.event === "PREKEYS_LOW" && e.user === "bob", mark).length,
      1,
    );
    const lowAt = server.logs.indexOf(low);
    const topUp = await server.waitFor(
      (e) => e.event === "KEYS_PUBLISHED" && e.user === "bob",
      10_000,
      lowAt,
    );
    assert.match(String(topUp.detail), new RegExp(`: ${PREKEY_TARGET} one-time prekeys`));
    assert.equal((await bob.end()).code, 0);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
