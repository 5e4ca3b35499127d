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

/** Reads whole frames from a byte stream. */
export class FrameReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer: Uint8Array = new Uint8Array(0);
  #maxFrame: number;

  constructor(stream: ReadableStream<Uint8Array>, maxFrame = MAX_FRAME_BYTES) {
    this.#reader = stream.getReader();
    this.#maxFrame = maxFrame;
  }

  /**
   * The next frame's payload, or null on a clean end of stream between frames.
   * @throws FRAME_TOO_LARGE for a length of 0 or above the maximum,
   *   PROTOCOL_ERROR for a stream that ends inside a frame.
   */
  async read(): Promise<Uint8Array | null> {
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
    this.#buffer = this.#buffer.subarray(4 + length);
    return payload;
  }

  async cancel(): Promise<void> {
    try {
      await this.#reader.cancel();
    } catch {
      // already closed: nothing to release
    }
  }

  /** A reset or broken connection is the peer's doing, like a write failure: not a bug. */
  async #readChunk(): Promise<ReadableStreamReadResult<Uint8Array>> {
    try {
      return await this.#reader.read();
    } catch (cause) {
      throw new SecureChatError("PROTOCOL_ERROR", "connection lost while reading", { cause });
    }
  }

  /** Collects chunks and joins them once, so a frame sent one byte at a time stays linear. */
  async #fill(wanted: number): Promise<boolean> {
    if (this.#buffer.length >= wanted) return true;
    const chunks: Uint8Array[] = [this.#buffer];
    let have = this.#buffer.length;
    let ended = false;
    while (have < wanted) {
      const { value, done } = await this.#readChunk();
      if (done) {
        ended = true;
        break;
      }
      chunks.push(value);
      have += value.length;
    }
    this.#buffer = concat(...chunks);
    return !ended;
  }
}
