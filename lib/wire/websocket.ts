/**
 * The protocol's frames over a WebSocket (PROTOCOL §2): one binary WebSocket message carries
 * exactly one frame's payload, without the u32be length (the WebSocket message has its own).
 * This adapter turns a WebSocket into the byte stream FrameConnection reads and writes, so the
 * clients run unchanged over either transport. It uses only the standard WebSocket API, so the
 * page runs it; the server frames its end itself (lib/server/websocket_conn.ts).
 */
import { concat, u32be } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { encodeFrame, MAX_FRAME_BYTES } from "./frame.ts";
import type { ByteStreamConn } from "./connection.ts";

/** WebSocket close codes (RFC 6455 §7.4.1) this adapter sends. */
const CLOSE_UNSUPPORTED_DATA = 1003;

/** Above this many bytes buffered in the socket, a write waits for it to drain. */
const HIGH_WATER_BYTES = 64 * 1024;
const DRAIN_POLL_MS = 5;

export class WebSocketByteConn implements ByteStreamConn {
  readonly readable: ReadableStream<Uint8Array>;
  readonly #socket: WebSocket;
  /** Bytes written by FrameConnection not yet cut into whole frames. */
  #pending: Uint8Array = new Uint8Array(0);

  /** `socket` must be open ({@link opened}); its binaryType is set to arraybuffer. */
  constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    this.readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        socket.addEventListener("message", (event) => {
          if (!(event.data instanceof ArrayBuffer)) {
            // A text message is not a frame: the peer does not speak this protocol.
            controller.error(
              new SecureChatError("PROTOCOL_ERROR", "a WebSocket text message is not a frame"),
            );
            this.#closeWith(CLOSE_UNSUPPORTED_DATA, "binary frames only");
            return;
          }
          const payload = new Uint8Array(event.data);
          // Re-framed with its length so FrameReader, the one parse chokepoint, judges it: a
          // length outside 1..MAX_FRAME_BYTES is its FRAME_TOO_LARGE, and the core answers
          // that as it does on TCP (the payload itself is dropped unread).
          controller.enqueue(
            payload.length === 0 || payload.length > MAX_FRAME_BYTES
              ? u32be(payload.length)
              : encodeFrame(payload),
          );
        });
        socket.addEventListener("close", () => {
          try {
            controller.close();
          } catch {
            // already errored
          }
        });
        socket.addEventListener("error", () => {
          try {
            controller.error(new SecureChatError("PROTOCOL_ERROR", "WebSocket error"));
          } catch {
            // already closed
          }
        });
      },
    });
  }

  /**
   * Takes bytes FrameConnection writes (whole length-prefixed frames, possibly several or a
   * part of one) and sends each complete frame's payload as one binary message. Resolves once
   * the socket's own buffer is below its high-water mark, so FrameConnection's send-queue bound
   * holds against a peer that stops reading.
   */
  async write(bytes: Uint8Array): Promise<number> {
    if (this.#socket.readyState !== WebSocket.OPEN) {
      throw new SecureChatError("PROTOCOL_ERROR", "the WebSocket is not open");
    }
    const { payloads, rest } = splitFrames(this.#pending, bytes);
    for (const payload of payloads) this.#socket.send(payload.slice());
    this.#pending = rest;
    while (
      this.#socket.readyState === WebSocket.OPEN && this.#socket.bufferedAmount > HIGH_WATER_BYTES
    ) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
    }
    return bytes.length;
  }

  close(): void {
    this.#closeWith(1000, "");
  }

  #closeWith(code: number, reason: string): void {
    if (this.#socket.readyState >= WebSocket.CLOSING) return;
    this.#socket.close(code, reason);
  }
}

/**
 * Cuts what FrameConnection wrote (`pending`, the part of a frame left from the last write,
 * then `bytes`) into whole frames' payloads (views into the bytes, without their u32be
 * lengths) and the copied rest of a frame still being written.
 */
export function splitFrames(
  pending: Uint8Array,
  bytes: Uint8Array,
): { payloads: Uint8Array[]; rest: Uint8Array } {
  let buffer = pending.length === 0 ? bytes : concat(pending, bytes);
  const payloads: Uint8Array[] = [];
  while (buffer.length >= 4) {
    const length = new DataView(buffer.buffer, buffer.byteOffset, 4).getUint32(0);
    if (buffer.length < 4 + length) break;
    payloads.push(buffer.subarray(4, 4 + length));
    buffer = buffer.subarray(4 + length);
  }
  return { payloads, rest: buffer.slice() };
}

/** Resolves when `socket` is open; rejects with IO_ERROR if it closes or fails first. */
export function opened(socket: WebSocket): Promise<void> {
  if (socket.readyState === WebSocket.OPEN) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const fail = () =>
      reject(new SecureChatError("IO_ERROR", "the WebSocket closed before it opened"));
    socket.addEventListener("open", () => resolve(), { once: true });
    socket.addEventListener("close", fail, { once: true });
    socket.addEventListener("error", fail, { once: true });
  });
}
