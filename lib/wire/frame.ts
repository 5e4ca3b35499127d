/**
 * Framing (PROTOCOL §2): u32be length || that many bytes of UTF-8 JSON.
 * The reader never buffers more than one maximum frame, so a peer announcing
 * 4 GiB costs us four bytes of reading before the connection is closed.
 */
import { concat, u32be, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { atDeadline, type Deadline } from "../deadlines.ts";

export const MAX_FRAME_BYTES = 64 * 1024;

/** The four length bytes and the JSON bytes, exactly as they go on the wire. */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  if (payload.length === 0 || payload.length > MAX_FRAME_BYTES) {
    throw new SecureChatError("FRAME_TOO_LARGE", `frame of ${payload.length} bytes`);
  }
  return concat(u32be(payload.length), payload);
}

export function encodeJsonFrame(message: unknown): { payload: Uint8Array; wire: Uint8Array } {
  const payload = utf8(JSON.stringify(message));
  return { payload, wire: encodeFrame(payload) };
}

/**
 * A source that reads into a buffer we choose (Deno.Conn has it). Preferred over a
 * ReadableStream, whose pending pull holds a 64 KiB buffer per idle connection.
 */
export interface ByteReader {
  read(into: Uint8Array): Promise<number | null>;
}

/**
 * Bytes asked for per read when no larger frame is in progress: an idle connection's
 * pending read holds only this much, and most frames arrive whole in one read.
 */
export const IDLE_READ_BYTES = 1024;
/**
 * Bytes asked for after a read that filled its whole buffer: more is waiting, so one
 * read takes a batch of frames instead of one op (and one allocation) per kilobyte. The
 * first read that comes back short returns to IDLE_READ_BYTES, so a connection that
 * goes quiet parks a small buffer (unless its burst ended exactly on a buffer's edge).
 */
export const BUSY_READ_BYTES = 16 * 1024;

/** The caller waiting for the next frame, and when it stops waiting. */
interface Waiter {
  promise: Promise<Uint8Array | null>;
  resolve(frame: Uint8Array | null): void;
  reject(error: unknown): void;
  /** The earliest deadline a caller set (ms since the epoch), and its entry. */
  at?: number;
  deadline?: Deadline;
}

/**
 * Reads whole frames from a byte stream. An idle connection holds one pending read of the
 * source and the promise its caller awaits; no chain of suspended async functions (each holds
 * its frame, its promise and their reactions for as long as the connection stays idle).
 */
export class FrameReader {
  #source: ReadableStreamDefaultReader<Uint8Array> | ByteReader;
  /** Bytes received and not yet taken as a frame: one chunk, or several until a frame is whole. */
  #chunks: Uint8Array[] = [];
  #have = 0;
  #maxFrame: number;
  /** A read of the source is pending: never two, they would race for its bytes. */
  #pulling = false;
  /** The stream has ended (or failed: `#failure`); what is buffered is all there is. */
  #ended = false;
  #failure?: unknown;
  #waiter?: Waiter;
  #cancelled = false;
  /** The last read filled its buffer: the peer is sending faster than we read. */
  #busy = false;

  constructor(source: ReadableStream<Uint8Array> | ByteReader, maxFrame = MAX_FRAME_BYTES) {
    this.#source = source instanceof ReadableStream ? source.getReader() : source;
    this.#maxFrame = maxFrame;
  }

  /**
   * The next frame's payload, or null on a clean end of stream between frames. A caller that
   * stops waiting (its deadline passed) loses nothing: the frame in progress stays for the next
   * read. Callers waiting at once share one read, and the earliest deadline.
   * @param timeoutMs reject with TIMEOUT unless a whole frame is here within this many ms
   * @throws FRAME_TOO_LARGE for a length of 0 or above the maximum,
   *   PROTOCOL_ERROR for a stream that ends inside a frame, TIMEOUT
   */
  read(timeoutMs?: number): Promise<Uint8Array | null> {
    let waiter = this.#waiter;
    if (!waiter) {
      try {
        const frame = this.#takeFrame() ?? (this.#ended ? this.#endOfStream() : undefined);
        if (frame !== undefined) return Promise.resolve(frame);
      } catch (error) {
        return Promise.reject(error);
      }
      const { promise, resolve, reject } = Promise.withResolvers<Uint8Array | null>();
      waiter = this.#waiter = { promise, resolve, reject };
      this.#pull();
    }
    if (timeoutMs !== undefined) this.#limit(waiter, timeoutMs);
    return waiter.promise;
  }

