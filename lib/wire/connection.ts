/**
 * A framed connection: whole frames in, whole frames out, with a deadline on reads
 * and a bounded send queue, so neither a silent peer nor one that stops reading
 * can hold a session's resources forever.
 */
import { SecureChatError } from "../errors.ts";
import { join, writeU32 } from "../bytes.ts";
import { type ByteReader, checkFrameLength, FrameReader, MAX_FRAME_BYTES } from "./frame.ts";
import { atTurnEnd, currentTurn } from "../turn.ts";

export interface ByteStreamConn {
  readable: ReadableStream<Uint8Array>;
  /** Read into our buffer (Deno.Conn has it): preferred, see FrameReader. */
  read?(into: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
  /** Half-close: no more writes from us, reads go on (Deno.TcpConn has it). */
  closeWrite?(): Promise<void>;
}

export const DEFAULT_SEND_QUEUE_BYTES = 1024 * 1024;
/**
 * How long a side that ends with an `error` keeps reading after it (PROTOCOL §7 "Ending with an
 * error"): a peer that has it reads it in well under this and closes; one that does not is not
 * waited for longer.
 */
export const LINGER_MS = 500;
/**
 * The most a side reads and drops while it lingers: a peer still sending cannot make it read
 * for the whole of LINGER_MS at line rate. One send queue's worth, what a peer of ours can have
 * written and not yet seen refused.
 */
export const LINGER_MAX_BYTES = DEFAULT_SEND_QUEUE_BYTES;
/** A frame's bytes on the wire beyond its payload's: the length. */
export const FRAME_HEADER_BYTES = 4;

/** The connection itself is the reader's source: no wrapper object and closure per connection. */
function readsIntoOurBuffer(conn: ByteStreamConn): conn is ByteStreamConn & ByteReader {
  return conn.read !== undefined;
}

export class FrameConnection {
  readonly #conn: ByteStreamConn;
  readonly #reader: FrameReader;
  readonly #maxQueuedBytes: number;
  #queued = 0;
  /**
   * Frames accepted by `send` and not yet handed to a write, in order, each its length and
   * payload in one buffer: one alone in its batch is written as it is, several are joined.
   */
  #pending: Uint8Array[] = [];
  /** The running write loop, if any: resolves once everything queued is written. */
  #writer: Promise<void> | null = null;
  #writeError: SecureChatError | null = null;
  #closed = false;
  /** The linger after a last frame, once started (lingerClose). */
  #lingering?: Promise<void>;
  /**
   * The turn of the event loop (lib/turn.ts currentTurn) in which the last write started: what
   * is queued after it in that turn waits for the turn's end, to leave in one write (#queue).
   */
  #wroteInTurn = -1;
  /**
   * The turn's end will write what waits: asked for only once a frame waits (a turn's end is
   * a MessageChannel message, tens of µs under Node compatibility), never for a frame alone.
   */
  #endAwaited = false;
  readonly #turnEnded = () => {
    this.#endAwaited = false;
    if (this.#pending.length > 0 && !this.#writer) this.#startWriter();
  };

  constructor(
    conn: ByteStreamConn,
    options: { maxFrameBytes?: number; maxQueuedBytes?: number } = {},
  ) {
    this.#conn = conn;
    this.#reader = new FrameReader(
      readsIntoOurBuffer(conn) ? conn : conn.readable,
      options.maxFrameBytes ?? MAX_FRAME_BYTES,
    );
    this.#maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_SEND_QUEUE_BYTES;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The error every `send` throws once a write has failed (the peer is gone), else null.
   * Frames the peer sent before it went may still be read.
   */
  get writeError(): SecureChatError | null {
    return this.#writeError;
  }

  /** The next `read` returns a frame already received, without waiting for the peer. */
  get frameReady(): boolean {
    return this.#reader.hasFrame;
  }

  /** Bytes asked for per read while nothing larger is in progress (FrameReader.quietReadBytes). */
  get quietReadBytes(): number {
    return this.#reader.quietReadBytes;
  }

  set quietReadBytes(bytes: number) {
    this.#reader.quietReadBytes = bytes;
  }

  /** Bytes accepted by `send` and not yet taken by the kernel. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** The send queue's limit: more than this waiting for the kernel is SLOW_CONSUMER. */
  get maxQueuedBytes(): number {
    return this.#maxQueuedBytes;
  }

  /**
   * Reads the next frame payload; null on a clean end of stream. A frame already buffered
   * needs no deadline; a deadline is an entry of lib/deadlines.ts, not a timer of its own.
   * @throws TIMEOUT when nothing complete arrives within `timeoutMs`, and the
   *   reader's FRAME_TOO_LARGE / PROTOCOL_ERROR.
   */
  read(timeoutMs?: number): Promise<Uint8Array | null> {
    return this.#reader.read(timeoutMs);
  }

  /**
   * Queues one frame. Never waits for the peer: if the peer has stopped reading and
   * the queue is full, the frame is refused with SLOW_CONSUMER instead.
   * @throws FRAME_TOO_LARGE, and what assertRoom throws
   */
  send(payload: Uint8Array): void {
    checkFrameLength(payload.length);
    this.assertRoom(FRAME_HEADER_BYTES + payload.length);
    const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
    frame.set(payload, FRAME_HEADER_BYTES);
    this.#queue(frame);
  }

  /**
   * Queues one frame laid out by the caller: FRAME_HEADER_BYTES left for its length (written
   * here), then the payload. A sealed record made so (RecordLayer.sealInner's headroom) is
   * framed without a copy.
   * @throws as `send`
   */
  sendFramed(frame: Uint8Array): void {
    checkFrameLength(frame.length - FRAME_HEADER_BYTES);
    this.assertRoom(frame.length);
    this.#queue(frame);
  }

