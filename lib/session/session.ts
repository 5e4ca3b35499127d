/**
 * A chat session after the handshake (PROTOCOL §6, §7): every frame is a sealed
 * record; session messages (msg, relay, stored, queued, refused) are numbered per direction, checked,
 * recorded in the transcript and handed to the caller; the session ends with the
 * close / receipt exchange. Any failed check ends the session with its code: the
 * record layer already authenticated the frame, so a bad message is the peer's own.
 */
import { fromBase64, fromBase64Each, utf8 } from "../bytes.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import {
  DEFAULT_MAX_SKEW_MS,
  errorFromPeer,
  errorMessageFor,
  type EstablishedSession,
  isFromPeer,
  PEER_ERROR_GRACE_MS,
} from "../handshake/common.ts";
import {
  type AuthorCert,
  type Body,
  bodyFits,
  type C2sMsgMessage,
  C2sMsgShape,
  canonicalName,
  canonicalUserMsg,
  decodeRecord,
  type Direction,
  envelopeFits,
  type GroupItem,
  isClientRecipient,
  largestLoneRelayBytes,
  leafHash,
  LOBBY,
  MAX_CT_BYTES,
  MAX_UNREAD,
  type MessageRecord,
  msgLine,
  openContent,
  type PreparedLine,
  type PreparedRelay,
  prepareMsg,
  prepareQueued,
  prepareRefused,
  prepareRelay,
  type QueuedMessage,
  QueuedMessageShape,
  ReceivedGroup,
  receivedRelayLine,
  receivedStoredLine,
  RecipientRelay,
  RecipientRelayGroup,
  RecordForms,
  RecordSignatures,
  type RefusalCode,
  type RefusedMessage,
  RefusedMessageShape,
  RELAY_TAG,
  type RelayMessage,
  type RelayType,
  type S2cMsgMessage,
  S2cMsgShape,
  sealContent,
  type StoredMessage,
  StoredMessageShape,
  TO_SERVER,
  UserMsg,
  userMsgItem,
  type UserMsgRead,
  userMsgRead,
  userMsgsOf,
  userRecipient,
} from "../message/record.ts";
import type { Receipt } from "../transcript/receipt.ts";
import type { TranscriptStorage } from "../transcript/storage.ts";
import { TranscriptWriter } from "../transcript/writer.ts";
import { z } from "zod";
import {
  type CloseCode,
  CloseSchema,
  ErrorSchema,
  KeyUpdateSchema,
  parseMessage,
  parseMessageAndText,
  PASSWORD_REFUSAL_CODES,
  PasswordChangedSchema,
  PasswordChangeSchema,
  type PasswordRefusalCode,
  PasswordRefusedSchema,
  ReceiptEnvelopeSchema,
} from "../wire/messages.ts";
import { byType } from "../wire/shape.ts";
import { FRAME_HEADER_BYTES } from "../wire/connection.ts";
import {
  type E2eUnwrap,
  type RelayedMessage,
  type RelayedText,
  RelayVerifier,
  SeenStore,
  type SenderKeyUpdate,
} from "./relay.ts";
import type { E2eEnvelope } from "../e2e/envelope.ts";
import { assertOwnPublish } from "../e2e/bundle.ts";
import { SequenceWindow } from "./replay.ts";
import { BatchSigner } from "./batch_signer.ts";
import { authorCertOf, SessionCertList } from "../message/author_certs.ts";
import { readRelay } from "../message/relay_wire.ts";
import { signatureLength } from "../crypto/signature.ts";
import type { TrustStore } from "../pki/validate.ts";
import { atTurnEnd, endTurn, spendTurn, TURN_UNIT_BYTES } from "../turn.ts";
import { type C2sAnswer, C2sAnswers } from "../message/answers.ts";
import {
  type Content,
  CONTENT_OVERHEAD,
  MAX_CONTENT_BYTES,
  padContents,
  RECORD_PADDING,
  RecordOutbox,
  recordRuns,
  sealedLength,
} from "../handshake/record.ts";

/** A key_update on the wire (one padded record, §4.4): the room a paced record keeps for one. */
const KEY_UPDATE_WIRE_BYTES = FRAME_HEADER_BYTES + sealedLength(RECORD_PADDING);

export const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 5000;
/** A sender updates its key after this many records or this long (PROTOCOL §4.4). */
export const DEFAULT_KEY_UPDATE_RECORDS = 2 ** 20;
export const DEFAULT_KEY_UPDATE_MS = 60 * 60 * 1000;

export interface ChatSessionOptions {
  /** Where the transcript goes: transcriptDirectory(dir) for the CLI and the server. */
  transcripts: TranscriptStorage;
  /** The name the client dialled, recorded so `verify` can match the server certificate. */
  serverName?: string;
  /** Clients pass their trust store to check the authors of relayed messages (§6.4). */
  relayTrust?: TrustStore;
  /** Clients: relay high-water marks across sessions (§6.4); in memory if absent. */
  seen?: SeenStore;
  /** Clients keep each line's content key beside the transcript (TRANSCRIPT §6). */
  keepKeys?: boolean;
  /** Clients: the end-to-end layer (PROTOCOL §12.6) that wraps and unwraps content keys. */
  e2e?: E2eHooks;
  startedAt?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  maxSkewMs?: number;
  keyUpdateRecords?: number;
  keyUpdateMs?: number;
}

/** What a client's end-to-end layer does for the session (PROTOCOL §12.6). */
export interface E2eHooks {
  /**
   * The envelope for a record of ours (`body` is what `k` opens), or undefined when it goes
   * to the server (`to` = `server`: the server must read it). Called once the record is
   * numbered, in seqno order.
   * @throws when a recipient's keys are not known yet (the caller fetches them first)
   */
  wrap(record: MessageRecord, k: Uint8Array, body: Body): Promise<E2eEnvelope | undefined>;
  unwrap: E2eUnwrap;
  /** Makes the end-to-end state durable (before stored lines are acknowledged, §6.6). */
  save(): Promise<void>;
  /** An accepted relay carried its author's new lobby sender key (§12.5). */
  onSenderKey(author: string, update: SenderKeyUpdate): void;
}

/** A session message that passed every check. */
export type ReceivedMessage =
  | {
    type: "msg";
    seqno: number;
    ts: number;
    body: Body;
    record: MessageRecord;
    /** As received: what a relay forwards without re-serialising (§6.4). */
    forms: RecordForms;
    k: Uint8Array;
    /**
     * Server: a user's `text`, prepared for its relays and `stored` (PROTOCOL §6.3 step 7
     * passed for it before any record of its msg was acted on).
     */
    prepared?: PreparedRelay;
  }
  | {
    /**
     * An end-to-end record (server side): every check the server can make passed (§6.3
     * steps 1–4); its content key is not the server's to read.
     */
    type: "sealed";
    seqno: number;
    ts: number;
    record: MessageRecord;
    forms: RecordForms;
    e2e: E2eEnvelope;
    /** Server: prepared for its relays and `stored`, as a `msg`'s `text` (§6.3 step 7). */
    prepared?: PreparedRelay;
  }
  | { type: "relay"; seqno: number; ts: number; relayed: RelayedText }
  | { type: "refused"; seqno: number; ts: number; of: number; code: RefusalCode }
  | { type: "queued"; seqno: number; ts: number; of: number };

export interface SessionHandlers {
  onMessage(message: ReceivedMessage): void | Promise<void>;
  /**
   * Server: the user asks to change their own password (PROTOCOL §6.7). Resolves once the
   * change is made; a rejection's code (one of PASSWORD_REFUSAL_CODES, else INTERNAL) is the
   * answer. Without it, a `password_change` is PROTOCOL_ERROR.
   */
  onPasswordChange?(oldPassword: string, newPassword: string): Promise<void>;
}

