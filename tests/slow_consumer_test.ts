/**
 * Fairness (issue #6): a logged-in user who never reads cannot stall the others or
 * grow the server's memory; the server drops that session with SLOW_CONSUMER.
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import assert from "node:assert/strict";
import { clientHandshake } from "../lib/handshake/client.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { ChatServer } from "../lib/server/server.ts";
import { ChatSession } from "../lib/session/session.ts";
import { sharedPasswordStore } from "../testkit/memory_store.ts";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, registerUser, ServerProcess } from "../testkit/server_process.ts";

const PASSWORD = "a-long-password";

Deno.test("slow consumer: a recipient that never reads is dropped; the others keep chatting", async () => {
  const pki = await makePki(["alice", "bob", "stuck"], "ed25519");
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    args: ["--send-queue", "262144", "--message-rate", "5000"],
  });
  let stuckTcp: Deno.TcpConn | undefined;
  try {
    for (const user of ["alice", "bob", "stuck"]) {
      await registerUser(server, pki.dir, user, PASSWORD);
    }
    const options = (user: string) => ({
      port: server.port,
      user,
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/${user}-transcripts`,
    });
    const alice = await LiveClient.login(options("alice"));
    const bob = await LiveClient.login(options("bob"));

    // "stuck" logs in with the real client handshake, then never reads again.
    const mark = server.mark();
    stuckTcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await clientHandshake(new FrameConnection(stuckTcp), {
      identity: await pki.identity("stuck"),
      trust: pki.trust,
      serverName: "localhost",
      credentials: { mode: "login", username: "stuck", password: PASSWORD },
    });
    await server.waitFor((e) => e.event === "LOGIN" && e.user === "stuck");

    // Enough long lines to fill the kernel's socket buffers toward "stuck" many times over.
    const filler = "x".repeat(3900);
    const total = 2500;
    for (let i = 1; i <= total; i++) {
      await alice.send(`${i} ${filler}`);
      // bob reads, only slower on a loaded machine: let him catch up now and then, so
      // only the reader that never reads can overflow its queue.
      if (i % 100 === 0) await bob.waitForLine((l) => l.includes(`alice ✓ ${i} x`), 60_000);
    }
    const dropped = await server.waitFor(
      (e) => e.event === "SLOW_CONSUMER" && e.user === "stuck",
      60_000,
    );
    assert.ok(dropped);
    await bob.waitForLine((l) => l.includes(`alice ✓ ${total} x`), 60_000);
    const seen = bob.lines((l) => l.includes("alice ✓ ")).length;
    assert.equal(seen, total, "bob got every line exactly once");

    for (const client of [alice, bob]) assert.equal((await client.end()).code, 0);
    const stuckClose = await server.waitFor(
      (e) => e.event === "CLOSE" && e.user === "stuck",
      10_000,
      mark,
    );
    assert.equal(stuckClose.outcome, "error");
  } finally {
    try {
      stuckTcp?.close();
    } catch {
      // closed by the server already
    }
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("slow consumer: the server's queue toward a stalled reader never exceeds its cap", async () => {
  const pki = await makePki(["alice", "stuck"], "ed25519");
  const transcripts = await Deno.makeTempDir({ prefix: "securechat-slow-" });
  const queueCap = 64 * 1024;
  const log: { event: string; user?: string }[] = [];
  const server = ChatServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    identity: await pki.identity("server"),
    trust: pki.trust,
    store: sharedPasswordStore(PASSWORD),
    log: (event, fields) => void log.push({ event, user: fields?.user }),
    session: { transcripts: transcriptDirectory(transcripts) },
    sendQueueBytes: queueCap,
    lobby: { messagesPerSecond: 10_000, messageBurst: 10_000 },
  });
  const tcps: Deno.TcpConn[] = [];
  try {
    const login = async (user: string) => {
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      tcps.push(tcp);
      const established = await clientHandshake(new FrameConnection(tcp), {
        identity: await pki.identity(user),
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: user, password: PASSWORD },
      });
      return await ChatSession.start(established, {
        transcripts: transcriptDirectory(transcripts),
      });
    };
    await login("stuck"); // never read again
    const alice = await login("alice");
    const aliceRun = alice.run({ onMessage: () => {} });
    let worst = 0;
    const filler = "y".repeat(3900);
    for (let i = 0; i < 3000 && !log.some((e) => e.event === "SLOW_CONSUMER"); i++) {
      await alice.send({ kind: "text", text: `${i} ${filler}` });
      worst = Math.max(worst, server.lobby.queueStats().maxQueuedBytes);
    }
    assert.ok(log.some((e) => e.event === "SLOW_CONSUMER" && e.user === "stuck"), "stuck dropped");
    assert.ok(worst <= queueCap, `queue reached ${worst} bytes`);
    await alice.close();
    assert.equal((await aliceRun).outcome, "closed");
    assert.equal(server.lobby.queueStats().queuedBytes, 0);
  } finally {
    for (const tcp of tcps) {
      try {
        tcp.close();
      } catch {
        // already closed
      }
    }
    await server.shutdown();
    await Deno.remove(transcripts, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