  /** A whole frame is already buffered: the next `read` needs no I/O. */
  get hasFrame(): boolean {
    if (this.#waiter || this.#have < 4) return false;
    return this.#have >= 4 + this.#header().getUint32(0);
  }

  /** Releases a stream source; a ByteReader source is released by closing its connection. */
  async cancel(): Promise<void> {
    this.#cancelled = true;
    if (!(this.#source instanceof ReadableStreamDefaultReader)) return;
    try {
      await this.#source.cancel();
    } catch {
      // already closed: nothing to release
    }
  }

  #limit(waiter: Waiter, timeoutMs: number): void {
    const at = Date.now() + timeoutMs;
    if (waiter.at !== undefined && waiter.at <= at) return;
    waiter.deadline?.cancel();
    waiter.at = at;
    waiter.deadline = atDeadline(at, () => {
      if (this.#waiter !== waiter) return;
      this.#waiter = undefined;
      waiter.reject(new SecureChatError("TIMEOUT", `no complete frame within ${timeoutMs} ms`));
    });
  }

  /** Settles the waiting caller, if any, with the next frame, the end, or the failure. */
  #settle(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    let frame: Uint8Array | null | undefined;
    try {
      frame = this.#takeFrame();
      if (frame === undefined && this.#ended) frame = this.#endOfStream();
    } catch (error) {
      this.#waiter = undefined;
      waiter.deadline?.cancel();
      waiter.reject(error);
      return;
    }
    if (frame === undefined) return this.#pull();
    this.#waiter = undefined;
    waiter.deadline?.cancel();
    waiter.resolve(frame);
  }

  /**
   * The first whole frame buffered, taken out; undefined while none is.
   * @throws FRAME_TOO_LARGE
   */
  #takeFrame(): Uint8Array | undefined {
    if (this.#have < 4) return undefined;
    const length = this.#header().getUint32(0);
    if (length === 0 || length > this.#maxFrame) {
      throw new SecureChatError(
        "FRAME_TOO_LARGE",
        `frame length ${length} outside 1..${this.#maxFrame}`,
      );
    }
    if (this.#have < 4 + length) return undefined;
    // Joined once the frame is whole, so a frame sent one byte at a time stays linear.
    const buffer = this.#chunks.length === 1 ? this.#chunks[0] : concat(...this.#chunks);
    const payload = buffer.slice(4, 4 + length);
    this.#have -= 4 + length;
    // An empty view would still pin the whole read buffer behind it while idle.
    this.#chunks = this.#have === 0 ? [] : [buffer.subarray(4 + length)];
    return payload;
  }

  /** The length prefix, from the first chunk (joined with the next ones if they split it). */
  #header(): DataView {
    if (this.#chunks[0].length < 4) this.#chunks = [concat(...this.#chunks)];
    const first = this.#chunks[0];
    return new DataView(first.buffer, first.byteOffset, 4);
  }

  /**
   * @returns null at a clean end between frames
   * @throws the stream's failure, or PROTOCOL_ERROR for an end inside a frame
   */
  #endOfStream(): null {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#have === 0) return null;
    if (this.#have < 4) {
      throw new SecureChatError("PROTOCOL_ERROR", "connection closed inside a length prefix");
    }
    throw new SecureChatError("PROTOCOL_ERROR", "connection closed inside a frame");
  }

  /**
   * Reads the next bytes from the source, unless a read is pending or the stream is over. From
   * a ByteReader, the rest of the frame in progress but never fewer than IDLE_READ_BYTES
   * (BUSY_READ_BYTES while the peer keeps our reads full) are asked for: a frame in progress
   * gets its buffer, an idle connection only a small one.
   */
  #pull(): void {
    if (this.#pulling || this.#ended) return;
    this.#pulling = true;
    if (this.#source instanceof ReadableStreamDefaultReader) {
      this.#source.read().then(
        ({ value, done }) => this.#received(done ? null : value),
        (cause) => this.#lost(cause),
      );
      return;
    }
    const into = new Uint8Array(
      Math.max(this.#wanted(), this.#busy ? BUSY_READ_BYTES : IDLE_READ_BYTES),
    );
    this.#source.read(into).then(
      (got) => {
        this.#busy = got === into.length;
        this.#received(got === null ? null : into.subarray(0, got));
      },
      (cause) => this.#lost(cause),
    );
  }

  /** Bytes still missing for the length prefix, or for the frame it announces. */
  #wanted(): number {
    if (this.#have < 4) return 4 - this.#have;
    const length = this.#header().getUint32(0);
    return length > this.#maxFrame ? 0 : 4 + length - this.#have;
  }

  #received(chunk: Uint8Array | null): void {
    this.#pulling = false;
    if (chunk === null) this.#ended = true;
    else if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#have += chunk.length;
    }
    this.#settle();
  }

  /** A reset or broken connection is the peer's doing, like a write failure: not a bug. */
  #lost(cause: unknown): void {
    this.#pulling = false;
    this.#ended = true;
    // Our own close interrupts the pending read: an end of stream, as a cancelled stream gives.
    if (!this.#cancelled) {
      this.#failure = new SecureChatError("PROTOCOL_ERROR", "connection lost while reading", {
        cause,
      });
    }
    this.#settle();
  }
}