export interface SessionEnd {
  /** "closed": both receipts exchanged; otherwise why the session ended. */
  outcome: "closed" | "peer_gone" | "error";
  code?: string;
  message?: string;
  /**
   * The code is the peer's: it ended the session with an `error` (PROTOCOL §8.1), or the
   * server closed it cleanly for the reason its `close` gave (§5.2, §7.1; `outcome` is "closed").
   */
  fromPeer?: boolean;
  /**
   * Client: the code the server's `close` carried (PROTOCOL §5.2, §7.1), kept even when the
   * receipt exchange then failed (`outcome` "error"): the server's reason stands either way.
   */
  closeCode?: CloseCode;
  transcriptPath: string;
  receiptPath?: string;
  peerReceiptPath?: string;
}

type CloseState = {
  sent: boolean;
  received: boolean;
  receiptSent: boolean;
  /** Client: the reason the server's `close` gave (PROTOCOL §5.2, §7.1). */
  code?: CloseCode;
};

/** What a `close` with a code says (PROTOCOL §5.2, §7.1): the server's reason, in our words. */
const CLOSE_REASONS: Record<CloseCode, string> = {
  SESSION_TAKEN_OVER: "the server closed the session (receipts exchanged) because this user " +
    "logged in again elsewhere",
  SERVER_CERT_EXPIRED: "the server closed the session (receipts exchanged) because its " +
    "certificate, or the CA's, is about to expire",
  SERVER_CERT_REVOKED: "the server closed the session (receipts exchanged) because its " +
    "certificate has been revoked",
};

/** Received messages held at most before their lines are written and they are acted on. */
const MAX_HELD = 64;
/** A record's bytes on the wire beyond its contents', at most: frame length, tag, padding. */
const RECORD_WIRE_OVERHEAD = 4 + 16 + RECORD_PADDING - 1;
/** A message checked and recorded, not yet acted on; `stored`: a hop from the offline queue. */
type Held = { message: ReceivedMessage; stored: boolean };

/** A record's line item that is never sent (the server's line of a user's msg): no carrier. */
const NO_TAIL = new Uint8Array(0);

/** A relay's own members around the shared part: type, seqno and ts (RecipientRelay). */
const HOP_HEAD_BYTES = 64;

