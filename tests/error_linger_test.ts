/**
 * A side that ends a session with an `error` lingers after it (PROTOCOL §7 "Ending with an
 * error"), on real TCP: closing a socket that holds data the peer sent and we did not read makes
 * Linux answer with a reset instead of a FIN, and a reset throws away what our kernel had not
 * sent yet. A peer that is still sending, and slow to read what we sent before the `error`, then
 * sees "connection reset" instead of our code. The server's `terminate` (a certificate revoked
 * or expired mid-session, a cluster that cannot say whether a line was delivered) closed at once.
 */
import assert from "node:assert/strict";
import { fromUtf8 } from "../lib/bytes.ts";
import { SecureChatError } from "../lib/errors.ts";
import { ChatSession } from "../lib/session/session.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import {
  type ByteStreamConn,
  FRAME_HEADER_BYTES,
  FrameConnection,
  LINGER_MAX_BYTES,
} from "../lib/wire/connection.ts";
import { loggedIn } from "./helpers/logged_in.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";
import { makePki } from "../testkit/pki.ts";
import { messageOf } from "./helpers/relay_wire.ts";

/** A logged-in server session and the client's bare end, over a real loopback connection. */
async function tcpSession(pki: Awaited<ReturnType<typeof makePki>>, transcripts: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [accepted, dialled] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
  ]);
  listener.close();
  // A send queue large enough for the backlog below: SLOW_CONSUMER is not what is tested.
  const serverConn = new FrameConnection(accepted, { maxQueuedBytes: 16 * 1024 * 1024 });
  const clientConn = new FrameConnection(dialled);
  const [server, client] = await loggedIn(pki, serverConn, clientConn);
  const session = await ChatSession.start(server, {
    transcripts: transcriptDirectory(transcripts),
  });
  return { session, serverConn, client, clientConn };
}

/** The code of the first `error` the client reads, or how its reading ended without one. */
async function firstErrorRead(
  client: Awaited<ReturnType<typeof tcpSession>>["client"],
  clientConn: FrameConnection,
): Promise<string> {
  try {
    for (;;) {
      const payload = await clientConn.read(10_000);
      if (payload === null) return "end of stream without an error";
      for (const content of client.records.openContents(payload)) {
        const message = messageOf(content);
        if (message.type === "error") return message.code;
        if (message.type === "key_update") client.records.updateReceive();
      }
    }
  } catch (error) {
    return `read failed: ${error instanceof Error ? error.message : error}`;
  }
}

for (const running of [false, true]) {
  Deno.test(
    `ChatSession.terminate(): a client still sending and slow to read gets the server's code on real TCP, not a reset${
      running ? " (the session's loop reading)" : ""
    }`,
    async () => {
      const pki = await makePki(["alice"]);
      const transcripts = await Deno.makeTempDir({ prefix: "securechat-linger-" });
      try {
        for (let round = 0; round < 3; round++) {
          const { session, serverConn, client, clientConn } = await tcpSession(pki, transcripts);
          const run = running ? session.run({ onMessage: () => {} }) : undefined;
          // The server owes the client more than its receive window holds (the client is not
          // reading), all of it taken by the server's kernel: the `error` waits there, behind it.
          for (let turn = 0; turn < 400; turn++) {
            for (let i = 0; i < 64; i++) session.refuse(turn * 64 + i + 1, "RATE_LIMITED");
            await session.drain(5000);
          }
          assert.equal(serverConn.queuedBytes, 0, "the backlog is in the kernel");
          const ending = session.terminate(new SecureChatError("REVOKED", "revoked"));
          // The client is still sending (lines the server will not act on) when the session ends.
          const junk = new Uint8Array(1000).fill(0x61);
          for (let i = 0; i < 64; i++) clientConn.send(junk);
          await clientConn.flush(5000);
          // It reads on a little later: the `error` is behind what it had not read.
          await new Promise((resolve) => setTimeout(resolve, 100));
          const code = await firstErrorRead(client, clientConn);
          clientConn.close();
          await ending;
          assert.equal(code, "REVOKED", `round ${round}`);
          if (run) assert.equal((await run).code, "REVOKED");
        }
      } finally {
        await Deno.remove(transcripts, { recursive: true });
        await Deno.remove(pki.dir, { recursive: true });
      }
    },
  );
}

