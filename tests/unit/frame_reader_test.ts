/**
 * FrameReader over a source that reads into our buffer (Deno.Conn's read): an idle
 * connection's pending read must hold a small buffer, not a maximum frame, and a
 * frame must come out whole however the bytes arrive.
 */
import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import {
  BUSY_READ_BYTES,
  type ByteReader,
  FrameReader,
  IDLE_READ_BYTES,
  MAX_FRAME_BYTES,
} from "../../lib/wire/frame.ts";

/** A source serving `bytes` in pieces of at most `piece`, recording each buffer size asked for. */
function scripted(bytes: Uint8Array, piece: number): ByteReader & { asked: number[] } {
  let at = 0;
  const asked: number[] = [];
  return {
    asked,
    read(into: Uint8Array): Promise<number | null> {
      asked.push(into.length);
      if (at === bytes.length) return Promise.resolve(null);
      const n = Math.min(piece, into.length, bytes.length - at);
      into.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

function frame(length: number, fill: number): Uint8Array {
  const out = new Uint8Array(4 + length).fill(fill);
  new DataView(out.buffer).setUint32(0, length);
  return out;
}

function joined(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("FrameReader(ByteReader): small and maximum frames whole, in any pieces; idle reads ask for IDLE_READ_BYTES", async () => {
  for (const piece of [1, 7, 1000, 1 << 20]) {
    const source = scripted(joined(frame(2, 1), frame(MAX_FRAME_BYTES, 2), frame(300, 3)), piece);
    const reader = new FrameReader(source);
    assert.deepEqual(await reader.read(), new Uint8Array(2).fill(1));
    assert.deepEqual(await reader.read(), new Uint8Array(MAX_FRAME_BYTES).fill(2));
    assert.deepEqual(await reader.read(), new Uint8Array(300).fill(3));
    assert.equal(await reader.read(), null);
    // Only a frame in progress may ask for more than the idle size, and never above one frame.
    assert.equal(source.asked[0], IDLE_READ_BYTES);
    assert.equal(source.asked.at(-1), IDLE_READ_BYTES);
    assert.ok(Math.max(...source.asked) <= MAX_FRAME_BYTES + 4);
  }
});

Deno.test("FrameReader(ByteReader): reads that come back full ask for BUSY_READ_BYTES, a short one goes back to idle", async () => {
  const frames = Array.from({ length: 250 }, (_, i) => frame(600, i));
  const source = scripted(joined(...frames), 1 << 20); // everything is waiting at once
  const reader = new FrameReader(source);
  for (let i = 0; i < frames.length; i++) {
    assert.deepEqual(await reader.read(), new Uint8Array(600).fill(i));
  }
  assert.equal(await reader.read(), null);
  // 150 KB waiting: one idle-sized read, then busy-sized ones, then the short tail.
  assert.deepEqual(source.asked.slice(0, 2), [IDLE_READ_BYTES, BUSY_READ_BYTES]);
  assert.ok(source.asked[2] >= BUSY_READ_BYTES, "then the rest of that buffer");
  assert.ok(source.asked.length <= 8, `${source.asked.length} reads for 150 KB`);
  assert.equal(source.asked.at(-1), IDLE_READ_BYTES, "the read after a short one is idle-sized");
});

Deno.test("FrameReader(ByteReader): a busy peer's reads go into the same buffer, frames straddling them", async () => {
  // A sender's records of ~15 KB, all waiting: every full read leaves part of a frame behind.
  // A new buffer per read (calloc'd, zeroed, faulted in) was the floor's read cost.
  const frames = Array.from({ length: 60 }, (_, i) => frame(15_000 + i, i));
  const source = scripted(joined(...frames), 1 << 22);
  const buffers = new Set<ArrayBufferLike>();
  const reader = new FrameReader({
    read(into: Uint8Array): Promise<number | null> {
      buffers.add(into.buffer);
      return source.read(into);
    },
  });
  for (let i = 0; i < frames.length; i++) {
    assert.deepEqual(await reader.read(), new Uint8Array(15_000 + i).fill(i));
  }
  assert.equal(await reader.read(), null);
  assert.ok(source.asked.length >= 14, `${source.asked.length} reads`);
  assert.ok(buffers.size <= 3, `${buffers.size} buffers for ${source.asked.length} reads`);
});

Deno.test("FrameReader.reuse: a busy reader copies the next frame that fits into the buffer given back; an idle one keeps none", async () => {
  const sizes = [5000, 4000, 4500, 6000, 100];
  const frames = sizes.map((size, i) => frame(size, i + 1));
  const reader = new FrameReader(scripted(joined(...frames), 1 << 20)); // all waiting at once
  const got: Uint8Array[] = [];
  for (let i = 0; i < sizes.length; i++) {
    const payload = await reader.read();
    assert.ok(payload);
    assert.deepEqual(payload, new Uint8Array(sizes[i]).fill(i + 1), `frame ${i}`);
    got.push(payload);
    reader.reuse(payload);
  }
  // 4000 and 4500 fit 5000's buffer (given back, and back again); 6000 does not; 100 fits 6000's.
  assert.equal(got[1].buffer, got[0].buffer);
  assert.equal(got[2].buffer, got[0].buffer);
  assert.notEqual(got[3].buffer, got[0].buffer);
  assert.equal(got[4].buffer, got[3].buffer);
  // The last read came back short: idle, the reader keeps no buffer given back.
  const idle = new FrameReader(scripted(joined(frame(300, 1), frame(200, 2)), 304));
  const first = await idle.read();
  idle.reuse(first!);
  assert.notEqual((await idle.read())!.buffer, first!.buffer);
});

Deno.test("FrameReader.hasFrame: true only while a whole frame is buffered", async () => {
  const bytes = joined(frame(10, 1), frame(20, 2), frame(30, 3));
  const reader = new FrameReader(scripted(bytes.subarray(0, bytes.length - 5), 1 << 20));
  assert.equal(reader.hasFrame, false, "nothing read yet");
  await reader.read();
  assert.equal(reader.hasFrame, true, "the second frame came in the same read");
  await reader.read();
  assert.equal(reader.hasFrame, false, "the third is cut short");
});

Deno.test("FrameReader(ByteReader): an end inside a frame is PROTOCOL_ERROR, an oversize length FRAME_TOO_LARGE", async () => {
  const cut = new FrameReader(scripted(frame(10, 1).subarray(0, 9), 3));
  await assert.rejects(
    cut.read(),
    (e) => e instanceof SecureChatError && e.code === "PROTOCOL_ERROR",
  );
  const huge = new FrameReader(scripted(new Uint8Array([0xff, 0xff, 0xff, 0xff]), 4));
  await assert.rejects(
    huge.read(),
    (e) => e instanceof SecureChatError && e.code === "FRAME_TOO_LARGE",
  );
});

Deno.test("FrameReader: a read abandoned by its caller hands its frame to the next read", async () => {
  let deliver: (n: number) => void = () => {};
  let calls = 0;
  const reader = new FrameReader({
    read(into: Uint8Array): Promise<number | null> {
      calls++;
      into.set(frame(1, 9));
      return new Promise((resolve) => deliver = resolve);
    },
  });
  const first = reader.read(); // the caller gives up on it (a timeout)
  const second = reader.read();
  assert.equal(calls, 1, "two reads in flight on one socket would race for its bytes");
  deliver(5);
  assert.deepEqual(await second, new Uint8Array([9]));
  assert.deepEqual(await first, new Uint8Array([9]));
});

Deno.test("FrameReader.read(timeoutMs): TIMEOUT when no whole frame comes in time; the frame then goes to the next read", async () => {
  let deliver: (n: number | null) => void = () => {};
  const reader = new FrameReader({
    read(into: Uint8Array): Promise<number | null> {
      into.set(frame(1, 7));
      return new Promise((resolve) => deliver = resolve);
    },
  });
  await assert.rejects(
    reader.read(20),
    (e) => e instanceof SecureChatError && e.code === "TIMEOUT",
  );
  const next = reader.read(1000);
  deliver(5);
  assert.deepEqual(await next, new Uint8Array([7]));
});

Deno.test("FrameReader.read(timeoutMs): callers waiting at once share one read and the earliest deadline", async () => {
  let calls = 0;
  const reader = new FrameReader({
    read(): Promise<number | null> {
      calls++;
      return new Promise(() => {}); // the peer stays silent
    },
  });
  const patient = reader.read(60_000);
  const hurried = reader.read(20);
  assert.equal(calls, 1);
  for (const read of [hurried, patient]) {
    await assert.rejects(read, (e) => e instanceof SecureChatError && e.code === "TIMEOUT");
  }
});

Deno.test("FrameReader(ByteReader): a frame trickled a byte per read fills one buffer of its size, not one per byte", async () => {
  // The attack: a peer sends a maximum frame one byte per TCP segment, before any handshake.
  // A new buffer per read, sized for the rest of the frame and pinned until the frame was
  // whole, held ~2 GiB for one 64 KiB frame (a real serve: +277 MB RSS for two such peers
  // after 30 KB each, in under 2 s).
  const source = scripted(joined(frame(MAX_FRAME_BYTES, 4), frame(5000, 5)), 1);
  const buffers = new Set<ArrayBufferLike>();
  const reader = new FrameReader({
    read(into: Uint8Array): Promise<number | null> {
      buffers.add(into.buffer);
      return source.read(into);
    },
  });
  assert.deepEqual(await reader.read(), new Uint8Array(MAX_FRAME_BYTES).fill(4));
  assert.deepEqual(await reader.read(), new Uint8Array(5000).fill(5));
  let allocated = 0;
  for (const buffer of buffers) allocated += buffer.byteLength;
  const bound = 2 * (MAX_FRAME_BYTES + 5000 + 8) + 4 * IDLE_READ_BYTES;
  assert.ok(
    allocated <= bound,
    `${allocated} bytes of read buffers for two frames (bound ${bound})`,
  );
});

Deno.test("FrameReader(stream): frames split into one-byte chunks come out whole", async () => {
  const bytes = joined(frame(3000, 6), frame(2, 7));
  let at = 0;
  const reader = new FrameReader(
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (at === bytes.length) return controller.close();
        controller.enqueue(bytes.slice(at, ++at));
      },
    }),
  );
  assert.deepEqual(await reader.read(), new Uint8Array(3000).fill(6));
  assert.deepEqual(await reader.read(), new Uint8Array(2).fill(7));
  assert.equal(await reader.read(), null);
});
