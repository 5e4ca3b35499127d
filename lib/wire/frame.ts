/**
 * Framing (PROTOCOL §2): u32be length || that many bytes of UTF-8 JSON.
 * The reader never buffers more than one maximum frame, so a peer announcing
 * 4 GiB costs us four bytes of reading before the connection is closed.
 */
import { concat, u32be, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";

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

const EMPTY = new Uint8Array(0);

/** Reads whole frames from a byte stream. */
export class FrameReader {
  #source: ReadableStreamDefaultReader<Uint8Array> | ByteReader;
  #buffer: Uint8Array = EMPTY;
  #maxFrame: number;
  /** The frame being read, so a read that timed out hands its frame to the next one. */
  #inFlight: Promise<Uint8Array | null> | null = null;
  #cancelled = false;
  /** The last read filled its buffer: the peer is sending faster than we read. */
  #busy = false;

  constructor(source: ReadableStream<Uint8Array> | ByteReader, maxFrame = MAX_FRAME_BYTES) {
    this.#source = source instanceof ReadableStream ? source.getReader() : source;
    this.#maxFrame = maxFrame;
  }

  /**
   * The next frame's payload, or null on a clean end of stream between frames.
   * @throws FRAME_TOO_LARGE for a length of 0 or above the maximum,
   *   PROTOCOL_ERROR for a stream that ends inside a frame.
   */
  read(): Promise<Uint8Array | null> {
    if (this.#inFlight) return this.#inFlight;
    const frame = this.#readFrame();
    this.#inFlight = frame;
    const settle = () => {
      if (this.#inFlight === frame) this.#inFlight = null;
    };
    frame.then(settle, settle);
    return frame;
  }

  async #readFrame(): Promise<Uint8Array | null> {
    if (!await this.#fill(4)) {
      if (this.#buffer.length === 0) return null;
      throw new SecureChatError("PROTOCOL_ERROR", "connection closed inside a length prefix");
    }
    const length = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, 4).getUint32(0);
    if (length === 0 || length > this.#maxFrame) {
      throw new SecureChatError(
        "FRAME_TOO_LARGE",
        `frame length ${length} outside 1..${this.#maxFrame}`,
      );
    }
    if (!await this.#fill(4 + length)) {
      throw new SecureChatError("PROTOCOL_ERROR", "connection closed inside a frame");
    }
    const payload = this.#buffer.slice(4, 4 + length);
    // An empty view would still pin the whole read buffer behind it while idle.
    this.#buffer = this.#buffer.length === 4 + length ? EMPTY : this.#buffer.subarray(4 + length);
    return payload;
  }

  /** A whole frame is already buffered: the next `read` needs no I/O. */
  get hasFrame(): boolean {
    if (this.#inFlight || this.#buffer.length < 4) return false;
    const length = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, 4).getUint32(0);
    return this.#buffer.length >= 4 + length;
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

  /**
   * The next bytes, null at the end of the stream. From a ByteReader, `wanted` bytes
   * but never fewer than IDLE_READ_BYTES (BUSY_READ_BYTES while the peer keeps our
   * reads full) are asked for: a frame in progress gets its buffer, an idle connection
   * only a small one.
   * A reset or broken connection is the peer's doing, like a write failure: not a bug.
   */
  async #readChunk(wanted: number): Promise<Uint8Array | null> {
    try {
      if (this.#source instanceof ReadableStreamDefaultReader) {
        const { value, done } = await this.#source.read();
        return done ? null : value;
      }
      const into = new Uint8Array(
        Math.max(wanted, this.#busy ? BUSY_READ_BYTES : IDLE_READ_BYTES),
      );
      const got = await this.#source.read(into);
      this.#busy = got === into.length;
      return got === null ? null : into.subarray(0, got);
    } catch (cause) {
      // Our own close interrupts the pending read: an end of stream, as a cancelled stream gives.
      if (this.#cancelled) return null;
      throw new SecureChatError("PROTOCOL_ERROR", "connection lost while reading", { cause });
    }
  }

  /** Collects chunks and joins them once, so a frame sent one byte at a time stays linear. */
  async #fill(wanted: number): Promise<boolean> {
    if (this.#buffer.length >= wanted) return true;
    const chunks: Uint8Array[] = this.#buffer.length > 0 ? [this.#buffer] : [];
    let have = this.#buffer.length;
    let ended = false;
    while (have < wanted) {
      const value = await this.#readChunk(wanted - have);
      if (value === null) {
        ended = true;
        break;
      }
      chunks.push(value);
      have += value.length;
    }
    // One chunk (the usual case) is kept as it is: no copy.
    this.#buffer = chunks.length === 1 ? chunks[0] : concat(...chunks);
    return !ended;
  }
}
