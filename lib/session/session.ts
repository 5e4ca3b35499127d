/**
 * A chat session after the handshake (PROTOCOL §6, §7): sends and receives signed
 * `msg` frames, records every accepted one in the transcript, and ends with the
 * close / receipt exchange. The read loop and every send run through one object so
 * the transcript sees each message exactly once.
 */
import { toBase64, utf8 } from "../bytes.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import { errorFromPeer, type EstablishedSession, isFromPeer } from "../handshake/common.ts";
import type { Receipt } from "../transcript/receipt.ts";
import { TranscriptWriter } from "../transcript/writer.ts";
import {
  CloseSchema,
  ErrorSchema,
  type MsgBody,
  MsgSchema,
  parseMessage,
  ReceiptEnvelopeSchema,
  SealedSchema,
} from "../wire/messages.ts";
import {
  ChatReceiver,
  ChatSender,
  msgFrame,
  type SealedMsg,
  type SenderLimits,
} from "./chat_channel.ts";

export const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 5000;
/** Rejected messages tolerated before the session is ended with the last code. */
export const MAX_REJECTED_MESSAGES = 16;

export interface ChatSessionOptions extends SenderLimits {
  transcriptDir: string;
  startedAt?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  maxSkewMs?: number;
}

export interface ReceivedMessage {
  body: MsgBody;
  seqno: number;
  ts: number;
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
  #sending: Promise<void> = Promise.resolve();
  #close: CloseState = { sent: false, received: false, receiptSent: false };
  #ownReceipt?: Receipt;
  #peerReceipt?: Receipt;
  #rejected = 0;
  #closeTimer?: ReturnType<typeof setTimeout>;
  #wake?: () => void;

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
  }

  /** @throws TRANSCRIPT_IO when the transcript cannot be created: no session without a record */
  static async start(est: EstablishedSession, opts: ChatSessionOptions): Promise<ChatSession> {
    const transcript = await TranscriptWriter.create(opts.transcriptDir, {
      sessionId: est.sessionId,
      role: est.role,
      clientCertDer: est.role === "client" ? est.self.certDer : est.peer.der,
      serverCertDer: est.role === "server" ? est.self.certDer : est.peer.der,
      startedAt: opts.startedAt ?? Date.now(),
    });
    const sender = await ChatSender.create(est.chatSendSecret, est.self.signingKey, opts);
    const receiver = await ChatReceiver.create(est.chatReceiveSecret, est.peerKey, opts.maxSkewMs);
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
    return this.#close.sent || this.#close.received;
  }

  /**
   * Encrypts, signs, sends and records one message. Sends are serialised so seqnos
   * leave in order. Refused once the session is closing.
   * @throws PROTOCOL_ERROR when closing, SLOW_CONSUMER when the peer stopped reading, TRANSCRIPT_IO
   */
  send(body: MsgBody): Promise<void> {
    const next = this.#sending.then(async () => {
      if (this.#close.sent) throw new SecureChatError("PROTOCOL_ERROR", "session is closing");
      const dir = this.#est.role === "client" ? "c2s" : "s2c";
      for (const m of await this.#sender.seal(body)) {
        this.#est.conn.send(utf8(JSON.stringify(msgFrame(m))));
        await this.#transcript.append({ dir, ...m });
      }
    });
    this.#sending = next.catch(() => {});
    return next;
  }

  /** Starts the close exchange; `run()` resolves once receipts are exchanged or time runs out. */
  async close(): Promise<void> {
    await this.#sending;
    if (this.#close.sent) return;
    this.#close.sent = true;
    await this.#sendControl({ type: "close" });
    this.#armCloseTimer();
    await this.#maybeSendReceipt();
  }

  /** Reads until the session ends; never throws. */
  async run(handlers: SessionHandlers): Promise<SessionEnd> {
    try {
      while (!(this.#close.receiptSent && this.#peerReceipt)) {
        const payload = await this.#nextFrame();
        if (payload === null) return await this.#end("peer_gone");
        await this.#handle(payload, handlers);
      }
      const files = await this.#transcript.finish(this.#ownReceipt!, this.#peerReceipt);
      return { outcome: "closed", transcriptPath: this.transcriptPath, ...files };
    } catch (error) {
      return await this.#end("error", error);
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
    if (frame.type === "error") throw errorFromPeer(frame.code);
    if (frame.type === "sealed") return await this.#handleControl(frame.ct);
    if (this.#close.received) {
      throw new SecureChatError("PROTOCOL_ERROR", "message after the peer's close");
    }
    const m: SealedMsg = { seqno: frame.seqno, ts: frame.ts, ct: frame.ct, sig: frame.sig };
    let body: MsgBody;
    try {
      body = await this.#receiver.open(m);
    } catch (error) {
      const code = codeOf(error);
      // A gap or an unreadable body is a broken stream, not one bad message.
      if (code === "PROTOCOL_ERROR" || code === "INTERNAL") throw error;
      handlers.onRejected?.(error as SecureChatError, m.seqno);
      if (++this.#rejected >= MAX_REJECTED_MESSAGES) {
        throw new SecureChatError(code, `${this.#rejected} rejected messages: ending the session`);
      }
      return;
    }
    const dir = this.#est.role === "client" ? "s2c" : "c2s";
    await this.#transcript.append({ dir, ...m });
    if (body.kind !== "key_update") await handlers.onMessage({ body, seqno: m.seqno, ts: m.ts });
  }

  async #handleControl(ct: Uint8Array): Promise<void> {
    const inner = await this.#est.control.open(ct);
    const message = parseMessage(inner, CloseSchema.or(ReceiptEnvelopeSchema).or(ErrorSchema));
    if (message.type === "error") throw errorFromPeer((message as { code: string }).code);
    if (message.type === "close") {
      if (this.#close.received) throw new SecureChatError("PROTOCOL_ERROR", "second close");
      this.#close.received = true;
      if (!this.#close.sent) {
        await this.#sending;
        this.#close.sent = true;
        await this.#sendControl({ type: "close" });
      }
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

  async #sendControl(message: unknown): Promise<void> {
    const ct = await this.#est.control.seal(utf8(JSON.stringify(message)));
    this.#est.conn.send(utf8(JSON.stringify({ type: "sealed", ct: toBase64(ct) })));
  }

  #armCloseTimer(): void {
    this.#closeTimer ??= setTimeout(
      () => this.#est.conn.close(),
      (this.#opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS) * 2,
    );
  }

  /** Ends without the full exchange: keep what we have, tell the peer why where we can. */
  async #end(outcome: "peer_gone" | "error", error?: unknown): Promise<SessionEnd> {
    const code = error === undefined ? undefined : codeOf(error);
    if (error instanceof SecureChatError && !isFromPeer(error) && !this.#est.conn.closed) {
      try {
        await this.#sendControl({ type: "error", code: error.code });
      } catch {
        // peer gone
      }
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
