/**
 * The WebSocket front's close on real sockets (PROTOCOL §7 "Ending with an error", review13): a
 * server socket is let go in bounded time whatever the peer does after the close. node:http's
 * upgrade sockets allow a half-open connection, so a peer that sends its close frame and never
 * its FIN kept the server's socket open for good (review13 finding 1).
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { concat, utf8 } from "../lib/bytes.ts";
import {
  AwaitingClose,
  MAX_AWAITING_CLOSE,
  WebSocketServerConn,
} from "../lib/server/websocket_conn.ts";
import { FrameConnection, LINGER_MAX_BYTES } from "../lib/wire/connection.ts";
import { MAX_FRAME_BYTES } from "../lib/wire/frame.ts";
import { codeOf } from "../lib/errors.ts";

/** How long a test waits for the server's socket to be let go: the 5 s grace and room to spare. */
const LET_GO_WITHIN_MS = 15_000;
/** A grace for tests of the grace itself. */
const SHORT_GRACE_MS = 200;

/** A server's WebSocketServerConn over a real loopback upgrade, and the client's raw socket. */
async function upgraded(awaitingClose = new AwaitingClose()): Promise<{
  server: FrameConnection;
  socket: Socket;
  closed: Promise<void>;
  client: Deno.TcpConn;
  dispose: () => Promise<void>;
}> {
  const http = createServer();
  const accepted = Promise.withResolvers<{ socket: Socket; head: Uint8Array }>();
  http.on("upgrade", (_request: IncomingMessage, socket: Socket, head: Uint8Array) => {
    socket.on("error", () => {});
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n",
    );
    accepted.resolve({ socket, head });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const port = (http.address() as { port: number }).port;
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  await client.write(utf8(
    "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  ));
  const { socket, head } = await accepted.promise;
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  const server = new FrameConnection(new WebSocketServerConn(socket, head, awaitingClose));
  await readUntil(client, "\r\n\r\n");
  return {
    server,
    socket,
    closed,
    client,
    dispose: async () => {
      socket.destroy();
      try {
        client.close();
      } catch {
        // closed by the test
      }
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/** Reads from `conn` until what it read ends with `marker` (the 101 response's end). */
async function readUntil(conn: Deno.Conn, marker: string): Promise<void> {
  let text = "";
  const buffer = new Uint8Array(1024);
  while (!text.endsWith(marker)) {
    const n = await conn.read(buffer.subarray(0, 1));
    if (n === null) throw new Error("the server closed before the upgrade's answer");
    text += String.fromCharCode(buffer[0]);
  }
}

/**
 * A final masked client frame (RFC 6455 §5.2), payload below 64 KiB; the mask is zero (which
 * keeps the bytes) unless given, the length the shortest encoding unless `long` (64 bits).
 */
function clientFrame(
  opcode: number,
  payload: Uint8Array,
  { mask = [0, 0, 0, 0], long = false }: { mask?: number[]; long?: boolean } = {},
): Uint8Array {
  const n = payload.length;
  const header = long
    ? Uint8Array.of(0x80 | opcode, 0x80 | 127, 0, 0, 0, 0, 0, 0, n >> 8, n & 0xff)
    : n < 126
    ? Uint8Array.of(0x80 | opcode, 0x80 | n)
    : Uint8Array.of(0x80 | opcode, 0x80 | 126, n >> 8, n & 0xff);
  return concat(header, Uint8Array.from(mask), payload.map((byte, i) => byte ^ mask[i & 3]));
}

/** The close frame the tests' peer sends, code 1000. */
const PEER_CLOSE = clientFrame(0x8, Uint8Array.of(0x03, 0xe8));

/** Resolves true when `closed` does, false after `ms`. */
async function within(closed: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    closed.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
  ]);
  clearTimeout(timer);
  return outcome;
}

Deno.test("web: a peer that sends its close frame and never its FIN does not hold the server's socket (the session's end)", async () => {
  const { server, closed, client, dispose } = await upgraded();
  try {
    await client.write(clientFrame(0x8, Uint8Array.of(0x03, 0xe8)));
    assert.equal(await server.read(5000), null, "the peer's close ends the stream");
    server.close();
    // On 8fda5f5 the socket was still open after any wait: nothing armed a timer.
    assert.ok(await within(closed, LET_GO_WITHIN_MS), "the server's socket is let go");
  } finally {
    await dispose();
  }
});

Deno.test("web: a peer that sends its close frame while the server lingers after an `error`, and never its FIN, does not hold the server's socket", async () => {
  const { server, closed, client, dispose } = await upgraded();
  try {
    server.send(utf8(JSON.stringify({ type: "error", code: "TOO_MANY_CONNECTIONS" })));
    const lingering = server.lingerClose();
    await client.write(clientFrame(0x8, Uint8Array.of(0x03, 0xe8)));
    await lingering;
    assert.ok(await within(closed, LET_GO_WITHIN_MS), "the server's socket is let go");
  } finally {
    await dispose();
  }
});

Deno.test("web: a server's close waits for the peer's close, counted in the front's AwaitingClose, and is let go without waiting once MAX_AWAITING_CLOSE wait", async () => {
  for (const full of [false, true]) {
    // The grace path itself, shortened: CLOSE_GRACE_MS's 5 s would only make the suite wait.
    const awaitingClose = new AwaitingClose(SHORT_GRACE_MS);
    if (full) awaitingClose.count = MAX_AWAITING_CLOSE;
    const { server, closed, dispose } = await upgraded(awaitingClose);
    try {
      server.close();
      // The peer reads the close and answers nothing: only the server lets the socket go.
      assert.equal(awaitingClose.count, full ? MAX_AWAITING_CLOSE : 1, `full: ${full}`);
      assert.ok(await within(closed, LET_GO_WITHIN_MS), "the server's socket is let go");
      assert.equal(awaitingClose.count, full ? MAX_AWAITING_CLOSE : 0, `full: ${full}`);
    } finally {
      await dispose();
    }
  }
});

Deno.test("web: a peer that keeps sending after the server's close is cut after LINGER_MAX_BYTES, not read for the whole grace", async () => {
  const { server, socket, closed, client, dispose } = await upgraded();
  try {
    server.close();
    const junk = clientFrame(0x2, new Uint8Array(60_000).fill(0x61));
    let sent = 0;
    try {
      while (sent < 8 * LINGER_MAX_BYTES) {
        await client.write(junk);
        sent += junk.length;
      }
    } catch {
      // the server cut the connection: what is tested
    }
    assert.ok(await within(closed, LET_GO_WITHIN_MS), "the server's socket is let go");
    // What it read, beyond the upgrade request, is what it dropped: one chunk past the bound.
    assert.ok(socket.bytesRead <= LINGER_MAX_BYTES + 2 * 65_536, `${socket.bytesRead} bytes read`);
  } finally {
    await dispose();
  }
});

/**
 * Longer than any test runs: a socket let go under it was let go at the peer's close frame, not
 * by the grace (the timer is unref'd, so it holds nothing open).
 */
const NO_GRACE_MS = 3_600_000;

/** Resolves once the server's socket has read `count` more bytes than `from`. */
async function serverHasRead(socket: Socket, from: number, count: number): Promise<void> {
  while (socket.bytesRead < from + count) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("web: a peer that sends data frames and then its close frame, after the server's close, has its TCP closed at its close frame (RFC 6455 §7.1.1), not after the grace, and frees its AwaitingClose place", async () => {
  const awaitingClose = new AwaitingClose(NO_GRACE_MS);
  const { server, closed, client, dispose } = await upgraded(awaitingClose);
  try {
    server.close();
    assert.equal(awaitingClose.count, 1, "the server waits for the peer's close");
    const a = new Uint8Array(300).fill(0x61);
    await client.write(concat(
      clientFrame(0x2, a),
      // A fragmented message, a ping, a pong and a text message: all dropped, none answered.
      concat(Uint8Array.of(0x02, 0x80 | 3), Uint8Array.of(0, 0, 0, 0), a.subarray(0, 3)),
      clientFrame(0x0, a.subarray(0, 4)),
      clientFrame(0x9, utf8("ping")),
      clientFrame(0xa, utf8("pong")),
      clientFrame(0x1, utf8("text")),
      clientFrame(0x2, new Uint8Array(60_000).fill(0x61)),
      clientFrame(0x8, Uint8Array.of(0x03, 0xe8)),
    ));
    // On 922479d the server dropped these bytes unparsed and waited for a FIN or the grace.
    assert.ok(await within(closed, LET_GO_WITHIN_MS), "the server's socket is let go");
    assert.equal(awaitingClose.count, 0, "its place among those awaiting a close is free");
    assert.deepEqual(await readAll(client), [0x88, 2, 0x03, 0xe8], "our close, then nothing");
  } finally {
    await dispose();
  }
});

Deno.test("web: the server's close in the middle of a peer's frame goes on reading at the frame's end, so the peer's close frame after it is seen", async () => {
  const awaitingClose = new AwaitingClose(NO_GRACE_MS);
  const { server, socket, closed, client, dispose } = await upgraded(awaitingClose);
  try {
    // Bytes 0x61 read as a header have reserved bits set: a reader that lost the frame's end
    // would stop parsing and never see the close.
    const frame = clientFrame(0x2, new Uint8Array(1000).fill(0x61));
    const from = socket.bytesRead;
    await client.write(frame.subarray(0, 500));
    await serverHasRead(socket, from, 500);
    server.close();
    await client.write(concat(frame.subarray(500), clientFrame(0x8, new Uint8Array(0))));
    assert.ok(await within(closed, LET_GO_WITHIN_MS), "the server's socket is let go");
    assert.equal(awaitingClose.count, 0);
  } finally {
    await dispose();
  }
});

/** Everything `conn` sends until its end, as numbers (for deepEqual's message). */
async function readAll(conn: Deno.Conn): Promise<number[]> {
  const out: number[] = [];
  const buffer = new Uint8Array(4096);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      return out; // a reset ends it as well
    }
    if (n === null) return out;
    out.push(...buffer.subarray(0, n));
  }
}

Deno.test("web: after the server's close, a frame that would be refused ends the wait for the peer's close at once (PROTOCOL §7), and nothing more is sent", async () => {
  const malformed: [string, Uint8Array][] = [
    ["an unmasked data frame", Uint8Array.of(0x82, 0x01, 0x00)],
    ["a data frame with a reserved bit", Uint8Array.of(0xc2, 0x80, 0, 0, 0, 0)],
    ["a ping of 126 bytes", clientFrame(0x9, new Uint8Array(126))],
    ["an unknown control opcode", clientFrame(0xb, new Uint8Array(0))],
    ["a fragmented ping", Uint8Array.of(0x09, 0x80, 0, 0, 0, 0)],
  ];
  for (const [what, frame] of malformed) {
    const awaitingClose = new AwaitingClose(NO_GRACE_MS);
    const { server, closed, client, dispose } = await upgraded(awaitingClose);
    try {
      server.close();
      // The peer's close after it would go unparsed: on d976a69 the socket waited for the grace.
      await client.write(concat(frame, PEER_CLOSE));
      assert.ok(await within(closed, LET_GO_WITHIN_MS), `${what}: the server's socket is let go`);
      assert.equal(awaitingClose.count, 0, what);
      assert.deepEqual(await readAll(client), [0x88, 2, 0x03, 0xe8], `${what}: our close alone`);
    } finally {
      await dispose();
    }
  }
});

Deno.test("web: after the server's close, the peer's close is seen whatever the frames' encoding: split across reads, after a 64-bit length, under non-zero masks, after a ping begun before our close", async () => {
  const cases: [string, (run: Run) => Promise<void>][] = [
    ["the close byte by byte", async ({ server, socket, client }) => {
      server.close();
      for (const byte of PEER_CLOSE) {
        const from = socket.bytesRead;
        await client.write(Uint8Array.of(byte));
        await serverHasRead(socket, from, 1);
      }
    }],
    ["the close's first byte before ours", async ({ server, socket, client }) => {
      const from = socket.bytesRead;
      await client.write(PEER_CLOSE.subarray(0, 1));
      await serverHasRead(socket, from, 1);
      server.close();
      await client.write(PEER_CLOSE.subarray(1));
    }],
    ["a 64-bit length and non-zero masks", async ({ server, client }) => {
      server.close();
      await client.write(concat(
        clientFrame(0x2, new Uint8Array(300).fill(7), {
          long: true,
          mask: [0x81, 0x82, 0x83, 0x84],
        }),
        clientFrame(0x8, Uint8Array.of(0x03, 0xe8), { mask: [1, 2, 3, 4] }),
      ));
    }],
    ["a ping begun before our close (not answered)", async ({ server, socket, client }) => {
      const ping = clientFrame(0x9, utf8("hello-ping"));
      const from = socket.bytesRead;
      await client.write(ping.subarray(0, 8));
      await serverHasRead(socket, from, 8);
      server.close();
      await client.write(concat(ping.subarray(8), PEER_CLOSE));
    }],
  ];
  for (const [what, run] of cases) {
    const awaitingClose = new AwaitingClose(NO_GRACE_MS);
    const connection = await upgraded(awaitingClose);
    try {
      await run(connection);
      assert.ok(await within(connection.closed, LET_GO_WITHIN_MS), `${what}: let go`);
      assert.equal(awaitingClose.count, 0, what);
      assert.deepEqual(await readAll(connection.client), [0x88, 2, 0x03, 0xe8], what);
    } finally {
      await connection.dispose();
    }
  }
});

type Run = Awaited<ReturnType<typeof upgraded>>;

/** A masked binary frame's header announcing `length` bytes in 64 bits (mask zero), no payload. */
function announcing(length: number, { opcode = 0x2, fin = true } = {}): Uint8Array {
  const header = Uint8Array.of((fin ? 0x80 : 0) | opcode, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0);
  new DataView(header.buffer).setUint32(6, length);
  return concat(header, new Uint8Array(4));
}

Deno.test("web: a message announced above the frame limit ends the wait for the peer's close at once, whether announced before the server's close or after it (PROTOCOL §7)", async () => {
  const over = MAX_FRAME_BYTES + 1;
  // What the peer sends after the announcement: part of the payload, then its close frame.
  const rest = concat(new Uint8Array(1000).fill(0x61), PEER_CLOSE);
  const cases: [string, (run: Run) => Promise<void>][] = [
    ["announced before our close", async ({ server, client }) => {
      await client.write(concat(announcing(over), rest));
      await assert.rejects(server.read(5000), (e) => codeOf(e) === "FRAME_TOO_LARGE");
      server.close();
    }],
    ["announced before our close, and nothing after it", async ({ server, client }) => {
      await client.write(announcing(over));
      await assert.rejects(server.read(5000), (e) => codeOf(e) === "FRAME_TOO_LARGE");
      server.close();
    }],
    [
      "a continuation taking a message past the limit before our close",
      async ({ server, client }) => {
        const first = MAX_FRAME_BYTES - 100;
        await client.write(concat(
          announcing(first, { fin: false }),
          new Uint8Array(first),
          announcing(101, { opcode: 0x0 }),
          rest,
        ));
        await assert.rejects(server.read(5000), (e) => codeOf(e) === "FRAME_TOO_LARGE");
        server.close();
      },
    ],
    ["announced after our close", async ({ server, client }) => {
      server.close();
      await client.write(concat(announcing(over), rest));
    }],
    ["announced after our close, 2^53 bytes", async ({ server, client }) => {
      server.close();
      const huge = Uint8Array.of(0x82, 0x80 | 127, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      await client.write(concat(huge, rest));
    }],
  ];
  for (const [what, run] of cases) {
    const awaitingClose = new AwaitingClose(NO_GRACE_MS);
    const connection = await upgraded(awaitingClose);
    try {
      await run(connection);
      // The payload is never read, so the peer's close after it could never be found: on
      // 82c2781 the socket waited for the FIN or the grace, holding its place among the 64.
      assert.ok(await within(connection.closed, LET_GO_WITHIN_MS), `${what}: let go`);
      assert.equal(awaitingClose.count, 0, what);
      assert.deepEqual(await readAll(connection.client), [0x88, 2, 0x03, 0xe8], what);
    } finally {
      await connection.dispose();
    }
  }
});
