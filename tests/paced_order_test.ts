/**
 * Records leave in the order they are sealed (PROTOCOL §3.2: a record's nonce is its position).
 * review17 R17-6 (session 17): a client's batch record was sealed first and then waited for room
 * in its send queue, while a control message (a password_change) was sealed and queued at once:
 * with the queue nearly full, the control record took the next counter and left first, and the
 * server, opening them out of order, ended the session DECRYPT_FAIL. A record now takes its
 * counter only when it is queued (ChatSession's paced send waits for room, then seals).
 */
import assert from "node:assert/strict";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { ChatSession } from "../lib/session/session.ts";
import { codeOf } from "../lib/errors.ts";
import { type ByteStreamConn, FrameConnection } from "../lib/wire/connection.ts";
import { makePki } from "../testkit/pki.ts";
import { loggedIn } from "./helpers/logged_in.ts";

/** A TCP connection whose writes wait while its gate is closed (a server that stopped reading). */
class GatedWrites implements ByteStreamConn {
  #gate = Promise.withResolvers<void>();
  #closed = false;
  constructor(readonly inner: Deno.TcpConn) {
    this.#gate.resolve();
  }
  get readable(): ReadableStream<Uint8Array> {
    return this.inner.readable;
  }
  read(into: Uint8Array): Promise<number | null> {
    return this.inner.read(into);
  }
  close(): void {
    this.inner.close();
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  gate(): void {
    if (!this.#closed) this.#gate = Promise.withResolvers<void>();
    this.#closed = true;
  }
  open(): void {
    this.#closed = false;
    this.#gate.resolve();
  }
  async write(bytes: Uint8Array): Promise<number> {
    await this.#gate.promise;
    return await this.inner.write(bytes);
  }
}

Deno.test("a password change while a paced batch waits for room leaves after it (the server opens both)", async () => {
  const pki = await makePki(["alice"]);
  const transcripts = await Deno.makeTempDir();
  try {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const [serverTcp, clientTcp] = await Promise.all([
      listener.accept(),
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    ]);
    listener.close();
    const gated = new GatedWrites(clientTcp);
    const [s, c] = await loggedIn(
      pki,
      new FrameConnection(serverTcp),
      new FrameConnection(gated, { maxQueuedBytes: 128 * 1024 }),
    );
    const storage = transcriptDirectory(transcripts);
    const server = await ChatSession.start(s, { transcripts: storage });
    const client = await ChatSession.start(c, { transcripts: storage, relayTrust: pki.trust });
    const serverRun = server.run({
      onMessage: () => {},
      onPasswordChange: () => Promise.resolve(),
    });
    const clientRun = client.run({ onMessage: () => {} });
    gated.gate();
    // Lines of ~5 KB, one batch per send (awaited one by one would not fill the queue):
    // enough to fill the 128 KiB queue, so the last batch's record waits for room.
    const sends = Array.from(
      { length: 40 },
      (_, i) => client.send({ kind: "text", text: `${i} ${"p".repeat(3900)}` }),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.ok(c.conn.queuedBytes > 64 * 1024, `queued ${c.conn.queuedBytes}`);
    const change = client.changePassword("old-password-1", "new-password-1");
    gated.open();
    const sent = await Promise.allSettled(sends);
    const changed = await change.then(() => "changed", (e) => `${codeOf(e)}: ${e.message}`);
    await client.close().catch(() => {});
    const [clientEnd, serverEnd] = await Promise.all([clientRun, serverRun]);
    const serverError = `${serverEnd.code} ${serverEnd.message}`;
    assert.deepEqual(
      {
        changed,
        server: serverEnd.outcome,
        unsent: sent.filter((r) => r.status === "rejected").length,
      },
      { changed: "changed", server: "closed", unsent: 0 },
      `the server ended the session: ${serverError}`,
    );
    assert.equal(clientEnd.outcome, "closed");
  } finally {
    await Deno.remove(transcripts, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
