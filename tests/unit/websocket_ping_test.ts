/**
 * The web front's answers to pings (review10 R10-4): pings never reach FrameReader, so no
 * send-queue bound holds their pongs, and node's socket buffers whatever is written. A peer that
 * pings and never reads must cost the server a bounded amount, not a pong per ping.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { AwaitingClose, WebSocketServerConn } from "../../lib/server/websocket_conn.ts";

/** A socket whose peer reads nothing until told to: what is written stays queued. */
class UnreadSocket extends EventEmitter {
  readonly writableHighWaterMark = 16_384;
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

const pongs = (socket: UnreadSocket) => socket.written.filter((frame) => frame[0] === 0x8a);

Deno.test("web: a peer that pings and never reads gets pongs up to the socket's high-water mark, then only the latest ping's, once it drains", () => {
  const socket = new UnreadSocket();
  new WebSocketServerConn(socket as unknown as Socket, new Uint8Array(0), new AwaitingClose());
  const count = 10_000;
  const payload = (i: number) => Uint8Array.of(i >> 8, i & 0xff, ...new Uint8Array(100));
  for (let i = 0; i < count; i++) socket.emit("data", ping(payload(i)));
  const before = pongs(socket).length;
  // 104-byte pongs fill 16 KiB after ~158 of them; on ab17fdb every one of the 10,000 was written.
  assert.ok(before <= Math.ceil(socket.writableHighWaterMark / 104), `${before} pongs queued`);
  socket.drained();
  const after = pongs(socket);
  assert.equal(after.length, before + 1);
  assert.deepEqual(after.at(-1)!.subarray(2), payload(count - 1));
});

Deno.test("web: a peer that reads gets a pong for every ping", () => {
  const socket = new UnreadSocket();
  new WebSocketServerConn(socket as unknown as Socket, new Uint8Array(0), new AwaitingClose());
  for (let i = 0; i < 500; i++) {
    socket.emit("data", ping(Uint8Array.of(i & 0xff)));
    socket.drained();
  }
  assert.equal(pongs(socket).length, 500);
});
