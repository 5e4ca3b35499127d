/**
 * A session whose write fails because the peer ended it reports the peer's reason, not the
 * failed write (tests/faults_test.ts "a full disk" flaked on this race once, session 11): the
 * server sent `error` TRANSCRIPT_IO and closed; the client, still sending, met the reset before
 * its read loop had taken the `error`, and reported "connection lost while writing".
 */
import assert from "node:assert/strict";
import { utf8 } from "../../lib/bytes.ts";
import { ChatSession } from "../../lib/session/session.ts";
import { transcriptDirectory } from "../../lib/transcript/file_storage.ts";
import { type ByteStreamConn, FrameConnection } from "../../lib/wire/connection.ts";
import { loggedIn } from "../helpers/logged_in.ts";
import { makePki } from "../../testkit/pki.ts";

/**
 * One end of an in-memory byte stream that behaves as a TCP socket does when the peer resets it:
 * what arrived before stays readable, writes fail. Reads can be held back, so a test decides
 * whether the reader takes a frame before or after a write fails.
 */
class ResettableEnd implements ByteStreamConn {
  /** Unused: FrameConnection reads a source that has `read` through it. */
  readonly readable = new ReadableStream<Uint8Array>();
  peer!: ResettableEnd;
  /** Reads wait while this is set, whatever has arrived. */
  held = false;
  #arrived: Uint8Array[] = [];
  #waiting?: () => void;
  /** Our own close: reads end at once. */
  #closed = false;
  /** The peer reset the connection: writes fail, what arrived is still read. */
  #reset = false;

  static pair(): [ResettableEnd, ResettableEnd] {
    const [a, b] = [new ResettableEnd(), new ResettableEnd()];
    [a.peer, b.peer] = [b, a];
    return [a, b];
  }

  async read(into: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#closed) return null;
      if (!this.held && this.#arrived.length > 0) break;
      if (!this.held && this.#reset) return null;
      await new Promise<void>((resolve) => this.#waiting = resolve);
    }
    const chunk = this.#arrived[0];
    const n = Math.min(chunk.length, into.length);
    into.set(chunk.subarray(0, n));
    if (n === chunk.length) this.#arrived.shift();
    else this.#arrived[0] = chunk.subarray(n);
    return n;
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#reset || this.#closed) {
      return Promise.reject(new Deno.errors.ConnectionReset("connection reset by peer"));
    }
    this.peer.#arrived.push(bytes.slice());
    this.peer.wake();
    return Promise.resolve(bytes.length);
  }

  /** This end goes away abruptly: the other end's writes fail from now on. */
  resetPeer(): void {
    this.#closed = true;
    this.peer.#reset = true;
    this.peer.wake();
  }

  release(): void {
    this.held = false;
    this.wake();
  }

  wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  close(): void {
    this.#closed = true;
    this.wake();
  }
}

/** A client session over a ResettableEnd pair, after a real handshake. */
async function sessionPair() {
  const pki = await makePki(["alice"]);
  const transcripts = await Deno.makeTempDir({ prefix: "securechat-peer-error-" });
  const [serverSide, clientSide] = ResettableEnd.pair();
  const serverConn = new FrameConnection(serverSide);
  const clientConn = new FrameConnection(clientSide);
  const [server, client] = await loggedIn(pki, serverConn, clientConn);
  const session = await ChatSession.start(client, {
    transcripts: transcriptDirectory(transcripts),
    serverName: "localhost",
  });
  return {
    server,
    serverSide,
    serverConn,
    clientSide,
    clientConn,
    session,
    running: session.run({ onMessage: () => {} }),
    async dispose() {
      serverConn.close();
      clientConn.close();
      await Deno.remove(transcripts, { recursive: true });
      await Deno.remove(pki.dir, { recursive: true });
    },
  };
}

/** The connection is reset under the client's feet: its first line's write fails, the next line ends the session. */
async function sendIntoReset(pair: Awaited<ReturnType<typeof sessionPair>>): Promise<void> {
  pair.serverSide.resetPeer();
  const first = await pair.session.send({ kind: "text", text: "line 1" }).catch((e) => e);
  assert.equal(typeof first, "number", String(first));
  await pair.clientConn.flush();
  assert.ok(pair.clientConn.writeError, "the write failed");
  await assert.rejects(pair.session.send({ kind: "text", text: "line 2" }), /lost while writing/);
}

Deno.test("ChatSession: a send that fails because the server went reports the server's error, read after the failure", async () => {
  const pair = await sessionPair();
  try {
    // The server's `error` arrives, but the client's reader has not taken it yet when the
    // connection is reset and the client's next lines are written.
    pair.clientSide.held = true;
    pair.serverConn.send(
      pair.server.records.seal(
        utf8(JSON.stringify({ type: "error", code: "TRANSCRIPT_IO", message: "disk full" })),
      ),
    );
    await pair.serverConn.flush();
    await sendIntoReset(pair);
    pair.clientSide.release();
    const end = await pair.running;
    assert.equal(end.outcome, "error");
    assert.equal(end.code, "TRANSCRIPT_IO", end.message);
    assert.equal(end.fromPeer, true);
  } finally {
    await pair.dispose();
  }
});

Deno.test("ChatSession: a send that fails because the server went without a word reports the failed write, after the grace", async () => {
  const pair = await sessionPair();
  try {
    // Nothing ever arrives: the session does not wait past PEER_ERROR_GRACE_MS for it.
    pair.clientSide.held = true;
    await sendIntoReset(pair);
    const end = await pair.running;
    assert.equal(end.outcome, "error");
    assert.equal(end.code, "PROTOCOL_ERROR");
    assert.match(end.message ?? "", /connection lost while writing/);
    assert.equal(end.fromPeer, undefined);
  } finally {
    await pair.dispose();
  }
});