  #queue(frame: Uint8Array): void {
    writeU32(frame, 0, frame.length - FRAME_HEADER_BYTES);
    this.#queued += frame.length;
    this.#pending.push(frame);
    // With a write on its way, the frame goes in the next. Else the first frame of a turn
    // leaves at once (after the current job: what the job queues goes with it), and what is
    // queued after that write in the same turn waits for the turn's end and leaves in one
    // write. A sender that makes frame after frame without yielding (Ed25519 signs
    // synchronously: a loop awaiting each send) pays a write per turn, not per frame — each a
    // syscall, and a segment the peer's kernel and reader handle; a frame alone waits for
    // nothing, as with Nagle's rule for a lone segment (RFC 896). A read that completed or a
    // timer that fired since the write is a new turn (lib/turn.ts turnBegan): a line answering
    // what was just read, or made a while later, leaves at once too.
    if (this.#writer) return;
    if (this.#wroteInTurn !== currentTurn()) this.#startWriter();
    else this.#awaitEnd();
  }

  #startWriter(): void {
    this.#wroteInTurn = currentTurn();
    this.#writer = Promise.resolve().then(() => this.#drain());
  }

  #awaitEnd(): void {
    if (this.#endAwaited) return;
    this.#endAwaited = true;
    atTurnEnd(this.#turnEnded);
  }

  /**
   * Throws what `send` would throw for `bytes` more bytes on the wire now: for a sender
   * that gathers what it sends this turn and seals it at the turn's end (PROTOCOL §3.2),
   * so that a peer that stopped reading is refused when the message is made.
   * @throws the write error once a write failed, PROTOCOL_ERROR once closed, SLOW_CONSUMER
   */
  assertRoom(bytes: number): void {
    if (this.#writeError) throw this.#writeError;
    if (this.#closed) throw new SecureChatError("PROTOCOL_ERROR", "connection is closed");
    if (this.#queued + bytes > this.#maxQueuedBytes) {
      throw new SecureChatError(
        "SLOW_CONSUMER",
        `peer is not reading: ${this.#queued} bytes already queued`,
      );
    }
  }

  /** The write of everything queued so far: what waits for the turn's end leaves now. */
  get #writing(): Promise<void> {
    if (!this.#writer && this.#pending.length > 0) this.#startWriter();
    return this.#writer ?? Promise.resolve();
  }

  /**
   * Writes until nothing is queued. Everything queued while a write was in flight goes
   * out in the next single write: one syscall (and one op) per batch, not per frame,
   * as a chat server's send queue flushes. A frame alone in its batch is written as it was
   * queued; several are joined into one buffer.
   */
  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        this.#pending = [];
        // Joined from the list, not spread: a peer that stops reading lets it grow (R10-2).
        const bytes = batch.length === 1 ? batch[0] : join(batch);
        try {
          if (this.#writeError || this.#closed) continue;
          let offset = 0;
          while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
        } catch (cause) {
          this.#writeError = new SecureChatError(
            "PROTOCOL_ERROR",
            "connection lost while writing",
            {
              cause,
            },
          );
        } finally {
          this.#queued -= bytes.length;
        }
      }
    } finally {
      this.#writer = null;
    }
  }

  /**
   * Queues one frame laid out as `sendFramed` takes it, first waiting for the queue to drain if
   * it is full: for a sender whose own pace should follow the peer's (a client typing or
   * piping lines), where `sendFramed` would give up with SLOW_CONSUMER.
   */
  async sendPacedFramed(frame: Uint8Array): Promise<void> {
    while (this.#queued > 0 && this.#queued + frame.length > this.#maxQueuedBytes) {
      await this.#writing;
    }
    this.sendFramed(frame);
  }

  /** Resolves when everything queued so far has been written (or the write failed). */
  async flush(timeoutMs = 5000): Promise<void> {
    // Nothing queued: no timer to set and clear.
    if (!this.#writer && this.#pending.length === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#writing,
      new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs)),
    ]);
    clearTimeout(timer);
  }

  /**
   * Closes after a last frame (an `error`) without destroying it (PROTOCOL §7 "Ending with an
   * error"): flushes, shuts our sending side (a FIN after the frame), then reads and drops what
   * the peer still sends until it closes, LINGER_MAX_BYTES have come or LINGER_MS have passed
   * since the call. Closing with unread data makes the kernel answer with a reset, which throws
   * away what it had not sent yet (our last frame, behind what the peer was slow to read) and
   * may reach the peer before it has read it. Every call joins the first one's linger: a reader
   * already waiting (a session's loop) shares its reads (FrameReader.read) and ends with it.
   */
  lingerClose(): Promise<void> {
    return this.#lingering ??= this.#linger();
  }

  async #linger(): Promise<void> {
    if (this.#closed) return;
    const deadline = Date.now() + LINGER_MS;
    await this.flush(LINGER_MS);
    try {
      await this.#conn.closeWrite?.();
      let dropped = 0;
      while (dropped < LINGER_MAX_BYTES && Date.now() < deadline) {
        const frame = await this.read(deadline - Date.now());
        if (frame === null) break;
        dropped += FRAME_HEADER_BYTES + frame.length; // the session is over: not acted on
      }
    } catch {
      // timeout, reset or garbage: nothing more to wait for
    }
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    void this.#reader.cancel();
    try {
      this.#conn.close();
    } catch {
      // already closed by the peer
    }
  }
}