Deno.test("ChatServer: a refused connection (TOO_MANY_CONNECTIONS) is read after its `error`, not reset under a client still sending", async () => {
  const pki = await makePki(["alice"]);
  const server = await startInProcessServer(pki, {}, {
    admission: { maxConnectionsPerAddress: 1 },
  });
  const port = server.server.port;
  const held = await Deno.connect({ hostname: "127.0.0.1", port });
  const refused = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await waitFor(() => server.logs.some((e) => e.event === "TOO_MANY_CONNECTIONS"));
    const frames = new FrameConnection(refused);
    assert.deepEqual(
      JSON.parse(fromUtf8((await frames.read(5000))!)),
      { type: "error", code: "TOO_MANY_CONNECTIONS" },
    );
    // The client's hello, and what it pipelines after it, arrive after the refusal. A server
    // that has closed answers the first with a reset, and the next write fails.
    for (let i = 0; i < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      frames.send(new Uint8Array(1000).fill(0x61));
      await frames.flush(5000);
      assert.equal(frames.writeError, null, `write ${i}: ${frames.writeError?.cause}`);
    }
    assert.equal(await frames.read(5000), null, "the server's FIN, no reset");
  } finally {
    held.close();
    refused.close();
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

/** A connection whose peer sends nothing and never closes; it records how it was closed. */
class SilentConn implements ByteStreamConn {
  halfClosed = false;
  closed = false;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  readonly readable = new ReadableStream<Uint8Array>({
    start: (controller) => {
      this.#controller = controller;
    },
  });
  write(bytes: Uint8Array): Promise<number> {
    return Promise.resolve(bytes.length);
  }
  closeWrite(): Promise<void> {
    this.halfClosed = true;
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
    this.#controller.close();
  }
}

Deno.test("ChatServer: at most 64 refused connections linger at once; the 65th is closed right after its `error`, and lingering is open again once theirs end", async () => {
  const pki = await makePki(["alice"]);
  const server = await startInProcessServer(pki, {}, {
    admission: { maxConnectionsPerAddress: 1 },
  });
  const serve = (conn: SilentConn) => server.server.serveConnection(conn, "192.0.2.1", "test");
  const held = new SilentConn();
  try {
    serve(held);
    // All served in one go: each refusal starts lingering before any LINGER_MS has passed.
    const refused = Array.from({ length: 65 }, () => new SilentConn());
    for (const conn of refused) serve(conn);
    await waitFor(() => refused.every((conn) => conn.closed));
    const lingered = refused.map((conn) => conn.halfClosed);
    assert.deepEqual(lingered, [...Array(64).fill(true), false]);
    // Their lingers have ended (closed): the next refusal lingers again.
    const next = new SilentConn();
    serve(next);
    await waitFor(() => next.closed);
    assert.ok(next.halfClosed, "the next refusal lingers");
    assert.equal(
      server.logs.filter((entry) => entry.event === "TOO_MANY_CONNECTIONS").length,
      66,
    );
  } finally {
    held.close();
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

/** A connection that counts the bytes read from it. */
class CountingConn implements ByteStreamConn {
  bytesRead = 0;
  constructor(readonly inner: Deno.TcpConn) {}
  get readable(): ReadableStream<Uint8Array> {
    return this.inner.readable;
  }
  async read(into: Uint8Array): Promise<number | null> {
    const got = await this.inner.read(into);
    this.bytesRead += got ?? 0;
    return got;
  }
  write(bytes: Uint8Array): Promise<number> {
    return this.inner.write(bytes);
  }
  close(): void {
    this.inner.close();
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
}

Deno.test("FrameConnection.lingerClose(): a peer streaming after the `error` is read for LINGER_MAX_BYTES, not for the whole of LINGER_MS", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [accepted, dialled] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
  ]);
  listener.close();
  const counted = new CountingConn(accepted);
  const server = new FrameConnection(counted);
  const client = new FrameConnection(dialled, { maxQueuedBytes: 16 * LINGER_MAX_BYTES });
  try {
    server.send(new Uint8Array(16).fill(0x65));
    const lingering = server.lingerClose();
    // Eight times the bound, queued at once: on loopback it arrives well within LINGER_MS.
    const frame = new Uint8Array(60_000).fill(0x61);
    for (let sent = 0; sent < 8 * LINGER_MAX_BYTES; sent += frame.length) client.send(frame);
    await lingering;
    // Whole frames up to the bound, and the one that crossed it, plus what one read had buffered.
    const bound = LINGER_MAX_BYTES + 2 * (FRAME_HEADER_BYTES + frame.length);
    assert.ok(counted.bytesRead <= bound, `${counted.bytesRead} bytes read, bound ${bound}`);
  } finally {
    client.close();
    server.close();
  }
});

async function waitFor(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(done(), "timed out waiting");
}
