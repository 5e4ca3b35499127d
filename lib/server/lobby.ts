/**
 * The lobby (issue #6): every logged-in user hears every other one; records
 * addressed `user:x` go to one user. The server forwards the author's own signed
 * record (PROTOCOL §6.4): serialised once, sealed per recipient, never signed by the
 * server. A recipient that stops reading is dropped (SLOW_CONSUMER) rather than
 * allowed to hold the others back.
 */
import { toBase64 } from "../bytes.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type Body,
  canonicalName,
  LOBBY,
  type PreparedRelay,
  prepareRelay,
  recipientUser,
} from "../message/record.ts";
import type { ChatSession, ReceivedMessage } from "../session/session.ts";
import { TokenBucket } from "./limits.ts";

export const OPERATOR_NAME = "server";

export interface LobbyLimits {
  messagesPerSecond: number;
  messageBurst: number;
}

export const DEFAULT_LOBBY_LIMITS: LobbyLimits = { messagesPerSecond: 20, messageBurst: 40 };

export class Member {
  readonly bucket: TokenBucket;
  /** The member's certificate as relays carry it, encoded once. */
  readonly certBase64: string;
  constructor(
    readonly session: ChatSession,
    readonly peer: string,
    limits: LobbyLimits,
    /** Ends the member's connection with a code (the session's run loop then returns). */
    readonly drop: (error: SecureChatError) => void,
  ) {
    this.bucket = new TokenBucket(limits.messageBurst, limits.messagesPerSecond);
    this.certBase64 = toBase64(session.established.peer.der);
  }
  get username(): string {
    return this.session.username;
  }
}

const keyOf = canonicalName;

export class Lobby {
  readonly #members = new Map<string, Member>();

  constructor(readonly log: Logger, readonly limits: LobbyLimits = DEFAULT_LOBBY_LIMITS) {}

  /** Bytes queued toward all members and toward the worst one: what a stalled reader costs. */
  queueStats(): { members: number; queuedBytes: number; maxQueuedBytes: number } {
    const queued = [...this.#members.values()].map((m) => m.session.established.conn.queuedBytes);
    return {
      members: queued.length,
      queuedBytes: queued.reduce((a, b) => a + b, 0),
      maxQueuedBytes: Math.max(0, ...queued),
    };
  }

  names(): string[] {
    return [...this.#members.values()].map((m) => m.username).sort();
  }

  /**
   * Adds a member. A user logging in a second time takes over: the older session
   * is closed cleanly (receipts exchanged) with a notice saying why.
   */
  async join(member: Member): Promise<void> {
    const previous = this.#members.get(keyOf(member.username));
    this.#members.set(keyOf(member.username), member);
    if (previous) {
      this.log("SESSION_REPLACED", {
        user: previous.username,
        session: previous.session.sessionId,
      });
      this.#notify(previous, { kind: "notice", text: "you logged in elsewhere; closing" });
      void previous.session.close().catch(() => {});
    }
    this.#broadcast({ kind: "notice", text: `${member.username} joined` }, member);
    this.#notify(member, {
      kind: "notice",
      text: `welcome ${member.username}; online: ${this.names().join(", ")}`,
    });
    await Promise.resolve();
  }

  async leave(member: Member): Promise<void> {
    if (this.#members.get(keyOf(member.username)) !== member) return;
    this.#members.delete(keyOf(member.username));
    this.#broadcast({ kind: "notice", text: `${member.username} left` });
    await Promise.resolve();
  }

  /** Handles one verified session message from a member (PROTOCOL §6.3–6.5). */
  receive(from: Member, message: ReceivedMessage): void {
    if (message.type !== "msg") return; // clients send nothing else
    if (!from.bucket.take()) {
      // Every kind counts, and a refusal costs no signature (issue 11 item 6).
      this.log("RATE_LIMITED", { user: from.username, detail: `message ${message.seqno} refused` });
      return this.#refuse(from, message.seqno, "RATE_LIMITED");
    }
    const { body, record } = message;
    if (body.kind === "who") {
      return this.#notify(from, { kind: "notice", text: `online: ${this.names().join(", ")}` });
    }
    if (body.kind !== "text") return;
    const prepared = prepareRelay(
      from.certBase64,
      from.session.established.peer.der,
      message.recordJson,
      record,
      message.k,
    );
    if (record.to === LOBBY) {
      for (const m of this.#members.values()) if (m !== from) this.#relay(m, prepared);
      return;
    }
    const target = this.#members.get(recipientUser(record.to) ?? "");
    if (!target) return this.#refuse(from, message.seqno, "NOT_ONLINE");
    this.#relay(target, prepared);
  }

  /** The operator speaks as `server` (serve's console); unsigned, covered by the receipts. */
  operatorSays(text: string, to?: string): void {
    if (to === undefined) {
      for (const m of this.#members.values()) this.#notify(m, { kind: "operator", text });
      return;
    }
    const target = this.#members.get(keyOf(to));
    if (target) this.#notify(target, { kind: "operator", text, private: true });
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#members.values()].map((m) => m.session.close().catch(() => {})));
  }

  #broadcast(body: Body, except?: Member): void {
    for (const m of this.#members.values()) if (m !== except) this.#notify(m, body);
  }

  #notify(member: Member, body: Body): void {
    this.#deliver(member, () => void member.session.send(body).catch((e) => this.#failed(member, e)));
  }

  #relay(member: Member, prepared: PreparedRelay): void {
    this.#deliver(member, () => member.session.relay(prepared));
  }

  #refuse(member: Member, of: number, code: "RATE_LIMITED" | "NOT_ONLINE"): void {
    this.#deliver(member, () => member.session.refuse(of, code));
  }

  #deliver(member: Member, action: () => void): void {
    if (member.session.closing) return;
    try {
      action();
    } catch (error) {
      this.#failed(member, error);
    }
  }

  #failed(member: Member, error: unknown): void {
    if (member.session.closing) return;
    const wrapped = error instanceof SecureChatError
      ? error
      : new SecureChatError(codeOf(error), String(error));
    member.drop(wrapped);
  }
}
