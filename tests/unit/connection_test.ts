/** FrameConnection's send queue: frames queued together leave in one write, in order. */
import assert from "node:assert/strict";
import { concat } from "../../lib/bytes.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { type ByteStreamConn, FrameConnection } from "../../lib/wire/connection.ts";
import { encodeFrame } from "../../lib/wire/frame.ts";
import { nextTurn } from "../../lib/turn.ts";

/** A connection whose writes wait for `release()` (or fail), recording what each was given. */
function heldConn() {
  const writes: Uint8Array[] = [];
  let release: (() => void) | null = null;
  let failing = false;
  const conn: ByteStreamConn = {
    readable: new ReadableStream(),
    write(bytes: Uint8Array): Promise<number> {
      writes.push(bytes.slice());
      if (failing) return Promise.reject(new Error("reset by peer"));
      return new Promise((resolve) => release = () => resolve(bytes.length));
    },
    close() {},
  };
  return {
    conn,
    writes,
    release: () => release?.(),
    fail: () => failing = true,
  };
}

const payload = (i: number) => new Uint8Array(10 + i).fill(i + 1);

Deno.test("FrameConnection.send(): frames queued in one job leave in one write, in order", async () => {
  const held = heldConn();
  const fc = new FrameConnection(held.conn);
  for (let i = 0; i < 10; i++) fc.send(payload(i));
  await Promise.resolve(); // the write starts after the job that queued
  await Promise.resolve();
  assert.equal(held.writes.length, 1);
  assert.deepEqual(
    held.writes[0],
    concat(...Array.from({ length: 10 }, (_, i) => encodeFrame(payload(i)))),
  );
  // Frames queued while that write is in flight go out together in the next one.
  for (let i = 10; i < 15; i++) fc.send(payload(i));
  held.release();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(held.writes.length, 2);
  assert.deepEqual(
    held.writes[1],
    concat(...[10, 11, 12, 13, 14].map((i) => encodeFrame(payload(i)))),
  );
  held.release();
  await fc.flush(1000);
  assert.equal(fc.queuedBytes, 0);
  fc.close();
});

Deno.test("FrameConnection.sendSealed(): a frame written into its place goes in order with send()'s; one that throws is not queued", async () => {
  const held = heldConn();
  const fc = new FrameConnection(held.conn);
  const write = (i: number) => (into: Uint8Array) => into.set(payload(i));
  fc.sendSealed(payload(1).length, write(1));
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(held.writes, [encodeFrame(payload(1))]);
  fc.send(payload(2));
  fc.sendSealed(payload(3).length, write(3));
  assert.throws(() =>
    fc.sendSealed(100, () => {
      throw new Error("the seal failed");
    })
  );
  fc.send(payload(4));
  held.release();
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(held.writes[1], concat(...[2, 3, 4].map((i) => encodeFrame(payload(i)))));
  held.release();
  await fc.flush(1000);
  assert.equal(fc.queuedBytes, 0);
  fc.close();
});

Deno.test("FrameConnection: a batch's buffer, once written, is another batch's; what each write was given stays whole until it settles", async () => {
  // Batches of one connection after another's, of sizes that need a larger buffer midway: each
  // write sees exactly its frames, though the buffers are reused (spare batches).
  const seen: Uint8Array[] = [];
  const views: Uint8Array[] = [];
  let release: (() => void) | null = null;
  const conn: ByteStreamConn = {
    readable: new ReadableStream(),
    write(bytes: Uint8Array): Promise<number> {
      views.push(bytes);
      seen.push(bytes.slice());
      return new Promise((resolve) => release = () => resolve(bytes.length));
    },
    close() {},
  };
  const fc = new FrameConnection(conn);
  const expected = [encodeFrame(payload(0))];
  fc.send(payload(0));
  await new Promise((r) => setTimeout(r, 0)); // its write in flight
  for (let round = 1; round < 8; round++) {
    const frames = Array.from({ length: round * 3 }, (_, i) => payload(round * 40 + i * 90));
    for (const frame of frames) fc.send(frame); // into another batch: the last is being written
    expected.push(concat(...frames.map((p) => encodeFrame(p))));
    assert.deepEqual(views.at(-1), seen.at(-1), `round ${round}: the write in flight is whole`);
    release!();
    await new Promise((r) => setTimeout(r, 0)); // that write done, this round's in flight
  }
  release!();
  await fc.flush(1000);
  assert.deepEqual(seen, expected);
  fc.close();
});

Deno.test("FrameConnection.send(): a failed write is the error of every later send; the queue empties", async () => {
  const held = heldConn();
  held.fail();
  const fc = new FrameConnection(held.conn);
  fc.send(payload(1));
  fc.send(payload(2));
  await fc.flush(1000);
  assert.equal(fc.queuedBytes, 0);
  assert.ok(fc.writeError instanceof SecureChatError);
  assert.throws(() => fc.send(payload(3)), (e) => e === fc.writeError);
  fc.close();
});

