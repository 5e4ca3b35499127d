/**
 * A chat session after the handshake (PROTOCOL §6, §7): sends and receives signed
 * `msg` frames, records every accepted one in the transcript, and ends with the
 * close / receipt exchange. The read loop and every send run through one object so
 * the transcript sees each message exactly once.
 */
import { toBase64, utf8 } from "../bytes.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import {
  errorFromPeer,
  errorMessageFor,
  type EstablishedSession,
  isFromPeer,
} from "../handshake/common.ts";
import type { Receipt } from "../transcript/receipt.ts";
import { TranscriptWriter } from "../transcript/writer.ts";
import {
  CloseSchema,
  ErrorSchema,
  type MsgBody,
  type MsgBodyJson,
  MsgSchema,
  parseMessage,
  ReceiptEnvelopeSchema,
  SealedSchema,
} from "../wire/messages.ts";
import {
  ChatReceiver,
  ChatSender,
  msgFrame,
  type OpenedMsg,
  type SealedMsg,
  type SenderLimits,
} from "./chat_channel.ts";
import { type AuthorRecord, type RelayedText, RelayVerifier } from "./relay.ts";
import type { TrustStore } from "../pki/validate.ts";

export const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 5000;
/** Rejected messages tolerated before the session is ended with the last code. */
export const MAX_REJECTED_MESSAGES = 16;

export interface ChatSessionOptions extends SenderLimits {
  transcriptDir: string;
  /** The name the client dialled, recorded so `verify` can match the server certificate. */
  serverName?: string;
  /** Clients pass their trust store to check the authors of relayed messages (§6.4). */
  relayTrust?: TrustStore;
  startedAt?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  maxSkewMs?: number;
}

export interface ReceivedMessage {
  body: MsgBody;
  seqno: number;
  ts: number;
  /** The frame as received, and its one-message key: what a relay forwards (§6.4). */
  sealed: SealedMsg;
  messageKey: Uint8Array;
  /** For a relay: the verified author and the author's text. */
  relayed?: RelayedText;
}

export interface SessionHandlers {
  onMessage(message: ReceivedMessage): void | Promise<void>;
  /** A message that failed a check: never shown, never relayed; the caller logs it. */
  onRejected?(error: SecureChatError, seqno: number): void;
}

export interface SessionEnd {
  /** "closed": both receipts exchanged; otherwise why the session ended. */
  outcome: "closed" | "peer_gone" | "error";
  code?: string;
  message?: string;
  transcriptPath: string;
  receiptPath?: string;
  peerReceiptPath?: string;
}

type CloseState = { sent: boolean; received: boolean; receiptSent: boolean };

export class ChatSession {
  readonly #est: EstablishedSession;
  readonly #sender: ChatSender;
  readonly #receiver: ChatReceiver;
  readonly #transcript: TranscriptWriter;
  readonly #opts: ChatSessionOptions;
  readonly #relays?: RelayVerifier;
  #sending: Promise<void> = Promise.resolve();
  #close: CloseState = { sent: false, received: false, receiptSent: false };
  #ownReceipt?: Receipt;
  #peerReceipt?: Receipt;
  #rejected = 0;
  /** Set when the close starts: no message may be numbered after it. */
  #stopped = false;
  /** Set when the session ends without the close exchange: nothing more is sent or recorded. */
  #ended = false;
  #aborted?: SecureChatError;
  #closeTimer?: ReturnType<typeof setTimeout>;

  private constructor(
    est: EstablishedSession,
    sender: ChatSender,
    receiver: ChatReceiver,
    transcript: TranscriptWriter,
    opts: ChatSessionOptions,
  ) {
    this.#est = est;
    this.#sender = sender;
    this.#receiver = receiver;
    this.#transcript = transcript;
    this.#opts = opts;
    if (opts.relayTrust) this.#relays = new RelayVerifier(opts.relayTrust);
  }

  /** @throws TRANSCRIPT_IO when the transcript cannot be created: no session without a record */
  static async start(est: EstablishedSession, opts: ChatSessionOptions): Promise<ChatSession> {
    let transcript: TranscriptWriter;
    try {
      transcript = await TranscriptWriter.create(opts.transcriptDir, {
        sessionId: est.sessionId,
        role: est.role,
        clientCertDer: est.role === "client" ? est.self.certDer : est.peer.der,
        serverCertDer: est.role === "server" ? est.self.certDer : est.peer.der,
        startedAt: opts.startedAt ?? Date.now(),
        serverName: opts.serverName,
      });
    } catch (error) {
      // The peer has finished its handshake and waits to chat: tell it why not.
      if (error instanceof SecureChatError) await sendControlError(est, error);
      throw error;
    }
    const sender = ChatSender.create(est.chatSendSecret, est.self.signingKey, opts);
    const receiver = ChatReceiver.create(est.chatReceiveSecret, est.peerKey, opts.maxSkewMs);
    return new ChatSession(est, sender, receiver, transcript, opts);
  }

