/**
 * The server's end of a WebSocket (RFC 6455), framed here instead of by Deno's WebSocket
 * server: that one holds a message of up to 64 MiB before handing it over, with no limit to
 * set, so a peer could make `serve --web` keep 64 MiB per connection before anything judged
 * it. Here the frame header is read first, and a frame's payload is not buffered whole:
 *  - a message announced above the protocol's frame limit is handed to FrameReader as that
 *    length alone (so the core answers FRAME_TOO_LARGE as on TCP) and the rest is never read;
 *    our close then does not wait for the peer's (#closeWith), which could never be found;
 *  - a binary message within the limit is passed on as the length-prefixed frame FrameReader
 *    reads (PROTOCOL §2: one binary message per frame), its payload unmasked as it arrives;
 *  - a fragmented message (continuation frames) is gathered up to the frame limit, in at most
 *    MAX_FRAGMENTS frames (an empty fragment costs nothing against the limit in bytes);
 *  - ping is answered; pings and pongs together are held to CONTROL_FRAMES_PER_SECOND (burst
 *    CONTROL_FRAME_BURST), past which the socket is closed with 1008; close is answered (its
 *    code echoed only where RFC 6455 §7.4 lets a peer send it) and ends the stream; a text
 *    message, an unmasked frame, reserved bits or opcodes are refused with a close code and
 *    PROTOCOL_ERROR;
 *  - once our close is sent, frames are still read (a bounded amount) but only the peer's close
 *    is acted on: it lets the socket go (#letGo), and so does a frame that would be refused or a
 *    message announced above the limit.
 * The socket is paused while the core has not taken what was read (back-pressure), and a
 * write resolves once the socket has drained.
 */
