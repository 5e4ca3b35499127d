/**
 * Framing (PROTOCOL §2): u32be length || that many bytes of UTF-8 JSON.
 * The reader never buffers more than one maximum frame, so a peer announcing
 * 4 GiB costs us four bytes of reading before the connection is closed.
 */
import { concat, u32be, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { atDeadline, type Deadline } from "../deadlines.ts";
import { turnBegan } from "../turn.ts";

export const MAX_FRAME_BYTES = 64 * 1024;

/**
 * A frame's payload is 1 to MAX_FRAME_BYTES bytes (PROTOCOL §2).
 * @throws FRAME_TOO_LARGE otherwise
 */
export function checkFrameLength(length: number): void {
  if (length === 0 || length > MAX_FRAME_BYTES) {
    throw new SecureChatError("FRAME_TOO_LARGE", `frame of ${length} bytes`);
  }
}

/** The four length bytes and the JSON bytes, exactly as they go on the wire. */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  checkFrameLength(payload.length);
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
 * read takes a batch of frames instead of one op per kilobyte, into the same buffer read
 * after read while the peer keeps it full (a turn's worth: TURN_UNIT_BYTES × TURN_UNITS). The
 * first read that comes back short returns to IDLE_READ_BYTES, so a connection that
 * goes quiet parks a small buffer (unless its burst ended exactly on a buffer's edge).
 */
export const BUSY_READ_BYTES = 64 * 1024;

const NOTHING = new Uint8Array(0);

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
  /**
   * Bytes received and not yet taken as a frame: `#buffer[#start, #start + #have)`. A read
   * of the socket goes into the room after them when the frame in progress fits there, so a
   * frame that arrives a byte at a time fills one buffer of its size (a new buffer per read,
   * each sized for the rest of the frame, pinned ~2 GiB for one trickled 64 KiB frame).
   */
  #buffer: Uint8Array = NOTHING;
  #start = 0;
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
  /**
   * A frame's buffer its reader gave back ({@link reuse}): the next frame that fits is copied
   * there, not into a new buffer (calloc'd, faulted in and freed on a GC thread, per record).
   * Kept only while more frames are on their way: an idle connection holds none.
   */
  #spare?: Uint8Array;
  /**
   * Bytes asked for per read when no larger frame is in progress and the peer is not busy:
   * IDLE_READ_BYTES, unless a phase whose frames are known to be larger asks for more (the
   * handshake, HANDSHAKE_READ_BYTES).
   */
  quietReadBytes = IDLE_READ_BYTES;

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

  /**
   * Gives back a frame `read` returned, once nothing refers to its bytes any more (its contents
   * parsed, what is kept of them copied): its buffer takes the next frame that fits. The caller
   * must keep no view of it: the next frame overwrites it.
   */
  reuse(frame: Uint8Array): void {
    if (this.#have === 0 && !this.#busy) return;
    const buffer = new Uint8Array(frame.buffer);
    if (buffer.length > (this.#spare?.length ?? 0)) this.#spare = buffer;
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
    // A copy: the frame must not pin the read buffer behind it, and is its reader's own (the
    // record layer opens it in place). Into the spare a reader gave back, when it fits.
    const bytes = this.#buffer.subarray(this.#start + 4, this.#start + 4 + length);
    const spare = this.#spare;
    let payload: Uint8Array;
    if (spare !== undefined && spare.length >= length) {
      this.#spare = undefined;
      payload = spare.subarray(0, length);
      payload.set(bytes);
    } else {
      payload = bytes.slice();
    }
    this.#start += 4 + length;
    this.#have -= 4 + length;
    // An idle connection keeps no buffer at all; a busy one its own for the next read.
    if (this.#have === 0 && !this.#busy) [this.#buffer, this.#spare] = [NOTHING, undefined];
    if (this.#have === 0) this.#start = 0;
    return payload;
  }

  /** The length prefix of the frame in progress (#have >= 4). */
  #header(): DataView {
    return new DataView(this.#buffer.buffer, this.#buffer.byteOffset + this.#start, 4);
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
   * a ByteReader, into #room(): a frame in progress gets its buffer, an idle connection only a
   * small one.
   */
  #pull(): void {
    if (this.#pulling || this.#ended) return;
    this.#pulling = true;
    if (this.#source instanceof ReadableStreamDefaultReader) {
      this.#source.read().then(
        ({ value, done }) => {
          turnBegan();
          this.#received(done ? null : value);
        },
        (cause) => this.#lost(cause),
      );
      return;
    }
    const into = this.#room();
    this.#source.read(into).then(
      (got) => {
        turnBegan();
        this.#busy = got === into.length;
        this.#pulling = false;
        if (got === null) this.#ended = true;
        else this.#have += got;
        this.#settle();
      },
      (cause) => this.#lost(cause),
    );
  }

  /**
   * Where the next read of a ByteReader goes: the room after the buffered bytes when the frame
   * in progress fits in it; otherwise those bytes moved to the start of a buffer with room for
   * the rest of that frame, but never less than quietReadBytes (BUSY_READ_BYTES while the peer
   * keeps our reads full): this buffer when it has room for that frame and half as much (read
   * after read of a busy peer, a part of a frame left each time: no new buffer, calloc'd and
   * faulted in, per read), else a new one.
   */
  #room(): Uint8Array {
    const wanted = this.#wanted();
    const end = this.#start + this.#have;
    if (this.#have > 0 && this.#buffer.length - end >= wanted) return this.#buffer.subarray(end);
    const room = Math.max(wanted, this.#busy ? BUSY_READ_BYTES : this.quietReadBytes);
    if (this.#buffer.length - this.#have >= Math.max(wanted, room / 2)) {
      // Ours alone: every frame taken from it was a copy (#takeFrame).
      this.#buffer.copyWithin(0, this.#start, end);
      this.#start = 0;
      return this.#buffer.subarray(this.#have);
    }
    const buffer = new Uint8Array(this.#have + room);
    buffer.set(this.#buffer.subarray(this.#start, end));
    [this.#buffer, this.#start] = [buffer, 0];
    return buffer.subarray(this.#have);
  }

  /** Bytes still missing for the length prefix, or for the frame it announces. */
  #wanted(): number {
    if (this.#have < 4) return 4 - this.#have;
    const length = this.#header().getUint32(0);
    return length > this.#maxFrame ? 0 : 4 + length - this.#have;
  }

  /** A chunk of a stream source, appended to the buffered bytes. */
  #received(chunk: Uint8Array | null): void {
    this.#pulling = false;
    if (chunk === null) this.#ended = true;
    else if (this.#have === 0) [this.#buffer, this.#start, this.#have] = [chunk, 0, chunk.length];
    else if (chunk.length > 0) {
      // Room that doubles: a frame in many small chunks is copied a few times, not once per chunk.
      let end = this.#start + this.#have;
      if (this.#buffer.length - end < chunk.length) {
        const joined = new Uint8Array(Math.max(this.#have + chunk.length, 2 * this.#have));
        joined.set(this.#buffer.subarray(this.#start, end));
        [this.#buffer, this.#start, end] = [joined, 0, this.#have];
      }
      this.#buffer.set(chunk, end);
      this.#have += chunk.length;
    }
    this.#settle();
  }

  /** A reset or broken connection is the peer's doing, like a write failure: not a bug. */
  #lost(cause: unknown): void {
    this.#pulling = false;
    this.#ended = true;
    // Our own close interrupts the pending read: an end of stream, as a cancelled stream gives.
    // A transport that refused what the peer sent (the WebSocket front's framing faults) said
    // why with its own error: that is what the log should read.
    if (!this.#cancelled) {
      this.#failure = cause instanceof SecureChatError
        ? cause
        : new SecureChatError("PROTOCOL_ERROR", "connection lost while reading", { cause });
    }
    this.#settle();
  }
}
