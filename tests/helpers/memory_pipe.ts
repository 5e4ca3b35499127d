/**
 * An in-memory byte stream between two FrameConnections: no port, no kernel, nothing scheduled
 * between the two sides but the test's own awaits, so a race a test stages happens the same way
 * every run. One end reads as a socket does and closes as one does:
 * - a read goes into the reader's buffer and returns at most what has arrived, across writes;
 * - once an end closes, writes at either end fail (EPIPE), its own reads end at once, and its
 *   peer still reads what had arrived, then the end of the stream (as Linux keeps the receive
 *   queue after the peer's reset: a client can still read the `error` the server sent before it
 *   went);
 * - closeWrite ends the peer's input the same way, and our writes no longer reach it.
 *
 * What a test stages or observes through an end: its reads held (holdReads), the frames it
 * writes after a count lost (deliverFrames), each write's frames and each read (writes, reads),
 * the moment it closes (closed).
 */
import type { ByteStreamConn } from "../../lib/wire/connection.ts";

export class MemoryPipeEnd implements ByteStreamConn {
  /** Unused: FrameConnection reads a source that has `read` through it. */
  readonly readable = new ReadableStream<Uint8Array>();
  /** The lengths of the frames in each write, in order. */
  readonly writes: number[][] = [];
  /** Each read that returned bytes: the bytes asked for and the bytes it returned. */
  readonly reads: { asked: number; got: number }[] = [];
  /** Resolves when this end has been closed. */
  readonly closed: Promise<void>;
  /**
   * Frames written after this many are accepted but never arrive (as if lost in a reset).
   * Counted in frames, not writes: FrameConnection writes whole frames, several at once when
   * queued together.
   */
  deliverFrames = Infinity;
  #peer!: MemoryPipeEnd;
  #arrived: Uint8Array[] = [];
  #waiting?: () => void;
  #held = false;
  /** The peer closed or shut its sending side: what arrived is read, then the end. */
  #inputEnded = false;
  #closed = false;
  #framesWritten = 0;
  #markClosed!: () => void;

  private constructor() {
    this.closed = new Promise((resolve) => this.#markClosed = resolve);
  }

  static pair(): [MemoryPipeEnd, MemoryPipeEnd] {
    const [a, b] = [new MemoryPipeEnd(), new MemoryPipeEnd()];
    [a.#peer, b.#peer] = [b, a];
    return [a, b];
  }

  async read(into: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#closed) return null;
      if (!this.#held && this.#arrived.length > 0) break;
      if (!this.#held && this.#inputEnded) return null;
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

  /** FrameConnection hands a write whole frames only: they are counted and recorded. */
  write(bytes: Uint8Array): Promise<number> {
    if (this.#closed || this.#peer.#closed) {
      return Promise.reject(new Deno.errors.BrokenPipe("Broken pipe (os error 32)"));
    }
    const frames: number[] = [];
    let delivered = 0;
    for (let at = 0; at < bytes.length;) {
      const length = new DataView(bytes.buffer, bytes.byteOffset + at).getUint32(0);
      frames.push(length);
      at += 4 + length;
      if (++this.#framesWritten <= this.deliverFrames) delivered = at;
    }
    this.writes.push(frames);
    if (delivered > 0 && !this.#peer.#inputEnded) {
      this.#peer.#arrived.push(bytes.slice(0, delivered));
      this.#peer.#wake();
    }
    return Promise.resolve(bytes.length);
  }

  /**
   * Reads wait, whatever has arrived, until releaseReads: a test decides whether the reader
   * takes a frame before or after a write fails.
   */
  holdReads(): void {
    this.#held = true;
  }

  releaseReads(): void {
    this.#held = false;
    this.#wake();
  }

  closeWrite(): Promise<void> {
    this.#peer.#endInput();
    return Promise.resolve();
  }

  close(): void {
    this.#closed = true;
    this.#wake();
    this.#peer.#endInput();
    this.#markClosed();
  }

  #endInput(): void {
    this.#inputEnded = true;
    this.#wake();
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }
}
