/**
 * A framed connection: whole frames in, whole frames out, with a deadline on reads
 * and a bounded send queue, so neither a silent peer nor one that stops reading
 * can hold a session's resources forever.
 */
import { SecureChatError } from "../errors.ts";
import { writeU32 } from "../bytes.ts";
import { type ByteReader, checkFrameLength, FrameReader, MAX_FRAME_BYTES } from "./frame.ts";
import { atTurnEnd, currentTurn } from "../turn.ts";

export interface ByteStreamConn {
  readable: ReadableStream<Uint8Array>;
  /** Read into our buffer (Deno.Conn has it): preferred, see FrameReader. */
  read?(into: Uint8Array): Promise<number | null>;
  /**
   * Must be done with `bytes` once it settles (a socket's write, a copy): the buffer is then
   * another batch's (FrameConnection's spare batches).
   */
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

/** A batch's smallest buffer: a lone short frame (a line, an ack) still takes one this size. */
const MIN_BATCH_BYTES = 1024;
/**
 * The most the spare batches hold in all: a batch written is kept for the next one up to this,
 * so a busy server writes each turn's records into buffers it already has (a fresh one of tens
 * of KiB is calloc'd, zeroed and faulted in by the kernel: the floor's largest cost before
 * session 17), and an idle one holds at most this much beside its connections.
 */
const SPARE_BATCH_BYTES = 2 * 1024 * 1024;
const NO_BATCH = new Uint8Array(0);

/** Batch buffers no connection is using, by size (powers of two), and their bytes in all. */
const spareBatches = new Map<number, Uint8Array[]>();
let spareBytes = 0;

/** A batch buffer of at least `bytes`: a spare one of the size, else a new one. */
function takeBatch(bytes: number): Uint8Array {
  let size = MIN_BATCH_BYTES;
  while (size < bytes) size *= 2;
  const spare = spareBatches.get(size)?.pop();
  if (!spare) return new Uint8Array(size);
  spareBytes -= size;
  return spare;
}

/** A batch buffer no write holds any more: kept for the next batch while the spares have room. */
function giveBackBatch(buffer: Uint8Array): void {
  if (buffer === NO_BATCH || spareBytes + buffer.length > SPARE_BATCH_BYTES) return;
  let spares = spareBatches.get(buffer.length);
  if (!spares) spareBatches.set(buffer.length, spares = []);
  spares.push(buffer);
  spareBytes += buffer.length;
}

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
   * Frames accepted by `send` and not yet handed to a write, in order, back to back (each its
   * length, then its payload) in `#batch[0, #batchLength)`: a buffer of the spares, handed whole
   * to one write and given back when it is done. A sealed record is written into its place here
   * (sendSealed): no buffer of its own, no copy to join it to the others.
   */
  #batch: Uint8Array = NO_BATCH;
  #batchLength = 0;
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
   * a macrotask of its own, lib/turn.ts nextTurn), never for a frame alone.
   */
  #endAwaited = false;
  readonly #turnEnded = () => {
    this.#endAwaited = false;
    if (this.#batchLength > 0 && !this.#writer) this.#startWriter();
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
   * Gives back a frame `read` returned, once nothing refers to its bytes (FrameReader.reuse):
   * the next frame that fits is copied into it.
   */
  reuse(frame: Uint8Array): void {
    this.#reader.reuse(frame);
  }

  /**
   * Queues one frame. Never waits for the peer: if the peer has stopped reading and
   * the queue is full, the frame is refused with SLOW_CONSUMER instead.
   * @throws FRAME_TOO_LARGE, and what assertRoom throws
   */
  send(payload: Uint8Array): void {
    this.sendSealed(payload.length, (into) => into.set(payload));
  }

  /**
   * Queues one frame of `length` payload bytes that `write` writes into its place in the batch
   * (`into`, exactly `length` bytes; keeping no view of it): a record sealed there
   * (RecordLayer.sealInner's `into`) needs no buffer of its own and no copy. Nothing is queued
   * if `write` throws.
   * @throws as `send`, and what `write` throws
   */
  sendSealed(length: number, write: (into: Uint8Array) => void): void {
    checkFrameLength(length);
    const bytes = FRAME_HEADER_BYTES + length;
    this.assertRoom(bytes);
    const start = this.#batchLength;
    if (start + bytes > this.#batch.length) {
      const grown = takeBatch(start + bytes);
      grown.set(this.#batch.subarray(0, start));
      giveBackBatch(this.#batch);
      this.#batch = grown;
    }
    write(this.#batch.subarray(start + FRAME_HEADER_BYTES, start + bytes));
    writeU32(this.#batch, start, length);
    this.#batchLength = start + bytes;
    this.#queued += bytes;
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
    if (!this.#writer && this.#batchLength > 0) this.#startWriter();
    return this.#writer ?? Promise.resolve();
  }

  /**
   * Writes until nothing is queued. Everything queued while a write was in flight goes
   * out in the next single write: one syscall (and one op) per batch, not per frame,
   * as a chat server's send queue flushes.
   */
  async #drain(): Promise<void> {
    try {
      while (this.#batchLength > 0) {
        const batch = this.#batch;
        const bytes = batch.subarray(0, this.#batchLength);
        [this.#batch, this.#batchLength] = [NO_BATCH, 0];
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
          giveBackBatch(batch);
        }
      }
    } finally {
      this.#writer = null;
    }
  }

  /**
   * Resolves once `bytes` more bytes on the wire fit the queue (or nothing is queued), waiting
   * for it to drain: for a sender whose own pace should follow the peer's (a client typing or
   * piping lines), where `send` would give up with SLOW_CONSUMER. What the sender queues right
   * after, in the same job, takes that room; a record is sealed only then, so that records
   * leave in the order their nonces were taken (PROTOCOL §3.2).
   */
  async untilRoom(bytes: number): Promise<void> {
    while (this.#queued > 0 && this.#queued + bytes > this.#maxQueuedBytes) {
      await this.#writing;
    }
  }

  /** Resolves when everything queued so far has been written (or the write failed). */
  async flush(timeoutMs = 5000): Promise<void> {
    // Nothing queued: no timer to set and clear.
    if (!this.#writer && this.#batchLength === 0) return;
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