export class ChatSession {
  readonly #est: EstablishedSession;
  readonly #transcript: TranscriptWriter;
  readonly #opts: ChatSessionOptions;
  readonly #relays?: RelayVerifier;
  readonly #sendDir: "c2s" | "s2c";
  readonly #receiveDir: "c2s" | "s2c";
  readonly #window = new SequenceWindow();
  /**
   * The server's list of the author certificates this session was sent (PROTOCOL §6.4.1),
   * made at the first relay: an idle session holds none.
   */
  #authorCerts?: SessionCertList<true>;
  /**
   * Server: the session messages made during this turn of the event loop, not sealed yet.
   * At the turn's end they leave together: as few records as hold them, one seal and one
   * frame each (PROTOCOL §3.2), instead of one per message.
   */
  #outbox?: RecordOutbox;
  /**
   * Server: the relay this turn made last, still taking records of its batch (PROTOCOL §6.4):
   * its line and content are added to the transcript and the outbox when the next message is
   * made or the outbox is sealed, so that both hold it complete.
   */
  #openRelay?: RecipientRelayGroup;
  readonly #sendOutboxAtTurnEnd = () => this.#sendOutbox();
  #sendSeqno = 0;
  /** What the server said back about each record we sent (clients; PROTOCOL §6.5). */
  #answers?: C2sAnswers;
  #sendTs = 0;
  #receiveTs = 0;
  #keySince = Date.now();
  /** Client sends wait for their signature; this keeps them leaving in seqno order. */
  #sending: Promise<void> = Promise.resolve();
  /** Signs the client's records in batches (PROTOCOL §6.1). */
  #signer?: BatchSigner;
  /** The client's sends made and not yet complete (sent, or failed). */
  #unsent = 0;
  /** A client's records made and signed, waiting for the rest of their batch to leave with. */
  #batchOutbox: GroupItem[] = [];
  /** The client's batch signatures, each verified once (PROTOCOL §6.1): a server's only. */
  #signatures?: RecordSignatures;
  #close: CloseState = { sent: false, received: false, receiptSent: false };
  #ownReceipt?: Receipt;
  #peerReceipt?: Receipt;
  /** Set when the close starts: no message may be numbered after it. */
  #stopped = false;
  /** Set when the session ends without the close exchange: nothing more is sent or recorded. */
  #ended = false;
  #aborted?: SecureChatError;
  /** terminate() sent the peer `#aborted` and lingers after it. */
  #told = false;
  #closeTimer?: ReturnType<typeof setTimeout>;
  /** After a write failed: ends run()'s wait for what the peer said before going. */
  #goneTimer?: ReturnType<typeof setTimeout>;
  /**
   * Messages that passed every check, recorded in the transcript's pending batch, not yet
   * handed to the caller: the frames already received are read first, then the batch is
   * written in one write and only then are the messages acted on (see #release). `stored`
   * marks a hop from the offline queue, acknowledged once acted on (§6.6).
   */
  #held: Held[] = [];
  /** Clients: the last `stored` hop not yet acknowledged, and the acknowledgement under way. */
  #storedUnacked = 0;
  /** Clients: stored hops not yet acknowledged that this device could not open. */
  #storedUnread: number[] = [];
  #acking?: Promise<void>;
  /** Client: the password change waiting for the server's answer (one at a time, §6.7). */
  #passwordChange?: {
    id: number;
    resolve: () => void;
    reject: (error: SecureChatError) => void;
  };
  #passwordChangeIds = 0;
  /** Server: a password change is being decided; a second one before its answer is an error. */
  #changingPassword = false;

  private constructor(
    est: EstablishedSession,
    transcript: TranscriptWriter,
    opts: ChatSessionOptions,
  ) {
    this.#est = est;
    this.#transcript = transcript;
    this.#opts = opts;
    this.#sendDir = est.role === "client" ? "c2s" : "s2c";
    this.#receiveDir = est.role === "client" ? "s2c" : "c2s";
    if (opts.relayTrust) {
      this.#relays = new RelayVerifier({
        trust: opts.relayTrust,
        seen: opts.seen ?? SeenStore.memory(),
        username: est.username,
        sessionTime: est.sessionTime,
        maxSkewMs: this.#maxSkew,
        unwrap: opts.e2e && ((author, record, e2e) => opts.e2e!.unwrap(author, record, e2e)),
        senderKey: opts.e2e && ((author, update) => opts.e2e!.onSenderKey(author, update)),
      });
    }
  }

  /** @throws TRANSCRIPT_IO when the transcript cannot be created: no session without a record */
  static async start(est: EstablishedSession, opts: ChatSessionOptions): Promise<ChatSession> {
    let transcript: TranscriptWriter;
    try {
      transcript = await TranscriptWriter.create(opts.transcripts, {
        sessionId: est.sessionId,
        role: est.role,
        clientCertDer: est.role === "client" ? est.self.certDer : est.peer.der,
        serverCertDer: est.role === "server" ? est.self.certDer : est.peer.der,
        sessionTime: est.sessionTime,
        startedAt: opts.startedAt ?? Date.now(),
        serverName: opts.serverName,
        keepKeys: opts.keepKeys,
      });
    } catch (error) {
      // The peer has finished its handshake and waits to chat: tell it why not.
      if (error instanceof SecureChatError) await sendSealedError(est, error);
      throw error;
    }
    return new ChatSession(est, transcript, opts);
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
  /** The seqno the next message we send gets. */
  get nextSeqno(): number {
    return this.#sendSeqno + 1;
  }

  get #maxSkew(): number {
    return this.#opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  }

  /** Numbers the next message of our direction: seqno and a ts that never goes backwards. */
  #number(): { seqno: number; ts: number } {
    if (this.#stopped || this.#ended) {
      throw new SecureChatError("PROTOCOL_ERROR", "session is closing");
    }
    this.#sendTs = Math.max(Date.now(), this.#sendTs);
    return { seqno: ++this.#sendSeqno, ts: this.#sendTs };
  }

  /**
   * Makes, sends and records one record of ours (PROTOCOL §6.1): a client's is
   * signed, a server's is not. Numbered at once; a client's sends leave in seqno
   * order once signed.
   * @returns the seqno given to it
   * @throws PROTOCOL_ERROR when closing, SLOW_CONSUMER when the peer stopped reading, TRANSCRIPT_IO
   */
  send(body: Body, to?: string): Promise<number> {
    // A client's default is the lobby; the server's records always go to its one user.
    to ??= this.#est.role === "client" ? LOBBY : userRecipient(this.#est.username);
    const { k, ct, c } = sealContent(body);
    if (this.#sendDir === "c2s") {
      try {
        this.#assertRelayable(to, ct.length);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    let numbered: { seqno: number; ts: number };
    try {
      numbered = this.#number();
    } catch (error) {
      return Promise.reject(error);
    }
    const record: MessageRecord = {
      sid: this.sessionId,
      dir: this.#sendDir,
      to,
      ...numbered,
      ct,
      c,
    };
    if (this.#est.role === "server") {
      try {
        this.#emitText(prepareMsg(record, k));
        return Promise.resolve(record.seqno);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    // Signed with the others made by the time its turn to leave comes (PROTOCOL §6.1), or,
    // when sends of ours are still on their way (a pipelined caller: it did not wait for
    // them), at the end of that turn, with what the caller makes meanwhile.
    const signer = this.#signer ??= new BatchSigner(this.#est.self.signingKey);
    const signing = signer.add(record, this.#unsent++ > 0);
    signing.catch(() => {}); // handled when its turn comes
    const next = this.#sending.then(() => this.#sendNumbered(record, k, body, signing));
    this.#sending = next.catch(() => {});
    return next.then(() => {
      this.#unsent--;
      return record.seqno;
    }, (error) => {
      this.#unsent--;
      throw error;
    });
  }

  /**
   * A line of ours the server would refuse, and end the session for (PROTOCOL §6.1 `ct` bound,
   * §6.3 step 7: its relay or `stored` alone must fit one record, whatever envelope it gets),
   * refused here instead, before it takes a seqno: nothing is sent and the session goes on.
   * @throws INVALID_INPUT
   */
  #assertRelayable(to: string, ctBytes: number): void {
    const tooLarge = (why: string) =>
      new SecureChatError("INVALID_INPUT", `message too large to send (${why}): not sent`);
    if (ctBytes > MAX_CT_BYTES) throw tooLarge(`${ctBytes} bytes, above ${MAX_CT_BYTES}`);
    if (to === TO_SERVER) return; // never relayed or stored
    const self = this.#est.self;
    const relayed = largestLoneRelayBytes(
      this.#ownAuthor ??= authorCertOf(self.certDer),
      signatureLength(self.signingKey),
      to,
      ctBytes,
    );
    if (relayed > MAX_CONTENT_BYTES) {
      throw tooLarge(`relayed with this certificate it could take ${relayed} bytes`);
    }
  }

  /** Our certificate as relays of our records carry it (for #assertRelayable). */
  #ownAuthor?: AuthorCert;
  /** Server: the client's certificate as relays of its records carry it (PROTOCOL §6.4.1). */
  #peerAuthor?: AuthorCert;

  /** Server: the client's certificate as relays of its records carry it, made once. */
  get peerAuthor(): AuthorCert {
    return this.#peerAuthor ??= authorCertOf(this.#est.peer.der);
  }

  /**
   * Wraps and gathers one numbered record of ours once its batch is signed; the last of a batch
   * sends the batch in as few msgs as hold it (PROTOCOL §6.3: usually one), recorded first, in
   * as few records as hold them (§3.2 "Who groups"). Its seqno is
   * taken: if it cannot leave, no later record can either (every receiver wants exactly the
   * next seqno, our transcript writer first), so the session ends at once with the cause
   * rather than stay open unable to send (review8 R8-2); what was made before it still leaves.
   */
  async #sendNumbered(
    record: MessageRecord,
    k: Uint8Array,
    body: Body,
    signing: Promise<void>,
  ): Promise<void> {
    let failure: SecureChatError | undefined;
    // Its turn: it and every record made since are signed (RSA while the wrap runs).
    this.#signer!.due(record);
    try {
      if (this.#ended) throw new SecureChatError("PROTOCOL_ERROR", "session is closing");
      const e2e = this.#opts.e2e && await this.#opts.e2e.wrap(record, k, body);
      if (this.#opts.e2e && !e2e && record.to !== TO_SERVER) {
        // A line to users is never left readable by the server (PROTOCOL §12.5, §12.6).
        throw new SecureChatError(
          "NO_E2E_KEYS",
          `not sent: no end-to-end envelope for ${record.to}`,
        );
      }
      await signing;
      this.#batchOutbox.push(userMsgItem(record, k, e2e));
      (this.#answers ??= new C2sAnswers()).sent(record.seqno, record.to);
    } catch (error) {
      failure = ours(error);
    }
    await signing.catch(() => {});
    const batch = record.batch;
    if ((failure || !batch || batch.i === batch.n - 1) && !this.#ended) {
      // Recorded: what cannot leave now (a msg too large for a record, a seal that fails)
      // leaves its batch's seqnos taken, so it ends the session as above (review9 R9-3).
      try {
        await this.#sendBatchOutbox();
      } catch (error) {
        failure ??= ours(error);
      }
    }
    if (failure) {
      await this.terminate(failure);
      throw failure;
    }
  }

  /**
   * Records, seals and sends, at the peer's pace, the msgs of the records of one batch gathered
   * by send() (all of it, or what was made before a record that failed: its own proof).
   */
  async #sendBatchOutbox(): Promise<void> {
    const items = this.#batchOutbox;
    this.#batchOutbox = [];
    const contents = userMsgsOf(items);
    // Recorded before they leave: a connection that fails while a msg is on its way may still
    // have delivered it, and the transcript (and its content keys, for an opening) must then
    // hold what was sent.
    for (const msg of contents) this.#transcript.append(msg);
    for (const run of recordRuns(contents)) {
      // At the server's pace. Room first, then the seal and the queueing in one step: a record
      // takes its nonce's counter only as it is queued, so a control message sent while this
      // one waits cannot take a later counter and leave before it (§3.2; review17 R17-6).
      const inner = padContents(run);
      await this.#est.conn.untilRoom(
        FRAME_HEADER_BYTES + sealedLength(inner.length) + KEY_UPDATE_WIRE_BYTES,
      );
      this.#sendInner(inner);
    }
    // Signing is synchronous for Ed25519: a sender in a loop would otherwise keep the socket
    // writes and the transcript's flush waiting until it stops.
    if (spendTurn()) await endTurn();
  }

  /**
   * The server forwards a user's record (PROTOCOL §6.4): no signature, one seal; `stored`
   * for one from the offline queue (§6.6), whole. A live record joins the relay this turn
   * made last when it is of the same author batch and the relay still fits one record
   * (§3.2): a turn's records of one batch to this recipient leave as one relay, with one
   * signature and one proof.
   * @returns the hop's seqno (a relay's, shared by its records)
   */
  relay(prepared: PreparedRelay, type: RelayType = "relay"): number {
    const open = this.#openRelay;
    const joined = type === "relay" && open?.takes(prepared) ? open.lengthWith(prepared) : null;
    if (open && joined !== null && joined <= MAX_CONTENT_BYTES) {
      this.#outboxWithRoom(joined); // the open relay is not in the outbox yet
      open.add(prepared);
      return open.seqno;
    }
    const certs = this.#authorCerts ??= new SessionCertList<true>();
    const introduce = certs.mustIntroduce(prepared.fingerprint, true);
    if (type === "stored") {
      const { seqno, ts } = this.#number();
      const hop = new RecipientRelay(prepared, seqno, ts, type, introduce);
      this.#emit(hop, hop);
      return seqno;
    }
    this.#closeRelay();
    const { seqno, ts } = this.#number();
    const hop = new RecipientRelayGroup(prepared, seqno, ts, introduce);
    this.#outboxWithRoom(hop.boundLength);
    this.#openRelay = hop;
    return seqno;
  }

  /**
   * The open relay, complete: into the outbox (`outbox`, the one being sealed, when
   * #sendOutbox has already taken it) and the transcript, behind what came before.
   */
  #closeRelay(outbox = this.#outbox): void {
    const open = this.#openRelay;
    if (!open) return;
    this.#openRelay = undefined;
    outbox!.add(open);
    this.#transcript.append(open);
  }

  /** The server tells the author its private record `of` is stored for later (§6.6). */
  queued(of: number): void {
    const { seqno, ts } = this.#number();
    this.#emitText(prepareQueued(seqno, ts, of));
  }

  /** The server refuses a received message (PROTOCOL §6.5). */
  refuse(of: number, code: RefusalCode): void {
    const { seqno, ts } = this.#number();
    this.#emitText(prepareRefused(seqno, ts, of, code));
  }

  #emitText({ wire, line }: { wire: string; line: PreparedLine }): void {
    this.#emit(utf8(wire), line);
  }

  /**
   * Queues and records one session message at once (the server never waits); it is sealed
   * with the others of this turn when the turn ends (#sendOutbox).
   * @throws SLOW_CONSUMER when the peer stopped reading, as a send now would; TRANSCRIPT_IO
   */
  #emit(content: Content, line: PreparedLine): void {
    this.#closeRelay();
    if (content.length > MAX_CONTENT_BYTES) {
      // Our bug (every body of ours fits: MAX_SERVER_BODY_BYTES, §6.3 step 7). Its seqno is
      // taken, so nothing after it could go either: the session ends, and the peer is told why
      // rather than left with a connection that closed without a word.
      const error = new SecureChatError(
        "INTERNAL",
        `a message of ${content.length} bytes fits no record: not sent, the session ends`,
      );
      void this.terminate(error);
      throw error;
    }
    this.#outboxWithRoom(content.length).add(content);
    this.#transcript.append(line);
  }

  /**
   * This turn's outbox, made (and sent at the turn's end) if none is open yet, once a content of
   * `length` bytes more fits the send queue beside it.
   * @throws SLOW_CONSUMER when it does not
   */
  #outboxWithRoom(length: number): RecordOutbox {
    this.#est.conn.assertRoom(
      (this.#outbox?.bytes ?? 0) + CONTENT_OVERHEAD + length + RECORD_WIRE_OVERHEAD,
    );
    if (!this.#outbox) {
      this.#outbox = new RecordOutbox();
      atTurnEnd(this.#sendOutboxAtTurnEnd);
    }
    return this.#outbox;
  }

  /**
   * Whether a session message of about `bytes` fits the send queue now, with what this turn
   * made so far, leaving `reserve` of the queue's limit (a fraction, 0–1) free for what else
   * the session must send meanwhile; when not, {@link drain} first rather than have it, or
   * what comes after it, refused (SLOW_CONSUMER).
   */
  hasRoom(bytes: number, reserve = 0): boolean {
    const { conn } = this.#est;
    try {
      conn.assertRoom(
        (this.#outbox?.bytes ?? 0) + (this.#openRelay?.boundLength ?? 0) + CONTENT_OVERHEAD +
          bytes + HOP_HEAD_BYTES +
          RECORD_WIRE_OVERHEAD + Math.ceil(conn.maxQueuedBytes * reserve),
      );
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Seals what this turn made so far and waits, at most `timeoutMs`, for the connection to
   * write out what it holds: for a server sending one session much at once (its offline
   * queue at login, PROTOCOL §6.6), which can wait for the peer, unlike a fan-out.
   */
  async drain(timeoutMs = 10_000): Promise<void> {
    this.#sendOutbox();
    await this.#est.conn.flush(timeoutMs);
  }

  /**
   * Seals and queues the messages #emit gathered, in order. Called at the turn's end, and
   * before anything else is sent so that nothing overtakes them. A failure ends the session
   * as a failed send does (the peer is gone or stopped reading).
   */
  #sendOutbox(): void {
    const outbox = this.#outbox;
    if (!outbox) return;
    this.#outbox = undefined;
    try {
      this.#closeRelay(outbox);
      outbox.seal((inner) => this.#sendInner(inner));
    } catch (error) {
      this.abort(
        error instanceof SecureChatError ? error : new SecureChatError("INTERNAL", String(error)),
      );
    }
  }

  /**
   * Queues one record's padded inner plaintext, sealed into its place in the connection's batch
   * (FrameConnection.sendSealed: no buffer of its own), first sending a key_update when the key
   * is due (§4.4).
   */
  #sendInner(inner: Uint8Array): void {
    this.#updateKeyIfDue();
    const records = this.#est.records;
    this.#est.conn.sendSealed(sealedLength(inner.length), (into) => records.sealInner(inner, into));
  }

  /** Sends a key_update and moves to the next sending key, when the current one is due (§4.4). */
  #updateKeyIfDue(): void {
    const records = this.#est.records;
    const limit = this.#opts.keyUpdateRecords ?? DEFAULT_KEY_UPDATE_RECORDS;
    const age = Date.now() - this.#keySince;
    if (
      records.sentUnderKey >= limit - 1 || age >= (this.#opts.keyUpdateMs ?? DEFAULT_KEY_UPDATE_MS)
    ) {
      this.#est.conn.send(records.seal(utf8('{"type":"key_update"}')));
      records.updateSend();
      this.#keySince = Date.now();
    }
  }

  /**
   * Client: changes the user's own password (PROTOCOL §6.7). The caller has applied the rules
   * (`checkPasswordChange`); the server applies them again and checks the old password.
   * @throws AUTH_FAIL (wrong old password), INVALID_INPUT, RATE_LIMITED, DB_UNAVAILABLE,
   *   INTERNAL as the server answered; PROTOCOL_ERROR when the session is closing, another
   *   change is waiting, or the session ends before the answer (the outcome is then unknown)
   */
  changePassword(oldPassword: string, newPassword: string): Promise<void> {
    if (this.#est.role !== "client") {
      return Promise.reject(new SecureChatError("INTERNAL", "only a client changes its password"));
    }
    if (this.closing) {
      return Promise.reject(new SecureChatError("PROTOCOL_ERROR", "session is closing"));
    }
    if (this.#passwordChange) {
      return Promise.reject(
        new SecureChatError("PROTOCOL_ERROR", "a password change is already waiting"),
      );
    }
    const id = ++this.#passwordChangeIds;
    return new Promise((resolve, reject) => {
      this.#passwordChange = { id, resolve, reject };
      try {
        this.#sendControl({ type: "password_change", id, old: oldPassword, new: newPassword });
      } catch (error) {
        this.#passwordChange = undefined;
        reject(error);
      }
    });
  }

  /** Server, PROTOCOL §6.7: decides a change without holding up the session's other messages. */
  #startPasswordChange(
    message: z.infer<typeof PasswordChangeSchema>,
    handlers: SessionHandlers,
  ): void {
    if (!handlers.onPasswordChange) {
      throw new SecureChatError("PROTOCOL_ERROR", "unexpected password_change");
    }
    if (this.#close.received) {
      throw new SecureChatError("PROTOCOL_ERROR", "password_change after the peer's close");
    }
    if (this.#changingPassword) {
      throw new SecureChatError("PROTOCOL_ERROR", "a second password_change before the answer");
    }
    this.#changingPassword = true;
    void handlers.onPasswordChange(message.old, message.new).then(
      () => ({ type: "password_changed", id: message.id }),
      (error) => ({ type: "password_refused", id: message.id, code: passwordRefusalOf(error) }),
    ).then((answer) => {
      this.#changingPassword = false;
      // A session that started closing meanwhile sends no answer (§6.7): nothing follows close.
      if (this.#close.sent || this.#ended) return;
      try {
        this.#sendControl(answer);
      } catch {
        // the peer is gone; the log has the outcome
      }
    });
  }

  /** Client, PROTOCOL §6.7: the answer must name the change waiting for it. */
  #settlePasswordChange(
    message: z.infer<typeof PasswordChangedSchema> | z.infer<typeof PasswordRefusedSchema>,
  ): void {
    const waiting = this.#passwordChange;
    if (!waiting || waiting.id !== message.id) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        `answer to password change ${message.id}, none waiting`,
      );
    }
    this.#passwordChange = undefined;
    if (message.type === "password_changed") return waiting.resolve();
    waiting.reject(
      new SecureChatError(message.code, `the server refused the password change: ${message.code}`),
    );
  }

  /** The session ended with a change unanswered: the user must not think either way. */
  #abandonPasswordChange(): void {
    this.#passwordChange?.reject(
      new SecureChatError(
        "PROTOCOL_ERROR",
        "the session ended before the server answered the password change; it may or may not " +
          "have been made",
        { hint: "log in again: with the new password first, then the old one" },
      ),
    );
    this.#passwordChange = undefined;
  }

  /**
   * Starts the close exchange; `run()` resolves once receipts are exchanged or time runs out.
   * @param code server: why it closes, when not because it stops (PROTOCOL §5.2, §7.1)
   */
  async close(code?: CloseCode): Promise<void> {
    await this.#sendClose(code);
    this.#armCloseTimer();
    await this.#maybeSendReceipt();
  }

  /**
   * Stops new messages at once, lets those already numbered go out, then sends
   * `close`: nothing of ours can follow it on the wire (PROTOCOL §7).
   */
  async #sendClose(code?: CloseCode): Promise<void> {
    if (this.#stopped) return;
    // Stored lines being acknowledged: let that finish, or they are delivered again (§6.6).
    if (this.#acking && !this.#close.received) await this.#acking;
    if (this.#stopped) return;
    this.#stopped = true;
    await this.#sending;
    if (this.#ended) return;
    this.#sendControl({ type: "close", ...(code ? { code } : {}) });
    this.#close.sent = true;
  }

  /** Ends the session now with `error` (e.g. SLOW_CONSUMER): no receipts, `run()` reports it. */
  abort(error: SecureChatError): void {
    this.#aborted ??= error;
    this.#ended = true;
    this.#outbox = undefined;
    this.#openRelay = undefined;
    this.#est.conn.close();
  }

  /**
   * Ends the session now because of `error` (its certificate was revoked, say): the peer is
   * told the code under the control keys, no receipts are exchanged, and `run()` reports it.
   */
  async terminate(error: SecureChatError): Promise<void> {
    if (this.#ended) return;
    this.#sendOutbox(); // what was made before the error goes before it
    this.#aborted ??= error;
    this.#ended = true;
    if (error === this.#est.conn.writeError) {
      // The peer went while we wrote, and may have said why before going: run() reads what
      // already arrived (#peerErrorAfterWriteFailure), and closes the connection; a peer that
      // said nothing is not waited for longer than the grace.
      this.#goneTimer = setTimeout(() => this.#est.conn.close(), PEER_ERROR_GRACE_MS);
      return;
    }
    // Lingers after it (PROTOCOL §7): the peer may still be sending. run()'s loop, reading
    // meanwhile, shares the linger's reads and ends the session when it does (#end).
    this.#told = true;
    await sendSealedError(this.#est, error);
  }

  /** Reads until the session ends; never throws. */
  async run(handlers: SessionHandlers): Promise<SessionEnd> {
    try {
      while (!(this.#close.receiptSent && this.#peerReceipt)) {
        if (this.#held.length > 0 && !this.#est.conn.frameReady) {
          const releasing = this.#release(handlers);
          if (releasing) await releasing;
        }
        const payload = await this.#nextFrame();
        if (this.#aborted) {
          await this.#release(handlers);
          const told = await this.#peerErrorAfterWriteFailure(payload);
          return await this.#end("error", told ?? this.#aborted);
        }
        if (payload === null) {
          await this.#release(handlers);
          return await this.#end("peer_gone");
        }
        // A record's messages are checked and held without an await when nothing has to be
        // waited for (the steady state: authors known, batches verified): see #handleContent.
        const handling = this.#handle(payload, handlers);
        if (handling) await handling;
        // Handled: what is held of it was parsed or copied out (receivedItems), so its buffer
        // takes the next frame (tests/held_relay_reuse_test.ts).
        this.#est.conn.reuse(payload);
        // Frames the kernel already holds are read without the turn ending: a backlog is
        // handled a bounded amount per turn, so what the turn made for each session is sealed
        // and written (its send queue counts only what the peer has not read) and the other
        // sessions are served before the next part.
        // The held messages are acted on before the turn's end seals: what they make (relays,
        // answers) is this turn's and leaves with it, never with the next turn's (§3.2).
        if (spendTurn(Math.ceil(payload.length / TURN_UNIT_BYTES))) {
          const releasing = this.#release(handlers);
          if (releasing) await releasing;
          await endTurn();
        }
      }
      const files = await this.#transcript.finish(this.#ownReceipt!, this.#peerReceipt);
      const { code } = this.#close;
      // A clean close all the same (receipts exchanged), for the server's stated reason.
      const why = code && { code, closeCode: code, message: CLOSE_REASONS[code], fromPeer: true };
      return { outcome: "closed", ...why, transcriptPath: this.transcriptPath, ...files };
    } catch (error) {
      // What passed before the failing frame is acted on, as if it had come alone.
      try {
        await this.#release(handlers);
      } catch {
        // the failure already being reported is the outcome
      }
      return await this.#end("error", this.#aborted ?? error);
    } finally {
      this.#abandonPasswordChange();
      clearTimeout(this.#closeTimer);
      clearTimeout(this.#goneTimer);
      this.#sendOutbox();
      await this.#est.conn.flush(1000);
      this.#est.conn.close();
    }
  }

  /**
   * Writes the held messages' lines (one write for the batch) and then hands them to
   * the caller in order: nothing is relayed or shown before it is recorded, and if the
   * batch cannot be written none of it is acted on (TRANSCRIPT_IO ends the session). A promise
   * only when a handler returned one, and the rest waits for it.
   */
  #release(handlers: SessionHandlers): Promise<void> | undefined {
    if (this.#held.length === 0) return undefined;
    const held = this.#held;
    this.#held = [];
    this.#transcript.commit();
    for (let i = 0; i < held.length; i++) {
      const acting = handlers.onMessage(held[i].message);
      if (acting) return this.#releaseAfter(acting, held, i, handlers);
      this.#actedOn(held[i]);
    }
    return undefined;
  }

  /** The rest of a release, from the message whose handler returned `acting`. */
  async #releaseAfter(
    acting: Promise<void>,
    held: readonly Held[],
    at: number,
    handlers: SessionHandlers,
  ): Promise<void> {
    await acting;
    this.#actedOn(held[at]);
    for (let i = at + 1; i < held.length; i++) {
      await handlers.onMessage(held[i].message);
      this.#actedOn(held[i]);
    }
  }

  /** A stored line acted on is acknowledged (§6.6). */
  #actedOn({ message, stored }: Held): void {
    if (stored && message.type === "relay") {
      // A duplicate counts as held: this device recorded it before (§6.6).
      const { undecryptable, duplicate } = message.relayed;
      this.#acknowledgeStored(message.seqno, undecryptable !== undefined && !duplicate);
    }
  }

  /** Not async: an idle session waits in the reader's one promise, not in a frame of its own. */
  /**
   * When the session ended because a write of ours failed (the peer went), the `error` the
   * peer sent before going, if it did: in `payload` or the frames that arrived after it, read
   * for PEER_ERROR_GRACE_MS at most. The failed write is how we learnt that the peer went, not
   * why: a server that ends a session (a full disk: TRANSCRIPT_IO) closes at once, and a client
   * still sending meets the reset before it has read the server's reason (as a handshake's
   * pipelined writes may, runHandshake).
   */
  async #peerErrorAfterWriteFailure(
    payload: Uint8Array | null,
  ): Promise<SecureChatError | undefined> {
    const conn = this.#est.conn;
    if (this.#aborted === undefined || this.#aborted !== conn.writeError) return undefined;
    const deadline = Date.now() + PEER_ERROR_GRACE_MS;
    try {
      while (payload !== null) {
        for (const content of this.#est.records.openContentsInPlace(payload)) {
          const message = parseMessage(
            content,
            this.#est.role === "server" ? CLIENT_MESSAGES : SERVER_MESSAGES,
          );
          if (message.type === "error") return errorFromPeer(message.code, message.message, true);
          if (message.type === "key_update") this.#est.records.updateReceive();
        }
        if (deadline <= Date.now()) return undefined;
        payload = await conn.read(deadline - Date.now());
      }
    } catch {
      // a record that does not open, a timeout, the reset: the peer said nothing more
    }
    return undefined;
  }

  #nextFrame(): Promise<Uint8Array | null> {
    const timeout = this.closing
      ? this.#opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS
      : this.#opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    return this.#est.conn.read(timeout);
  }

  /**
   * One record: each of its messages in order, as if each had come alone (PROTOCOL §3.2); a
   * promise only once one of them has to wait, and the rest then wait for it.
   */
  #handle(payload: Uint8Array, handlers: SessionHandlers): Promise<void> | undefined {
    const contents = this.#est.records.openContentsInPlace(payload);
    for (let i = 0; i < contents.length; i++) {
      const handling = this.#handleContent(contents[i], i === contents.length - 1, handlers);
      if (handling) return this.#handleAfter(handling, contents, i + 1, handlers);
    }
    return undefined;
  }

  async #handleAfter(
    handling: Promise<void>,
    contents: readonly Uint8Array[],
    from: number,
    handlers: SessionHandlers,
  ): Promise<void> {
    await handling;
    for (let i = from; i < contents.length; i++) {
      await this.#handleContent(contents[i], i === contents.length - 1, handlers);
    }
  }

  /**
   * One message: checked, recorded and held (PROTOCOL §6), or a control message acted on. A
   * promise only when something has to be waited for — an author's certificate validated, a
   * signature WebCrypto verifies, an end-to-end unwrap, a handler, the close — so that in the
   * steady state a record's messages take no await each.
   */
  #handleContent(
    content: Uint8Array,
    lastOfRecord: boolean,
    handlers: SessionHandlers,
  ): Promise<void> | undefined {
    // A user's msg as ours writes it is read in one pass; any other message, or a msg spelt
    // otherwise, by the parse chokepoint, which accepts and refuses as it always has.
    const server = this.#est.role === "server";
    const canonical = server ? canonicalUserMsg(content) : undefined;
    if (canonical) return this.#handleUserMsg(canonical, handlers);
    // A relay is binary (PROTOCOL §3.3 "JSON or binary"); every other message is JSON.
    const { message, text } = !server && content[0] === RELAY_TAG
      ? { message: readRelay(content), text: "" }
      : parseMessageAndText(content, server ? CLIENT_MESSAGES : SERVER_MESSAGES);
    if (message.type === "msg" && "records" in message) {
      return this.#handleUserMsg(userMsgRead(message, content, text), handlers);
    }
    switch (message.type) {
      case "error":
        throw errorFromPeer(message.code, message.message, true);
      case "key_update":
        // The next record is under the new key: nothing may follow in this one.
        if (!lastOfRecord) {
          throw new SecureChatError("PROTOCOL_ERROR", "key_update before the end of its record");
        }
        this.#est.records.updateReceive();
        return undefined;
      case "close":
        // What came before the close is acted on before it.
        return this.#releaseThen(handlers, () => this.#handleClose(message.code));
      case "receipt":
        return this.#releaseThen(handlers, () => this.#handleReceipt(message));
      case "password_change":
        this.#startPasswordChange(message, handlers);
        return undefined;
      case "password_changed":
      case "password_refused":
        this.#settlePasswordChange(message);
        return undefined;
    }
    this.#refuseAfterPeerClose();
    const received = message.type === "msg"
      ? this.#checkMsg(message)
      : message.type === "queued"
      ? this.#checkQueued(message)
      : message.type === "refused"
      ? this.#checkRefused(message)
      : this.#checkRelay(message);
    return this.#holdChecked(received, message.type === "stored", handlers);
  }

  /** A user's msg (the server only), as read: checked and held like any other message. */
  #handleUserMsg(userMsg: UserMsgRead, handlers: SessionHandlers): Promise<void> | undefined {
    this.#refuseAfterPeerClose();
    return this.#holdChecked(this.#checkUserMsg(userMsg), false, handlers);
  }

  /** A session message (`msg`, `relay`, `stored`, `queued`, `refused`) after the peer's close (§7). */
  #refuseAfterPeerClose(): void {
    if (this.#close.received) {
      throw new SecureChatError("PROTOCOL_ERROR", "message after the peer's close");
    }
  }

  /** A checked message held once its check is done (#hold). */
  #holdChecked(
    received:
      | ReceivedMessage
      | readonly ReceivedMessage[]
      | Promise<ReceivedMessage | readonly ReceivedMessage[]>,
    stored: boolean,
    handlers: SessionHandlers,
  ): Promise<void> | undefined {
    if (received instanceof Promise) {
      return received.then((checked) => this.#hold(checked, stored, handlers));
    }
    return this.#hold(received, stored, handlers);
  }

  /** A checked message held, or a relay's records, each as one received message. */
  #hold(
    received: ReceivedMessage | readonly ReceivedMessage[],
    stored: boolean,
    handlers: SessionHandlers,
  ) {
    if (Array.isArray(received)) {
      for (const message of received) this.#held.push({ message, stored });
    } else this.#held.push({ message: received as ReceivedMessage, stored });
    return this.#held.length >= MAX_HELD ? this.#release(handlers) : undefined;
  }

  async #releaseThen(handlers: SessionHandlers, next: () => Promise<void>): Promise<void> {
    await this.#release(handlers);
    await next();
  }

  /** The hop checks every session message passes (PROTOCOL §6): seqno and ts. */
  #checkHop(seqno: number, ts: number): void {
    this.#window.check(seqno);
    this.#checkTs(ts, this.#receiveTs);
  }

  /** A ts within the skew of our clock and not before `previous`, the one before it (§6). */
  #checkTs(ts: number, previous: number): void {
    if (Math.abs(Date.now() - ts) > this.#maxSkew) {
      throw new SecureChatError("STALE", `timestamp ${ts} is ${Date.now() - ts} ms from our clock`);
    }
    if (ts < previous) {
      throw new SecureChatError("STALE", `timestamp ${ts} is before the previous message's`);
    }
  }

  #accept(seqno: number, ts: number): void {
    this.#window.accept(seqno);
    this.#receiveTs = ts;
  }

  /** The server's msg (PROTOCOL §6.3; clients only): one unsigned record, checked in order. */
  #checkMsg(message: S2cMsgMessage): ReceivedMessage {
    const record = decodeRecord(message.record);
    this.#checkOrigin(record);
    this.#checkHop(record.seqno, record.ts);
    if (record.to !== userRecipient(this.#est.username)) {
      throw new SecureChatError("TAMPERED", `record addressed to ${record.to.slice(0, 80)}`);
    }
    if (record.sig || record.batch) {
      throw new SecureChatError("PROTOCOL_ERROR", "the server's records are not signed");
    }
    const k = fromBase64(message.k);
    const body = openFitting(record, k, "s2c");
    const forms = new RecordForms(record, message.record);
    const line = msgLine(record, forms.bytes, k, forms.encoding);
    this.#accept(record.seqno, record.ts);
    this.#transcript.append(line);
    return { type: "msg", seqno: record.seqno, ts: record.ts, body, record, forms, k };
  }

  /** PROTOCOL §6.3 step 1: a record of this session and the direction we receive. */
  #checkOrigin(record: MessageRecord): void {
    const dir = this.#receiveDir;
    if (record.sid !== this.sessionId || record.dir !== dir) {
      throw new SecureChatError(
        "TAMPERED",
        `record of session ${record.sid.slice(0, 8)}…/${record.dir} in session ` +
          `${this.sessionId.slice(0, 8)}…/${dir}`,
      );
    }
  }

  /**
   * A user's msg (PROTOCOL §6.3; the server only): steps 1–3 for every record, the signature
   * once (step 4), then steps 5–7 for every record (#acceptUserMsg); a promise only when the
   * signature must be waited for. Nothing is accepted, recorded or handed on unless every
   * record passes. What of it is forwarded is copied from the msg as received when its text is
   * its canonical form (`received`: receivedItems, canonicalUserMsg).
   */
  #checkUserMsg(
    { message, records, received: asReceived }: UserMsgRead,
  ): ReceivedMessage[] | Promise<ReceivedMessage[]> {
    const items = message.records;
    for (const record of records) this.#checkOrigin(record);
    // Step 2: the first is the next seqno; the schema made the others follow it one by one.
    this.#window.check(records[0].seqno);
    let previousTs = this.#receiveTs;
    for (const record of records) {
      this.#checkTs(record.ts, previousTs);
      previousTs = record.ts;
    }
    for (let j = 0; j < items.length; j++) {
      const { to } = records[j];
      if (!isClientRecipient(to)) {
        throw new SecureChatError("TAMPERED", `record addressed to ${to.slice(0, 80)}`);
      }
      const item = items[j];
      if (!("e2e" in item)) continue;
      if (to === TO_SERVER) {
        throw new SecureChatError(
          "PROTOCOL_ERROR",
          "only a user's record to users travels end to end",
        );
      }
      if (!envelopeFits(item.e2e, to)) {
        throw new SecureChatError(
          "PROTOCOL_ERROR",
          `a ${item.e2e.kind} envelope does not fit a record to ${to.slice(0, 80)}`,
        );
      }
    }
    const [sig, ...proof] = fromBase64Each([message.sig, ...message.proof]);
    const group = { sig, first: message.first, n: message.n, proof };
    const leaves = records.map(leafHash);
    const client = { fingerprint: this.#est.peer.fingerprint, key: this.#est.peerKey };
    const signing = (this.#signatures ??= new RecordSignatures()).checkGroupNow(
      client,
      records,
      group,
      `message ${records[0].seqno}`,
      leaves,
    );
    const received = () => new ReceivedGroup(message, group, records, leaves, asReceived);
    if (signing) return signing.then(() => this.#acceptUserMsg(message, received()));
    return this.#acceptUserMsg(message, received());
  }

  /**
   * PROTOCOL §6.3 steps 5–7 for every record of a user's msg whose signature passed, then the
   * msg accepted and recorded as one line, its records handed on one by one, in seqno order.
   */
  #acceptUserMsg(message: C2sMsgMessage, group: ReceivedGroup): ReceivedMessage[] {
    const author = this.peerAuthor;
    const checked: ReceivedMessage[] = [];
    const lineItems: GroupItem[] = [];
    for (let j = 0; j < message.records.length; j++) {
      const item = message.records[j];
      const forms = group.whole(j, item.record);
      const { record } = forms;
      if ("e2e" in item) {
        // The server cannot open it, by design (PROTOCOL §12.6): it checks that it can relay
        // and store it (step 7), and forwards it.
        const prepared = prepareRelay(
          author,
          forms,
          undefined,
          item.e2e,
          "PROTOCOL_ERROR",
          group.carrier(j),
          group.binaryCarrierOf(j, message.records),
        );
        lineItems.push(prepared);
        checked.push({
          type: "sealed",
          seqno: record.seqno,
          ts: record.ts,
          record,
          forms,
          e2e: item.e2e,
          prepared,
        });
        continue;
      }
      const k = fromBase64(item.k);
      const body = openFitting(record, k, "c2s");
      if (body.kind === "keys_publish") assertOwnPublish(body, canonicalName(this.username));
      // Only a `text` is relayed or stored (§6.2: to lobby or a user, which bodyFits ensured).
      const prepared = body.kind === "text"
        ? prepareRelay(
          author,
          forms,
          k,
          undefined,
          "PROTOCOL_ERROR",
          group.carrier(j),
          group.binaryCarrierOf(j, message.records),
        )
        : undefined;
      lineItems.push(prepared ?? { fingerprint: author.fingerprint, forms, keyTail: NO_TAIL, k });
      checked.push({
        type: "msg",
        seqno: record.seqno,
        ts: record.ts,
        body,
        record,
        forms,
        k,
        prepared,
      });
    }
    const line = new UserMsg(lineItems[0]);
    for (let j = 1; j < lineItems.length; j++) line.add(lineItems[j]);
    for (const record of group.records) this.#accept(record.seqno, record.ts);
    this.#transcript.append(line);
    return checked;
  }

  /**
   * PROTOCOL §6.4, §6.6 (clients only): one received message per record, in seqno order; a
   * promise only when RelayVerifier's check must wait.
   */
  #checkRelay(
    message: RelayMessage | StoredMessage,
  ): ReceivedMessage[] | Promise<ReceivedMessage[]> {
    if (!this.#relays) throw new SecureChatError("PROTOCOL_ERROR", `unexpected ${message.type}`);
    this.#checkHop(message.seqno, message.ts);
    const checking = this.#relays.checkNow(message);
    if (checking instanceof Promise) {
      return checking.then((relayed) => this.#acceptRelay(message, relayed));
    }
    return this.#acceptRelay(message, checking);
  }

  /** A relay or stored message that passed: its answers, its one line, its records. */
  #acceptRelay(
    message: RelayMessage | StoredMessage,
    { texts, group }: RelayedMessage,
  ): ReceivedMessage[] {
    const how = message.type === "stored" ? "stored" : "relayed";
    for (const { record } of texts) {
      if (record.sid === this.sessionId) this.#answered(record.seqno, how);
    }
    this.#accept(message.seqno, message.ts);
    const certDer = texts[0].certDer;
    const author = {
      fingerprint: message.author_fp,
      ...(certDer ? { cert: { base64: message.cert!, der: certDer } } : {}),
    };
    this.#transcript.append(
      message.type === "stored"
        ? receivedStoredLine(
          message.type,
          message.seqno,
          message.ts,
          author,
          message.record,
          texts[0].record,
          texts[0].k,
        )
        : receivedRelayLine(
          message,
          author,
          group!,
          texts.map((t) => t.record),
          texts.map((t) => t.k),
        ),
    );
    const received: ReceivedMessage[] = [];
    for (const relayed of texts) {
      received.push({ type: "relay", seqno: message.seqno, ts: message.ts, relayed });
    }
    return received;
  }

  /**
   * PROTOCOL §6.6: once the stored lines received so far are durable here (transcript and
   * duplicate marks fsynced), the client tells the server it holds them up to `seqno`, and
   * only then does the server delete them. Stored lines arrive in a burst at login: one
   * acknowledgement covers every one that arrived while the previous was being made.
   */
  #acknowledgeStored(seqno: number, unread: boolean): void {
    this.#storedUnacked = seqno;
    if (unread) this.#storedUnread.push(seqno);
    if (this.#acking) return;
    this.#acking = (async () => {
      try {
        while (this.#storedUnacked > 0 && !this.closing) {
          let upto = this.#storedUnacked;
          const unread = this.#storedUnread.splice(0, MAX_UNREAD);
          this.#storedUnacked = 0;
          if (this.#storedUnread.length > 0) {
            // More unread than one acknowledgement names: this one stops short of the next.
            this.#storedUnacked = upto;
            upto = this.#storedUnread[0] - 1;
          }
          await this.#transcript.sync();
          await this.#opts.seen?.save();
          await this.#opts.e2e?.save();
          if (this.closing) return; // unacknowledged: delivered again next time, shown once
          await this.send(
            unread.length ? { kind: "received", upto, unread } : { kind: "received", upto },
            TO_SERVER,
          );
        }
      } catch {
        // Not acknowledged: the server keeps the lines and delivers them again; the marks
        // make that a duplicate, recorded but not shown (§6.6).
      } finally {
        this.#acking = undefined;
      }
    })();
  }

  /** PROTOCOL §6.6 (clients only): the server stored one of our private records. */
  #checkQueued(message: QueuedMessage): ReceivedMessage {
    this.#checkHop(message.seqno, message.ts);
    this.#answered(message.of, "queued");
    this.#accept(message.seqno, message.ts);
    this.#transcript.append(prepareQueued(message.seqno, message.ts, message.of).line);
    return { ...message };
  }

  /** PROTOCOL §6.5 (clients only): a refusal names one of our messages. */
  #checkRefused(message: RefusedMessage): ReceivedMessage {
    this.#checkHop(message.seqno, message.ts);
    this.#answered(message.of, "refused");
    this.#accept(message.seqno, message.ts);
    this.#transcript.append(
      prepareRefused(message.seqno, message.ts, message.of, message.code).line,
    );
    return { ...message };
  }

  /** PROTOCOL §6.5 "One answer per record": a second answer, or `queued` off `user:`, ends it. */
  #answered(of: number, how: C2sAnswer): void {
    const wrong = (this.#answers ??= new C2sAnswers()).answer(of, how);
    if (wrong) throw new SecureChatError("PROTOCOL_ERROR", wrong);
  }

  async #handleClose(code: CloseCode | undefined): Promise<void> {
    if (this.#close.received) throw new SecureChatError("PROTOCOL_ERROR", "second close");
    if (code && this.#est.role === "server") {
      throw new SecureChatError("PROTOCOL_ERROR", "a client's close carries no code");
    }
    this.#close.received = true;
    this.#close.code = code;
    await this.#sendClose();
    this.#armCloseTimer();
    await this.#maybeSendReceipt();
  }

  async #handleReceipt(message: unknown): Promise<void> {
    if (!this.#close.received || this.#peerReceipt) {
      throw new SecureChatError("PROTOCOL_ERROR", "receipt out of order");
    }
    this.#peerReceipt = await this.#transcript.acceptPeerReceipt(message, this.#est.peer.der);
  }

  /** Both closes seen: no message can be added on either side, so the hash is final. */
  async #maybeSendReceipt(): Promise<void> {
    if (!this.#close.sent || !this.#close.received || this.#close.receiptSent) return;
    this.#ownReceipt = await this.#transcript.createReceipt(this.#est.self.signingKey);
    this.#sendControl(this.#ownReceipt);
    this.#close.receiptSent = true;
  }

  #sendControl(message: unknown): void {
    this.#sendOutbox(); // the session messages made before it go first
    this.#sendInner(padContents([utf8(JSON.stringify(message))]));
  }

  #armCloseTimer(): void {
    this.#closeTimer ??= setTimeout(
      () => this.#est.conn.close(),
      (this.#opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS) * 2,
    );
  }

  /** Ends without the full exchange: keep what we have, tell the peer why where we can. */
  async #end(outcome: "peer_gone" | "error", error?: unknown): Promise<SessionEnd> {
    if (!this.#est.conn.closed) this.#sendOutbox(); // made before the end: they go first
    this.#ended = true;
    const code = error === undefined ? undefined : codeOf(error);
    if (error === this.#aborted && this.#told) {
      await this.#est.conn.lingerClose(); // terminate() sent it: its linger ends the session
    } else if (error instanceof SecureChatError && !isFromPeer(error) && !this.#est.conn.closed) {
      await sendSealedError(this.#est, error);
    }
    await this.#opts.seen?.save().catch(() => {});
    const end: SessionEnd = {
      outcome,
      code,
      message: error instanceof Error ? error.message : undefined,
      ...(isFromPeer(error) ? { fromPeer: true } : {}),
      ...(this.#close.code ? { closeCode: this.#close.code } : {}),
      transcriptPath: this.transcriptPath,
    };
    if (this.#ownReceipt) {
      // run() may have called finish() already and failed in it (its receipt could not be
      // written): the failure is the outcome, and a second finish must not throw out of run().
      const files = await this.#transcript.finish(this.#ownReceipt, this.#peerReceipt).catch(
        () => undefined,
      );
      Object.assign(end, files);
    } else {
      await this.#transcript.abort();
    }
    return end;
  }
}