import type { Socket } from "node:net";
import { sha1 } from "@noble/hashes/legacy.js";
import { concat, fromUtf8, join, toBase64, u32be, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { type ByteStreamConn, LINGER_MAX_BYTES, LINGER_MS } from "../wire/connection.ts";
import { MAX_FRAME_BYTES } from "../wire/frame.ts";
import { splitFrames } from "../wire/websocket.ts";

/** RFC 6455 §1.3: the key's answer is SHA-1 of the key and this GUID, in base64. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * The Sec-WebSocket-Accept answering a client's Sec-WebSocket-Key. SHA-1 here is the
 * RFC's fixed handshake token, not a security function (node:crypto stays behind
 * #sync-crypto: layers_test).
 */
export function acceptKey(key: string): string {
  return toBase64(sha1(utf8(key + ACCEPT_GUID)));
}

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/** Close codes (RFC 6455 §7.4.1) this end sends. */
const CLOSE_NORMAL = 1000;
const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_UNSUPPORTED_DATA = 1003;
const CLOSE_INVALID_DATA = 1007;
const CLOSE_POLICY_VIOLATION = 1008;
const CLOSE_MESSAGE_TOO_BIG = 1009;
/**
 * The most frames one message may come in (PROTOCOL §2). RFC 6455 allows empty fragments, which
 * the limit in bytes does not bound: without a count a peer kept a fragment per 6 bytes it sent
 * (review10 R10-1). Browsers send a message whole; 1024 allows pieces of 64 bytes.
 */
const MAX_FRAGMENTS = 1024;
/**
 * The pings and pongs a peer may send (a token bucket per connection, PROTOCOL §8.2). They never
 * reach FrameReader, so neither the message rate nor a deadline counts them, and each costs the
 * server microseconds of its one thread for a few bytes of the peer's: unbounded, one connection
 * outpaced the server (review14a finding 1). Honest peers send close to none: the server never
 * pings, so a browser never pongs, and a page cannot ping.
 */
const CONTROL_FRAMES_PER_SECOND = 4;
export const CONTROL_FRAME_BURST = 16;
/** How long a closed connection waits for the peer's side of the close before it is cut. */
const CLOSE_GRACE_MS = 5_000;
/**
 * The most sockets of one front that wait for their peer's close at once (PROTOCOL §7 "Ending
 * with an error"). Such a socket holds no admission slot (its session has ended, or it was
 * refused), so nothing else bounds how many a flood of connections leaves waiting; past this
 * many, a socket is let go once our close is written.
 */
export const MAX_AWAITING_CLOSE = 64;

/**
 * One front's sockets waiting for their peer's close, shared by its connections: how many wait
 * (at most MAX_AWAITING_CLOSE) and how long each may (`graceMs`, CLOSE_GRACE_MS but in tests,
 * which set it past any test's length to tell a socket let go at the peer's close frame from one
 * let go by the grace).
 */
export class AwaitingClose {
  count = 0;
  constructor(readonly graceMs = CLOSE_GRACE_MS) {}
}

/** The longest frame header (RFC 6455 §5.2): two bytes, a 64-bit length, the mask. */
const MAX_HEADER_BYTES = 14;
/** A frame header's length, from its second byte (the mask bit and the length's first 7 bits). */
function headerBytes(second: number): number {
  const len7 = second & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + 4;
}

/** The big-endian u32 in `bytes` at `at`. */
function u32At(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

/** An empty payload, shared (never written to). */
const EMPTY = new Uint8Array(0);

/** Where the reader is in the byte stream. */
type ReadState =
  | { kind: "header" }
  | {
    kind: "payload";
    opcode: number;
    fin: boolean;
    left: number;
    /** A data frame after our close: its payload is passed over, neither kept nor unmasked. */
    skip: boolean;
  }
  | { kind: "done" };
const AT_HEADER: ReadState = { kind: "header" };
const DONE: ReadState = { kind: "done" };

export class WebSocketServerConn implements ByteStreamConn {
  readonly readable: ReadableStream<Uint8Array>;
  readonly #socket: Socket;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #state: ReadState = AT_HEADER;
  /** A header that came in pieces, #headerFilled bytes of it so far. */
  readonly #header = new Uint8Array(MAX_HEADER_BYTES);
  #headerFilled = 0;
  /** The mask of the frame in progress. */
  readonly #mask = new Uint8Array(4);
  /** The payload of the frame in progress: the message part, or a control frame's body. */
  #payload: Uint8Array = EMPTY;
  #filled = 0;
  /** Earlier frames of a fragmented binary message (continuations pending). */
  #fragments: Uint8Array[] | null = null;
  #fragmentBytes = 0;
  /** Bytes written by FrameConnection not yet cut into whole frames. */
  #pendingOut: Uint8Array = new Uint8Array(0);
  readonly #awaitingClose: AwaitingClose;
  /**
   * Reading stopped at a message announced above the limit: its payload is never read, so the
   * peer's close behind it cannot be found, and our close does not wait for it.
   */
  #overLimit = false;
  #ended = false;
  /**
   * Our close is sent: what arrives is read for the peer's close and otherwise dropped (#take),
   * #dropped bytes so far.
   */
  #closing = false;
  #dropped = 0;
  /** Destroys the socket if it is still open when it fires (#letGoAfter), at #letGoBy (ms). */
  #letGoTimer: ReturnType<typeof setTimeout> | undefined;
  #letGoBy = Infinity;
  /** The latest ping's payload, its pong waiting for the socket to drain (see #answerPing). */
  #pongOwed: Uint8Array | null = null;
  /** Pings and pongs the peer may still send now, and when that was last worked out (ms). */
  #controlTokens = CONTROL_FRAME_BURST;
  #controlCountedAt = performance.now();

  /**
   * `socket` is the upgraded connection; `head` what arrived after the upgrade request;
   * `awaitingClose` the front's count that bounds the sockets waiting for their peer's close.
   */
  constructor(socket: Socket, head: Uint8Array, awaitingClose: AwaitingClose) {
    this.#socket = socket;
    this.#awaitingClose = awaitingClose;
    socket.setNoDelay(true);
    this.readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => {
        if (this.#state.kind !== "done") socket.resume();
      },
    }, { highWaterMark: 4 });
    socket.on("data", (chunk: Uint8Array) => this.#take(chunk));
    socket.on("end", () => this.#end());
    socket.on("close", () => this.#end());
    socket.on("error", () => this.#fail("the WebSocket's connection failed"));
    if (head.length > 0) this.#take(head);
  }

  #take(chunk: Uint8Array): void {
    if (this.#closing) {
      // Read while the close lingers (PROTOCOL §7 "Ending with an error"), a bounded amount.
      this.#dropped += chunk.length;
      if (this.#dropped > LINGER_MAX_BYTES) {
        this.#socket.destroy();
        return;
      }
    }
    let at = 0;
    while (at < chunk.length && this.#state.kind !== "done") {
      at = this.#state.kind === "header"
        ? this.#readHeader(chunk, at)
        : this.#readPayload(chunk, at);
    }
    // Once closing, the stream has ended (its desiredSize is 0) and nothing waits for the core.
    if (!this.#closing && (this.#controller.desiredSize ?? 1) <= 0) this.#socket.pause();
  }

  /**
   * Reads a header from `chunk` at `at`, in place when it is whole there (nothing allocated per
   * frame: a peer's empty frames cost little, review14a), else gathered in #header across reads;
   * starts the payload when the header is whole.
   */
  #readHeader(chunk: Uint8Array, at: number): number {
    let h: Uint8Array;
    let base: number;
    if (
      this.#headerFilled === 0 && chunk.length - at >= 2 &&
      chunk.length - at >= headerBytes(chunk[at + 1])
    ) {
      h = chunk;
      base = at;
      at += headerBytes(chunk[at + 1]);
    } else {
      const header = this.#header;
      for (;;) {
        const needed = this.#headerFilled < 2 ? 2 : headerBytes(header[1]);
        if (this.#headerFilled === needed || at === chunk.length) break;
        const take = Math.min(needed - this.#headerFilled, chunk.length - at);
        header.set(chunk.subarray(at, at + take), this.#headerFilled);
        this.#headerFilled += take;
        at += take;
      }
      if (this.#headerFilled < 2 || this.#headerFilled < headerBytes(header[1])) return at;
      this.#headerFilled = 0;
      h = header;
      base = 0;
    }
    const fin = (h[base] & 0x80) !== 0;
    const opcode = h[base] & 0x0f;
    const len7 = h[base + 1] & 0x7f;
    // A 64-bit length above 2^53 is read as "very large": it is over the limit either way.
    const length = len7 === 126
      ? (h[base + 2] << 8) | h[base + 3]
      : len7 === 127
      ? u32At(h, base + 2) * 2 ** 32 + u32At(h, base + 6)
      : len7;
    const maskAt = base + headerBytes(h[base + 1]) - 4;
    if ((h[base] & 0x70) !== 0) return this.#refuse(CLOSE_PROTOCOL_ERROR, "reserved bits set");
    if ((h[base + 1] & 0x80) === 0) {
      return this.#refuse(CLOSE_PROTOCOL_ERROR, "unmasked client frame");
    }
    if (opcode >= 0x8) {
      if (opcode !== OP_CLOSE && opcode !== OP_PING && opcode !== OP_PONG) {
        return this.#refuse(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
      }
      if (!fin || length > 125) return this.#refuse(CLOSE_PROTOCOL_ERROR, "bad control frame");
      if (opcode !== OP_CLOSE && !this.#spendControlToken()) {
        return this.#refuse(
          CLOSE_POLICY_VIOLATION,
          `more than ${CONTROL_FRAME_BURST} pings and pongs at once ` +
            `(${CONTROL_FRAMES_PER_SECOND} a second)`,
        );
      }
    } else if (this.#closing) {
      // Our close is sent: a data frame of any kind is passed over (RFC 6455 §5.5.1: the peer
      // may still be sending; nothing of it is acted on), but one announced above the limit
      // ends the wait as a refused frame does: no honest peer sends it, and passing over its
      // payload would read up to LINGER_MAX_BYTES for a close frame that may never come.
      if (length > MAX_FRAME_BYTES) {
        return this.#refuse(CLOSE_MESSAGE_TOO_BIG, "a message above the frame limit");
      }
    } else if (opcode === OP_TEXT) {
      return this.#refuse(CLOSE_UNSUPPORTED_DATA, "a WebSocket text message is not a frame");
    } else if (opcode === OP_CONTINUATION ? this.#fragments === null : this.#fragments !== null) {
      return this.#refuse(CLOSE_PROTOCOL_ERROR, "continuation out of place");
    } else if (opcode !== OP_BINARY && opcode !== OP_CONTINUATION) {
      return this.#refuse(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
    } else if (opcode === OP_CONTINUATION && this.#fragments!.length >= MAX_FRAGMENTS) {
      return this.#refuse(CLOSE_MESSAGE_TOO_BIG, `a message in more than ${MAX_FRAGMENTS} frames`);
    } else if (this.#fragmentBytes + length > MAX_FRAME_BYTES) {
      // Announced above the limit: FrameReader is given that length alone and answers
      // FRAME_TOO_LARGE; the payload is never read (nor, after our close, parsed past).
      this.#enqueue(u32be(Math.min(this.#fragmentBytes + length, 0xffffffff)));
      this.#state = DONE;
      this.#overLimit = true;
      this.#socket.pause();
      return Number.MAX_SAFE_INTEGER;
    }
    const skip = this.#closing && opcode < 0x8;
    this.#payload = skip || length === 0 ? EMPTY : new Uint8Array(length);
    this.#filled = 0;
    for (let i = 0; i < 4; i++) this.#mask[i] = h[maskAt + i];
    this.#state = { kind: "payload", opcode, fin, left: length, skip };
    if (length === 0) this.#frameDone();
    return at;
  }

  /** Takes one of the peer's control-frame tokens (refilled at CONTROL_FRAMES_PER_SECOND). */
  #spendControlToken(): boolean {
    const now = performance.now();
    const earned = (now - this.#controlCountedAt) * CONTROL_FRAMES_PER_SECOND / 1000;
    this.#controlTokens = Math.min(CONTROL_FRAME_BURST, this.#controlTokens + earned);
    this.#controlCountedAt = now;
    if (this.#controlTokens < 1) return false;
    this.#controlTokens--;
    return true;
  }

  #readPayload(chunk: Uint8Array, at: number): number {
    const state = this.#state as Extract<ReadState, { kind: "payload" }>;
    const take = Math.min(state.left, chunk.length - at);
    if (!state.skip) {
      const mask = this.#mask;
      const into = this.#payload;
      for (let i = 0; i < take; i++) {
        const offset = this.#filled + i;
        into[offset] = chunk[at + i] ^ mask[offset & 3];
      }
      this.#filled += take;
    }
    state.left -= take;
    if (state.left === 0) this.#frameDone();
    return at + take;
  }

  #frameDone(): void {
    const state = this.#state as Extract<ReadState, { kind: "payload" }>;
    const payload = this.#payload;
    this.#payload = EMPTY;
    this.#state = AT_HEADER;
    if (this.#closing) {
      // Our close is sent: the peer's answers it and completes the close handshake; the rest
      // (data, a ping, a frame begun before our close) is dropped.
      if (state.opcode === OP_CLOSE) this.#letGo();
      return;
    }
    switch (state.opcode) {
      case OP_PING:
        this.#answerPing(payload);
        return;
      case OP_PONG:
        return;
      case OP_CLOSE: {
        if (payload.length === 0) return this.#answerClose(CLOSE_NORMAL);
        const code = payload.length >= 2 ? (payload[0] << 8) | payload[1] : undefined;
        if (code === undefined || !closeCodeReceivable(code)) {
          // A code the peer may not send (RFC 6455 §7.4): echoing it would send one we may not
          // send either (1005, 1006, 1015 never go on the wire). A one-byte body is no code.
          this.#refuse(CLOSE_PROTOCOL_ERROR, `a close with ${describeCloseBody(payload)}`);
          return;
        }
        if (!validUtf8(payload.subarray(2))) {
          this.#refuse(CLOSE_INVALID_DATA, "a close whose reason is not UTF-8");
          return;
        }
        return this.#answerClose(code);
      }
    }
    if (!state.fin) {
      (this.#fragments ??= []).push(payload);
      this.#fragmentBytes += payload.length;
      return;
    }
    const message = this.#fragments ? join([...this.#fragments, payload]) : payload;
    this.#fragments = null;
    this.#fragmentBytes = 0;
    // Re-framed with its length so FrameReader, the one parse chokepoint, judges it (an
    // empty message is its zero-length fault).
    this.#enqueue(message.length === 0 ? u32be(0) : concat(u32be(message.length), message));
  }

  /**
   * Pings never reach FrameReader, so no send-queue bound holds their answers: node buffers
   * whatever is written. A peer that pings and never reads would make the server hold every pong
   * (review10 R10-4: 140 MB in two seconds). So while the socket holds more than its high-water
   * mark, only the latest ping is answered, once it drains (RFC 6455 §5.5.3 allows answering only
   * the most recent ping); past the mark a write has returned false, so "drain" will come.
   */
  #answerPing(payload: Uint8Array): void {
    if (this.#socket.writableLength < this.#socket.writableHighWaterMark) {
      this.#sendFrame(OP_PONG, payload);
      return;
    }
    const waiting = this.#pongOwed !== null;
    this.#pongOwed = payload;
    if (waiting) return;
    this.#socket.once("drain", () => {
      const owed = this.#pongOwed;
      this.#pongOwed = null;
      if (owed) this.#sendFrame(OP_PONG, owed);
    });
  }

  /**
   * Answers the peer's close with `code` (RFC 6455 §5.5.1: it echoes theirs) and ends the stream.
   * The close handshake is then complete: the socket is let go once the answer is written (RFC
   * 6455 §7.1.1: the server closes the TCP connection first), not when the peer's FIN comes.
   */
  #answerClose(code: number): void {
    this.#sendFrame(OP_CLOSE, u16(code));
    this.#state = DONE;
    this.#end();
    this.#closeSent(false);
  }

  /**
   * Ends the stream with PROTOCOL_ERROR and closes with `code`; returns "stop reading". After our
   * close a frame that would be refused ends the wait for the peer's close instead (PROTOCOL §7):
   * the stream has ended and our close is sent, so nothing is failed or sent again, and a peer
   * that sends malformed frames is not waited on (its close after one would go unparsed).
   */
  #refuse(code: number, why: string): number {
    if (this.#closing) {
      this.#letGo();
      return Number.MAX_SAFE_INTEGER;
    }
    this.#state = DONE;
    this.#fail(why);
    this.#closeWith(code);
    return Number.MAX_SAFE_INTEGER;
  }

  #enqueue(bytes: Uint8Array): void {
    if (this.#ended) return;
    this.#controller.enqueue(bytes);
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.#controller.close();
    } catch {
      // already errored
    }
  }

  #fail(why: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#controller.error(new SecureChatError("PROTOCOL_ERROR", why));
  }

  /**
   * Takes bytes FrameConnection writes (whole length-prefixed frames, possibly several or a
   * part of one) and sends each complete frame's payload as one binary message, all of one
   * write in one socket write. Resolves once the socket has drained, so FrameConnection's
   * send-queue bound holds against a peer that stops reading.
   */
  async write(bytes: Uint8Array): Promise<number> {
    if (this.#socket.destroyed || !this.#socket.writable) {
      throw new SecureChatError("PROTOCOL_ERROR", "the WebSocket is not open");
    }
    const { payloads, rest } = splitFrames(this.#pendingOut, bytes);
    this.#pendingOut = rest;
    const out = payloads.flatMap((payload) => [frameHeader(OP_BINARY, payload.length), payload]);
    if (out.length > 0 && !this.#socket.write(join(out))) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#socket.off("drain", done);
          this.#socket.off("close", done);
          resolve();
        };
        this.#socket.on("drain", done);
        this.#socket.on("close", done);
      });
    }
    return bytes.length;
  }

  close(): void {
    this.#closeWith(CLOSE_NORMAL);
  }

  /**
   * Sends a close and ends our side; nothing read after it matters, so the stream ends now
   * (as a closed TCP connection's reads do) rather than when the peer answers, if it does.
   */
  #closeWith(code: number): void {
    this.#end();
    this.#sendFrame(OP_CLOSE, u16(code));
    this.#closeSent(!this.#overLimit && this.#awaitingClose.count < MAX_AWAITING_CLOSE);
  }

  /**
   * Our close is on its way (sent, or the peer's answered): ends our side, and lets the socket go
   * in bounded time whatever the peer does (node's upgrade sockets allow a half-open connection,
   * so a peer that never sends its FIN would keep it open: review13). If `waitForPeer`, reads go
   * on until the peer's close frame (#frameDone), so the descriptor is not closed over unread data
   * (a reset, which can lose what we sent last: PROTOCOL §7), for the front's grace at most,
   * counted in its AwaitingClose; what else arrives is dropped. The wait is our choice, not the
   * RFC's: it keeps a reset from eating our close. Reading stops for good (the stream's place is
   * not followed) after a refusal (RFC 6455 §7.1.7: nothing after it is processed, a close frame
   * included): then only the peer's FIN or the grace ends the wait. After a message announced
   * above the limit, whose payload is never read, #closeWith does not wait (a peer that sent one
   * is not waited on, PROTOCOL §7). Otherwise the close handshake is complete (#letGo).
   */
  #closeSent(waitForPeer: boolean): void {
    const socket = this.#socket;
    if (this.#closing || socket.destroyed) return;
    this.#closing = true;
    socket.resume();
    socket.once("close", () => clearTimeout(this.#letGoTimer));
    if (!waitForPeer) return this.#letGo();
    const awaiting = this.#awaitingClose;
    awaiting.count++;
    socket.once("close", () => awaiting.count--);
    socket.end();
    this.#letGoAfter(awaiting.graceMs);
  }

  /**
   * Lets the socket go once our writes have left (within LINGER_MS, for a peer that does not read
   * them), reading nothing more: both closes are sent, so the close handshake is complete and the
   * server closes the TCP connection first (RFC 6455 §7.1.1), or the front has MAX_AWAITING_CLOSE
   * sockets waiting already.
   */
  #letGo(): void {
    this.#state = DONE;
    const socket = this.#socket;
    socket.end(() => socket.destroy());
    this.#letGoAfter(LINGER_MS);
  }

  /**
   * Destroys the socket in `ms` if it is still open then, unless an earlier deadline is set: a
   * deadline only moves closer (the peer's close late in the grace does not extend it, review14a
   * finding 2).
   */
  #letGoAfter(ms: number): void {
    const by = performance.now() + ms;
    if (by >= this.#letGoBy) return;
    this.#letGoBy = by;
    clearTimeout(this.#letGoTimer);
    this.#letGoTimer = setTimeout(() => this.#socket.destroy(), ms);
    Deno.unrefTimer(this.#letGoTimer);
  }

  #sendFrame(opcode: number, payload: Uint8Array): void {
    if (this.#socket.destroyed || !this.#socket.writable) return;
    this.#socket.write(concat(frameHeader(opcode, payload.length), payload));
  }
}

/**
 * Whether a peer may send `code` in a close (RFC 6455 §7.4): the codes defined for that
 * (1000–1003, 1007–1011) or registered with IANA since (1012–1014), and 3000–4999 (libraries,
 * applications). Not 1004 (reserved), nor 1005, 1006 and 1015, which stand for "no code", "no
 * close" and "TLS failed" in an API and never go on the wire; the rest of 0–2999 is reserved.
 */
export function closeCodeReceivable(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999);
}

/** A close body for a log line: its code, or that it is too short for one. */
function describeCloseBody(payload: Uint8Array): string {
  return payload.length < 2
    ? `a ${payload.length}-byte body`
    : `code ${(payload[0] << 8) | payload[1]}`;
}

function validUtf8(bytes: Uint8Array): boolean {
  try {
    fromUtf8(bytes);
    return true;
  } catch {
    return false;
  }
}

/** A final, unmasked (server) frame's header for a payload of `length` bytes (< 2^32). */
function frameHeader(opcode: number, length: number): Uint8Array {
  if (length < 126) return Uint8Array.of(0x80 | opcode, length);
  if (length <= 0xffff) return Uint8Array.of(0x80 | opcode, 126, length >> 8, length & 0xff);
  const header = new Uint8Array(10);
  header[0] = 0x80 | opcode;
  header[1] = 127;
  new DataView(header.buffer).setUint32(6, length);
  return header;
}

function u16(value: number): Uint8Array {
  return Uint8Array.of(value >> 8, value & 0xff);
}
