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
import { FrameConnection } from "../../lib/wire/connection.ts";
import { loggedIn } from "../helpers/logged_in.ts";
import { MemoryPipeEnd } from "../helpers/memory_pipe.ts";
import { makePki } from "../../testkit/pki.ts";

/** A client session over an in-memory pipe, after a real handshake. */
async function sessionPair() {
  const pki = await makePki(["alice"]);
  const transcripts = await Deno.makeTempDir({ prefix: "securechat-peer-error-" });
  const [serverSide, clientSide] = MemoryPipeEnd.pair();
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

/**
 * The connection is reset under the client's feet (the server's end goes, its FrameConnection not
 * told): the client's first line's write fails, the next line ends the session.
 */
async function sendIntoReset(pair: Awaited<ReturnType<typeof sessionPair>>): Promise<void> {
  pair.serverSide.close();
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
    pair.clientSide.holdReads();
    pair.serverConn.send(
      pair.server.records.seal(
        utf8(JSON.stringify({ type: "error", code: "TRANSCRIPT_IO", message: "disk full" })),
      ),
    );
    await pair.serverConn.flush();
    await sendIntoReset(pair);
    pair.clientSide.releaseReads();
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
    pair.clientSide.holdReads();
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
