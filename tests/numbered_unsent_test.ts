/**
 * review8 R8-2: a client record that was numbered (PROTOCOL §6: every c2s session message
 * takes the next seqno) but then cannot leave — its end-to-end state could not be saved
 * before it went (§12.6 step 7), no envelope could be made — must not leave a hole in the
 * direction's seqnos while the session goes on: the server requires exactly the next seqno,
 * so the user's next line would end the session with the server's PROTOCOL_ERROR, which says
 * nothing of what went wrong. The session ends at once with the local cause instead.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type E2eStorage, MemoryStorage } from "../lib/e2e/client.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { SecureChatError } from "../lib/errors.ts";
import { type DeviceClient, deviceLogin } from "../testkit/e2e_device.ts";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, logIs, registerUser, ServerProcess } from "../testkit/server_process.ts";

/** Memory storage whose saves fail while `failing` is set (a full disk, say). */
class FlakyStorage extends MemoryStorage implements E2eStorage {
  failing = false;
  override save(state: unknown): Promise<void> {
    if (this.failing) {
      return Promise.reject(new SecureChatError("IO_ERROR", "no space left on device"));
    }
    return super.save(state);
  }
}

Deno.test("ChatSession.send(): a numbered line that cannot leave ends the session with its own code, not a seqno hole the server calls PROTOCOL_ERROR", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  let bob: LiveClient | undefined;
  let alice: DeviceClient | undefined;
  try {
    await registerUser(server, pki.dir, "alice", "alice-password-1");
    await registerUser(server, pki.dir, "bob", "bob-password-12");
    bob = await LiveClient.login({
      port: server.port,
      user: "bob",
      password: "bob-password-12",
      pkiDir: pki.dir,
      transcripts: join(server.workDir, "bob-transcripts"),
    });
    const storage = new FlakyStorage();
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    alice = await deviceLogin(new FrameConnection(tcp), {
      pki,
      user: "alice",
      password: "alice-password-1",
      transcriptDir: join(server.workDir, "alice"),
      storage,
    });
    await alice.say("/msg bob first, delivered");
    await bob.waitForLine((l) => l.includes("first, delivered"), 15_000);

    storage.failing = true;
    await assert.rejects(alice.say("/msg bob second, cannot be saved"), /no space left/);
    storage.failing = false;

    // The user types on. On the old code this line failed locally ("transcript: c2s seqno 5
    // is not the next one (4)"), as would every later one, while the session stayed open.
    const mark = server.mark();
    const third = await alice.say("/msg bob third").then(() => "sent", (e) => String(e));
    const end = await Promise.race([
      alice.running,
      new Promise<undefined>((resolve) => setTimeout(resolve, 10_000, undefined)),
    ]);
    assert.ok(end, `the session is still open after a line could not leave; the next: ${third}`);
    assert.equal(end.outcome, "error");
    assert.equal(end.code, "IO_ERROR", `ended by ${end.code} (${end.message})`);
    assert.notEqual(end.fromPeer, true, "ended by the client itself, not by the server");
    assert.deepEqual(server.events(logIs("PROTOCOL_ERROR"), mark), [], "a seqno hole");
  } finally {
    await alice?.session.close().catch(() => {});
    await bob?.end().catch(() => {});
    await server.dispose();
  }
});