/** Messages of the close exchange and errors, both ways (PROTOCOL §7). */
const CONTROL = {
  close: CloseSchema,
  key_update: KeyUpdateSchema,
  receipt: ReceiptEnvelopeSchema,
  error: ErrorSchema,
} as const;
type Control = import("zod").output<typeof CONTROL[keyof typeof CONTROL]>;
type PasswordChange = import("zod").output<typeof PasswordChangeSchema>;
type PasswordAnswer =
  | import("zod").output<typeof PasswordChangedSchema>
  | import("zod").output<typeof PasswordRefusedSchema>;
/** Every message a session reads after the handshake; each role accepts its own subset. */
type SessionMessage =
  | C2sMsgMessage
  | S2cMsgMessage
  | RelayMessage
  | StoredMessage
  | RefusedMessage
  | QueuedMessage
  | PasswordChange
  | PasswordAnswer
  | Control;
/** What a server may read from a client after the handshake, by type. */
const CLIENT_MESSAGES = byType<SessionMessage>({
  msg: C2sMsgShape,
  password_change: PasswordChangeSchema,
  ...CONTROL,
});
/** What a client may read from the server after the handshake, by type. */
const SERVER_MESSAGES = byType<SessionMessage>({
  msg: S2cMsgShape,
  stored: StoredMessageShape,
  refused: RefusedMessageShape,
  queued: QueuedMessageShape,
  password_changed: PasswordChangedSchema,
  password_refused: PasswordRefusedSchema,
  ...CONTROL,
});

