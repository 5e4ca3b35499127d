/**
 * The server's first flight (PROTOCOL §5: server_hello, certificate, certificate_verify,
 * finished) leaves in one write: one syscall and one segment where it took four, one per
 * await between the messages (docs/PERFORMANCE.md, "Session 11: the handshake").
 */
import assert from "node:assert/strict";
import { clientHandshake } from "../../lib/handshake/client.ts";
import { serverHandshake } from "../../lib/handshake/server.ts";
import { type ByteStreamConn, FrameConnection } from "../../lib/wire/connection.ts";
import { makePki } from "../../testkit/pki.ts";

/** One end of an in-memory byte stream that records, for each write, the frames it carried. */
class CountedEnd implements ByteStreamConn {
  readonly readable: ReadableStream<Uint8Array>;
  /** The lengths of the frames in each write, in order. */
  readonly writes: number[][] = [];
  peer!: CountedEnd;
  #input!: ReadableStreamDefaultController<Uint8Array>;
  #open = true;

  constructor() {
    this.readable = new ReadableStream({ start: (c) => void (this.#input = c) });
  }

  static pair(): [CountedEnd, CountedEnd] {
    const [a, b] = [new CountedEnd(), new CountedEnd()];
    [a.peer, b.peer] = [b, a];
    return [a, b];
  }

  write(bytes: Uint8Array): Promise<number> {
    // FrameConnection hands a write whole frames only.
    const frames: number[] = [];
    for (let at = 0; at < bytes.length;) {
      const length = new DataView(bytes.buffer, bytes.byteOffset + at).getUint32(0);
      frames.push(length);
      at += 4 + length;
    }
    this.writes.push(frames);
    this.peer.#deliver(bytes.slice());
    return Promise.resolve(bytes.length);
  }

  #deliver(bytes: Uint8Array): void {
    if (this.#open) this.#input.enqueue(bytes);
  }

  close(): void {
    for (const end of [this, this.peer]) {
      if (end.#open) end.#input.close();
      end.#open = false;
    }
  }
}

Deno.test("serverHandshake() sends server_hello, certificate, certificate_verify and finished in one write", async () => {
  const pki = await makePki(["alice"]);
  const [serverSide, clientSide] = CountedEnd.pair();
  const serverConn = new FrameConnection(serverSide);
  const clientConn = new FrameConnection(clientSide);
  try {
    const [server, client] = await Promise.all([
      serverHandshake(serverConn, {
        identity: await pki.identity("server"),
        trust: pki.trust,
        authenticate: () => Promise.resolve({ registered: false }),
      }),
      clientHandshake(clientConn, {
        identity: await pki.identity("alice"),
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: "alice", password: "a-long-password" },
      }),
    ]);
    assert.equal(server.sessionId, client.sessionId);
    // The flight, then auth_ok, then dh_server with the phase 2 finished.
    assert.deepEqual(serverSide.writes.map((frames) => frames.length), [4, 1, 2]);
  } finally {
    serverConn.close();
    clientConn.close();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