  get sessionId(): string {
    return this.#est.sessionId;
  }
  get username(): string {
    return this.#est.username;
  }
  get established(): EstablishedSession {
    return this.#est;
  }
  get transcriptPath(): string {
    return this.#transcript.path;
  }
  get closing(): boolean {
    return this.#stopped || this.#close.received || this.#ended;
  }

  /**
   * Encrypts, signs, sends and records one message. Sends are serialised so seqnos
   * leave in order. Refused once the session is closing.
   * @throws PROTOCOL_ERROR when closing, SLOW_CONSUMER when the peer stopped reading, TRANSCRIPT_IO
   */
  send(body: MsgBodyJson, author?: AuthorRecord): Promise<void> {
    if (this.#stopped || this.#ended) {
      return Promise.reject(new SecureChatError("PROTOCOL_ERROR", "session is closing"));
    }
    // Numbered now, encrypted and signed concurrently; sent and recorded in order.
    const sealing = this.#sender.seal(body);
    sealing.catch(() => {}); // handled when its turn comes; not an unhandled rejection before
    const next = this.#sending.then(async () => {
      const dir = this.#est.role === "client" ? "c2s" : "s2c";
      const sealed = await sealing;
      for (const [i, m] of sealed.entries()) {
        const frame = utf8(JSON.stringify(msgFrame(m)));
        // A client follows the server's pace; the server never waits for one slow client.
        if (this.#est.role === "client") await this.#est.conn.sendPaced(frame);
        else this.#est.conn.send(frame);
        // A key_update may precede the body; the author record belongs to the body alone.
        const isBody = i === sealed.length - 1;
        await this.#transcript.append({ dir, ...m, ...(isBody && author ? { author } : {}) });
      }
    });
    this.#sending = next.catch(() => {});
    return next;
  }

  /** Starts the close exchange; `run()` resolves once receipts are exchanged or time runs out. */
  async close(): Promise<void> {
    await this.#sendClose();
    this.#armCloseTimer();
    await this.#maybeSendReceipt();
  }

  /**
   * Stops new messages at once, lets those already numbered go out, then sends
   * `close`: nothing of ours can follow it on the wire (PROTOCOL §7).
   */
  async #sendClose(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.#sending;
    await this.#sendControl({ type: "close" });
    this.#close.sent = true;
  }

  /** Ends the session now with `error` (e.g. SLOW_CONSUMER): no receipts, `run()` reports it. */
  abort(error: SecureChatError): void {
    this.#aborted ??= error;
    this.#ended = true;
    this.#est.conn.close();
  }

  /**
   * Ends the session now because of `error` (its certificate was revoked, say): the peer is
   * told the code under the control keys, no receipts are exchanged, and `run()` reports it.
   */
  async terminate(error: SecureChatError): Promise<void> {
    if (this.#ended) return;
    this.#aborted ??= error;
    this.#ended = true;
    try {
      await sendControl(this.#est, errorMessageFor(error));
      await this.#est.conn.flush(1000);
    } catch {
      // the peer is gone; the local log still has the code
    }
    this.#est.conn.close();
  }

  /** Reads until the session ends; never throws. */
  async run(handlers: SessionHandlers): Promise<SessionEnd> {
    try {
      while (!(this.#close.receiptSent && this.#peerReceipt)) {
        const payload = await this.#nextFrame();
        if (this.#aborted) return await this.#end("error", this.#aborted);
        if (payload === null) return await this.#end("peer_gone");
        await this.#handle(payload, handlers);
      }
      const files = await this.#transcript.finish(this.#ownReceipt!, this.#peerReceipt);
      return { outcome: "closed", transcriptPath: this.transcriptPath, ...files };
    } catch (error) {
      return await this.#end("error", this.#aborted ?? error);
    } finally {
      clearTimeout(this.#closeTimer);
      await this.#est.conn.flush(1000);
      this.#est.conn.close();
    }
  }

  async #nextFrame(): Promise<Uint8Array | null> {
    const timeout = this.closing
      ? this.#opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS
      : this.#opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    return await this.#est.conn.read(timeout);
  }

  async #handle(payload: Uint8Array, handlers: SessionHandlers): Promise<void> {
    const frame = parseMessage(payload, MsgSchema.or(SealedSchema).or(ErrorSchema));
    if (frame.type === "error") throw errorFromPeer(frame.code, frame.message, false);
    if (frame.type === "sealed") return await this.#handleControl(frame.ct);
    if (this.#close.received) {
      throw new SecureChatError("PROTOCOL_ERROR", "message after the peer's close");
    }
    const m: SealedMsg = { seqno: frame.seqno, ts: frame.ts, ct: frame.ct, sig: frame.sig };
    let opened: OpenedMsg;
    try {
      opened = await this.#receiver.open(m);
    } catch (error) {
      return this.#reject(error, m.seqno, handlers);
    }
    const dir = this.#est.role === "client" ? "s2c" : "c2s";
    let relayed: RelayedText | undefined;
    if (opened.body.kind === "relay" && this.#relays) {
      try {
        relayed = await this.#relays.open(opened.body);
      } catch (error) {
        // The hop itself was genuine, so it is recorded (without an author); the
        // forged or broken relay is neither shown nor attributed.
        await this.#transcript.append({ dir, ...m });
        return this.#reject(error, m.seqno, handlers);
      }
    }
    await this.#transcript.append({ dir, ...m, ...(relayed ? { author: relayed.record } : {}) });
    try {
      if (opened.body.kind !== "key_update") {
        await handlers.onMessage({
          body: opened.body,
          seqno: m.seqno,
          ts: m.ts,
          sealed: m,
          messageKey: opened.messageKey,
          relayed,
        });
      }
    } finally {
      opened.messageKey.fill(0);
    }
  }

  /** A message that failed a check: logged by the caller, dropped, counted. */
  #reject(error: unknown, seqno: number, handlers: SessionHandlers): void {
    const code = codeOf(error);
    // A gap or an unreadable body is a broken stream, not one bad message.
    if (code === "PROTOCOL_ERROR" || code === "INTERNAL") throw error;
    handlers.onRejected?.(error as SecureChatError, seqno);
    if (++this.#rejected >= MAX_REJECTED_MESSAGES) {
      throw new SecureChatError(code, `${this.#rejected} rejected messages: ending the session`);
    }
  }

  async #handleControl(ct: Uint8Array): Promise<void> {
    const inner = await this.#est.control.open(ct);
    const message = parseMessage(inner, CloseSchema.or(ReceiptEnvelopeSchema).or(ErrorSchema));
    if (message.type === "error") {
      const { code, message: text } = message as { code: string; message?: string };
      throw errorFromPeer(code, text, true);
    }
    if (message.type === "close") {
      if (this.#close.received) throw new SecureChatError("PROTOCOL_ERROR", "second close");
      this.#close.received = true;
      await this.#sendClose();
      this.#armCloseTimer();
      await this.#maybeSendReceipt();
      return;
    }
    if (!this.#close.received || this.#peerReceipt) {
      throw new SecureChatError("PROTOCOL_ERROR", "receipt out of order");
    }
    this.#peerReceipt = await this.#transcript.acceptPeerReceipt(message, this.#est.peer.der);
  }

  /** Both closes seen: no message can be added on either side, so the hash is final. */
  async #maybeSendReceipt(): Promise<void> {
    if (!this.#close.sent || !this.#close.received || this.#close.receiptSent) return;
    this.#ownReceipt = await this.#transcript.createReceipt(this.#est.self.signingKey);
    await this.#sendControl(this.#ownReceipt);
    this.#close.receiptSent = true;
  }

  #sendControl(message: unknown): Promise<void> {
    return sendControl(this.#est, message);
  }

  #armCloseTimer(): void {
    this.#closeTimer ??= setTimeout(
      () => this.#est.conn.close(),
      (this.#opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS) * 2,
    );
  }

  /** Ends without the full exchange: keep what we have, tell the peer why where we can. */
  async #end(outcome: "peer_gone" | "error", error?: unknown): Promise<SessionEnd> {
    this.#ended = true;
    const code = error === undefined ? undefined : codeOf(error);
    if (error instanceof SecureChatError && !isFromPeer(error) && !this.#est.conn.closed) {
      await sendControlError(this.#est, error);
    }
    const end: SessionEnd = {
      outcome,
      code,
      message: error instanceof Error ? error.message : undefined,
      transcriptPath: this.transcriptPath,
    };
    if (this.#ownReceipt) {
      Object.assign(end, await this.#transcript.finish(this.#ownReceipt, this.#peerReceipt));
    } else {
      await this.#transcript.abort();
    }
    return end;
  }
}

/** One sealed control message (close, receipt, error) under the control keys (§3.2). */
async function sendControl(est: EstablishedSession, message: unknown): Promise<void> {
  const ct = await est.control.seal(utf8(JSON.stringify(message)));
  est.conn.send(utf8(JSON.stringify({ type: "sealed", ct: toBase64(ct) })));
}

/** Tells the peer why the session ends, then closes so that the message survives. */
async function sendControlError(est: EstablishedSession, error: SecureChatError): Promise<void> {
  try {
    await sendControl(est, errorMessageFor(error));
  } catch {
    // the peer is gone; the local log still has the code
  }
  await est.conn.lingerClose();
}
