/**
 * The handshake's syscalls (docs/PERFORMANCE.md, "Session 11: the handshake"): the server's
 * first flight (PROTOCOL §5: server_hello, certificate, certificate_verify, finished) leaves in
 * one write, where it took four, one per await between the messages; each side reads a flight
 * larger than an idle connection's 1 KiB reads in one read, where it took two.
 */
import assert from "node:assert/strict";
import { HANDSHAKE_READ_BYTES } from "../../lib/handshake/common.ts";
import { FrameConnection } from "../../lib/wire/connection.ts";
import { IDLE_READ_BYTES } from "../../lib/wire/frame.ts";
import { loggedIn } from "../helpers/logged_in.ts";
import { MemoryPipeEnd } from "../helpers/memory_pipe.ts";
import { makePki } from "../../testkit/pki.ts";

/** A completed handshake over an in-memory pipe, and both ends (their writes and reads recorded). */
async function handshakeOverPipe() {
  const pki = await makePki(["alice"]);
  const [serverSide, clientSide] = MemoryPipeEnd.pair();
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
  const { serverSide } = await handshakeOverPipe();
  // The flight, then auth_ok, then dh_server with the phase 2 finished.
  assert.deepEqual(serverSide.writes.map((frames) => frames.length), [4, 1, 2]);
});

Deno.test("serverHandshake() and clientHandshake() read each flight whole, then read as an idle connection again", async () => {
  const { serverSide, clientSide, serverConn, clientConn } = await handshakeOverPipe();
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