Deno.test("FrameConnection: 150,000 sealed-record-sized frames queued behind a write that waits leave in the next write, whole (review10 R10-2)", async () => {
  // A peer that stops reading for a while and then reads: everything queued meanwhile goes in
  // one write. The smallest frame a session sends is a sealed record, 276 bytes; 150,000 fit a
  // `serve --send-queue` of 48 MiB. Spreading them into one call's arguments threw a RangeError
  // in the writer (past ~125,000), an unhandled rejection that ends the process.
  const held = heldConn();
  const fc = new FrameConnection(held.conn, { maxQueuedBytes: 48 * 1024 * 1024 });
  fc.send(payload(0));
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(held.writes.length, 1); // in flight: the peer is not reading
  const record = new Uint8Array(272).fill(7);
  for (let i = 0; i < 150_000; i++) fc.send(record);
  held.release();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(held.writes.length, 2);
  assert.equal(held.writes[1].length, 150_000 * 276);
  assert.deepEqual(held.writes[1].subarray(-276), encodeFrame(record));
  held.release();
  await fc.flush(1000);
  assert.equal(fc.queuedBytes, 0);
  fc.close();
});

/** A connection whose writes complete in their call, as a loopback socket's do. */
function eagerConn() {
  const writes: Uint8Array[] = [];
  const conn: ByteStreamConn = {
    readable: new ReadableStream(),
    write(bytes: Uint8Array): Promise<number> {
      writes.push(bytes.slice());
      return Promise.resolve(bytes.length);
    },
    close() {},
  };
  return { conn, writes };
}

/** A few microtasks: what a sender's `await send()` loop takes between two frames. */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

Deno.test("FrameConnection.send(): a frame alone leaves at once; frames queued after that write in the same turn leave together at its end", async () => {
  await nextTurn(); // a turn of our own
  const eager = eagerConn();
  const fc = new FrameConnection(eager.conn);
  fc.send(payload(1));
  await microtasks();
  assert.deepEqual(eager.writes, [encodeFrame(payload(1))], "alone: written without waiting");
  // A sender that makes frame after frame without yielding (a loop awaiting each send with
  // Ed25519 keys): each of these was its own write (a syscall) before.
  for (let i = 2; i <= 5; i++) {
    fc.send(payload(i));
    await microtasks();
  }
  assert.equal(eager.writes.length, 1, "the rest of the turn waits for its end");
  assert.equal(fc.queuedBytes, [2, 3, 4, 5].reduce((n, i) => n + 4 + payload(i).length, 0));
  // Two turns: the order in which the event loop delivers two channels' messages is not fixed.
  await nextTurn();
  await nextTurn();
  assert.deepEqual(eager.writes.slice(1), [
    concat(...[2, 3, 4, 5].map((i) => encodeFrame(payload(i)))),
  ]);
  assert.equal(fc.queuedBytes, 0);
  // After a turn with nothing sent, a frame is alone again: at once.
  for (let i = 0; i < 3; i++) await nextTurn();
  fc.send(payload(6));
  await microtasks();
  assert.deepEqual(eager.writes.at(-1), encodeFrame(payload(6)));
  fc.close();
});

Deno.test("FrameConnection.send(): after a read completed, the next frame leaves at once (a new turn: a line answering what was just read)", async () => {
  await nextTurn();
  const eager = eagerConn();
  const incoming = encodeFrame(payload(9));
  let delivered = false;
  const fc = new FrameConnection({
    ...eager.conn,
    read(into: Uint8Array): Promise<number | null> {
      if (delivered) return new Promise(() => {}); // nothing more
      delivered = true;
      into.set(incoming);
      return Promise.resolve(incoming.length);
    },
  });
  fc.send(payload(1));
  await microtasks();
  assert.deepEqual(await fc.read(), payload(9));
  fc.send(payload(2));
  await microtasks();
  assert.deepEqual(eager.writes, [encodeFrame(payload(1)), encodeFrame(payload(2))]);
  fc.close();
});

Deno.test("FrameConnection.flush(): frames waiting for the turn's end are written now", async () => {
  await nextTurn();
  const eager = eagerConn();
  const fc = new FrameConnection(eager.conn);
  fc.send(payload(1));
  await microtasks();
  fc.send(payload(2));
  await fc.flush(1000);
  assert.deepEqual(eager.writes, [encodeFrame(payload(1)), encodeFrame(payload(2))]);
  assert.equal(fc.queuedBytes, 0);
  fc.close();
});
