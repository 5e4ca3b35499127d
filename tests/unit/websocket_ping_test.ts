/**
 * The web front's answers to pings (review10 R10-4): pings never reach FrameReader, so no
 * send-queue bound holds their pongs, and node's socket buffers whatever is written. A peer that
 * pings and never reads must cost the server a bounded amount, not a pong per ping.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import {
  AwaitingClose,
  CONTROL_FRAME_BURST,
  WebSocketServerConn,
} from "../../lib/server/websocket_conn.ts";

/** A socket whose peer reads nothing until told to: what is written stays queued. */
class UnreadSocket extends EventEmitter {
  constructor(readonly writableHighWaterMark = 16_384) {
    super();
  }
  writableLength = 0;
  destroyed = false;
  writable = true;
  readonly written: Uint8Array[] = [];
  setNoDelay(): void {}
  pause(): void {}
  resume(): void {}
  end(): void {}
  destroy(): void {
    this.destroyed = true;
  }
  write(bytes: Uint8Array): boolean {
    this.written.push(bytes);
    this.writableLength += bytes.length;
    return this.writableLength < this.writableHighWaterMark;
  }
  /** The peer reads everything queued. */
  drained(): void {
    this.writableLength = 0;
    this.emit("drain");
  }
}

/** A masked client ping carrying `payload` (RFC 6455 §5.2; a zero mask keeps the bytes). */
function ping(payload: Uint8Array): Uint8Array {
  return Uint8Array.of(0x89, 0x80 | payload.length, 0, 0, 0, 0, ...payload);
}

/** An empty masked client pong. */
const PONG = Uint8Array.of(0x8a, 0x80, 0, 0, 0, 0);

const pongs = (socket: UnreadSocket) => socket.written.filter((frame) => frame[0] === 0x8a);

Deno.test("web: a peer that pings and never reads gets pongs up to the socket's high-water mark, then only the latest ping's, once it drains", () => {
  // A mark that the pings a peer may send at once (CONTROL_FRAME_BURST) go past.
  const socket = new UnreadSocket(1024);
  new WebSocketServerConn(socket as unknown as Socket, new Uint8Array(0), new AwaitingClose());
  const count = CONTROL_FRAME_BURST;
  const payload = (i: number) => Uint8Array.of(i >> 8, i & 0xff, ...new Uint8Array(100));
  for (let i = 0; i < count; i++) socket.emit("data", ping(payload(i)));
  const before = pongs(socket).length;
  // 104-byte pongs fill 1 KiB after ~10 of them; on ab17fdb every ping's was written.
  assert.ok(before <= Math.ceil(socket.writableHighWaterMark / 104), `${before} pongs queued`);
  socket.drained();
  const after = pongs(socket);
  assert.equal(after.length, before + 1);
  assert.deepEqual(after.at(-1)!.subarray(2), payload(count - 1));
});

Deno.test("web: a peer that reads gets a pong for every ping, up to CONTROL_FRAME_BURST at once", () => {
  const socket = new UnreadSocket();
  new WebSocketServerConn(socket as unknown as Socket, new Uint8Array(0), new AwaitingClose());
  for (let i = 0; i < CONTROL_FRAME_BURST; i++) {
    socket.emit("data", ping(Uint8Array.of(i & 0xff)));
    socket.drained();
  }
  assert.equal(pongs(socket).length, CONTROL_FRAME_BURST);
  assert.ok(!socket.written.some((frame) => frame[0] === 0x88), "no close");
});

Deno.test("web: a peer that floods the server with pongs is refused (PROTOCOL_ERROR, closed with 1008), not read without end", async () => {
  const socket = new UnreadSocket();
  const conn = new WebSocketServerConn(
    socket as unknown as Socket,
    new Uint8Array(0),
    new AwaitingClose(),
  );
  // 1000 at once: the bucket refills 4 a second, so only a 4-minute stall could let them through.
  // On d976a69 every one was parsed and dropped, and nothing was ever refused (review14a).
  const flood = new Uint8Array(PONG.length * 1000);
  for (let i = 0; i < 1000; i++) flood.set(PONG, i * PONG.length);
  socket.emit("data", flood);
  assert.deepEqual(
    socket.written.map((frame) => [...frame]),
    [[0x88, 2, 0x03, 0xf0]],
    "one close, 1008",
  );
  await assert.rejects(conn.readable.getReader().read(), { code: "PROTOCOL_ERROR" });
});

/** The timers `run` arms, by delay, and whether each was cleared; none of them fires. */
function timersArmedBy(run: () => void): { ms: number; cleared: boolean }[] {
  const armed: { ms: number; cleared: boolean }[] = [];
  const { setTimeout: realSet, clearTimeout: realClear } = globalThis;
  const realUnref = Deno.unrefTimer;
  globalThis.setTimeout =
    ((_: () => void, ms: number) =>
      armed.push({ ms, cleared: false })) as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((id?: number) => {
    if (id !== undefined) armed[id - 1].cleared = true;
  }) as typeof clearTimeout;
  Deno.unrefTimer = () => {};
  try {
    run();
  } finally {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
    Deno.unrefTimer = realUnref;
  }
  return armed;
}

Deno.test("web: the peer's close late in the grace does not move the socket's let-go deadline later (review14a finding 2)", () => {
  const socket = new UnreadSocket();
  // A grace of 0 stands for "the peer's close comes at its very end": any later deadline is later.
  const conn = new WebSocketServerConn(
    socket as unknown as Socket,
    new Uint8Array(0),
    new AwaitingClose(0),
  );
  const timers = timersArmedBy(() => {
    conn.close();
    socket.emit("data", Uint8Array.of(0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8));
  });
  // On d976a69 the close frame replaced the grace's timer with one of LINGER_MS (500 ms).
  assert.deepEqual(timers, [{ ms: 0, cleared: false }]);
});
