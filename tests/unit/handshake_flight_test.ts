/**
 * The handshake's syscalls (docs/PERFORMANCE.md, "Session 11: the handshake"): the server's
 * first flight (PROTOCOL §5: server_hello, certificate, certificate_verify, finished) leaves in
 * one write, where it took four, one per await between the messages; each side reads a flight
 * larger than an idle connection's 1 KiB reads in one read, where it took two.
 */
import assert from "node:assert/strict";
import { HANDSHAKE_READ_BYTES } from "../../lib/handshake/common.ts";
import { type ByteStreamConn, FrameConnection } from "../../lib/wire/connection.ts";
import { IDLE_READ_BYTES } from "../../lib/wire/frame.ts";
import { loggedIn } from "../helpers/logged_in.ts";
import { makePki } from "../../testkit/pki.ts";

/**
 * One end of an in-memory byte stream read as a socket is (into the reader's buffer, at most
 * what has arrived), recording for each write the frames it carried and for each read what it
 * asked for and got.
 */
class CountedEnd implements ByteStreamConn {
  /** Unused: FrameConnection reads a source that has `read` through it. */
  readonly readable = new ReadableStream<Uint8Array>();
  /** The lengths of the frames in each write, in order. */
  readonly writes: number[][] = [];
  /** Each read: the bytes asked for and the bytes it returned. */
  readonly reads: { asked: number; got: number }[] = [];
  peer!: CountedEnd;
  #arrived: Uint8Array[] = [];
  #waiting?: () => void;
  #open = true;

  static pair(): [CountedEnd, CountedEnd] {
    const [a, b] = [new CountedEnd(), new CountedEnd()];
    [a.peer, b.peer] = [b, a];
    return [a, b];
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#arrived.length === 0) {
      if (!this.#open) return null;
      await new Promise<void>((resolve) => this.#waiting = resolve);
    }
    let got = 0;
    while (got < into.length && this.#arrived.length > 0) {
      const chunk = this.#arrived[0];
      const n = Math.min(chunk.length, into.length - got);
      into.set(chunk.subarray(0, n), got);
      got += n;
      if (n === chunk.length) this.#arrived.shift();
      else this.#arrived[0] = chunk.subarray(n);
    }
    this.reads.push({ asked: into.length, got });
    return got;
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
    this.#arrived.push(bytes);
    this.#wake();
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  close(): void {
    for (const end of [this, this.peer]) {
      end.#open = false;
      end.#wake();
    }
  }
}

/** A completed handshake over a CountedEnd pair, and both ends. */
async function handshakeOverCountedPair() {
  const pki = await makePki(["alice"]);
  const [serverSide, clientSide] = CountedEnd.pair();
  const serverConn = new FrameConnection(serverSide);
  const clientConn = new FrameConnection(clientSide);
  try {
    const [server, client] = await loggedIn(pki, serverConn, clientConn);
    assert.equal(server.sessionId, client.sessionId);
    return { serverSide, clientSide, serverConn, clientConn };
  } finally {
    serverConn.close();
    clientConn.close();
    await Deno.remove(pki.dir, { recursive: true });
  }
}

Deno.test("serverHandshake() sends server_hello, certificate, certificate_verify and finished in one write", async () => {
  const { serverSide } = await handshakeOverCountedPair();
  // The flight, then auth_ok, then dh_server with the phase 2 finished.
  assert.deepEqual(serverSide.writes.map((frames) => frames.length), [4, 1, 2]);
});

Deno.test("serverHandshake() and clientHandshake() read each flight whole, then read as an idle connection again", async () => {
  const { serverSide, clientSide, serverConn, clientConn } = await handshakeOverCountedPair();
  // The hello (~2.4 KB with the hybrid's share) in the server's first read, the server's flight
  // (~3.7 KB with RSA-2048) in the client's first.
  assert.equal(serverSide.reads[0].asked, HANDSHAKE_READ_BYTES);
  assert.ok(serverSide.reads[0].got > IDLE_READ_BYTES, `hello of ${serverSide.reads[0].got} bytes`);
  const flightBytes = serverSide.writes[0].reduce((sum, length) => sum + 4 + length, 0);
  assert.ok(flightBytes > IDLE_READ_BYTES, `flight of ${flightBytes} bytes`);
  assert.equal(clientSide.reads[0].got, flightBytes, "the server's flight in one read");
  assert.equal(serverConn.quietReadBytes, IDLE_READ_BYTES);
  assert.equal(clientConn.quietReadBytes, IDLE_READ_BYTES);
});