/** The code a refused password change is answered with (PROTOCOL §6.7). */
function passwordRefusalOf(error: unknown): PasswordRefusalCode {
  const code = codeOf(error);
  return (PASSWORD_REFUSAL_CODES as readonly string[]).includes(code)
    ? code as PasswordRefusalCode
    : "INTERNAL";
}

/** Tells the peer why the session ends, sealed, then closes so that the message survives. */
async function sendSealedError(est: EstablishedSession, error: SecureChatError): Promise<void> {
  try {
    est.conn.send(est.records.seal(utf8(JSON.stringify(errorMessageFor(error)))));
  } catch {
    // the peer is gone; the local log still has the code
  }
  await est.conn.lingerClose();
}

/** `error` when it is one of ours, else INTERNAL around it. */
function ours(error: unknown): SecureChatError {
  return error instanceof SecureChatError
    ? error
    : new SecureChatError("INTERNAL", String(error), { cause: error });
}

/**
 * PROTOCOL §6.3 steps 5–6 for a record with `k`, in either direction: its body, opened and its
 * commitment checked, of a kind its direction and `to` allow.
 * @throws DECRYPT_FAIL, TAMPERED, PROTOCOL_ERROR
 */
function openFitting(record: MessageRecord, k: Uint8Array, dir: Direction): Body {
  const body = openContent(record, k);
  if (!bodyFits(body, dir, record.to)) {
    throw new SecureChatError(
      "PROTOCOL_ERROR",
      `a ${body.kind} body is not allowed ${dir} to ${record.to.slice(0, 80)}`,
    );
  }
  return body;
}
