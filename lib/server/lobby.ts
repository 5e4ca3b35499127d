/**
 * The lobby (issue #6): every logged-in user hears every other one; `/msg`-style
 * bodies with `to` go to one user. Each hop is its own session, so relaying means
 * re-encrypting and re-signing for every recipient. A recipient that stops reading
 * is dropped (SLOW_CONSUMER) rather than allowed to hold the others back.
 */
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { toBase64 } from "../bytes.ts";
import type { AuthorRecord } from "../session/relay.ts";
import type { ChatSession, ReceivedMessage } from "../session/session.ts";
import type { MsgBodyJson } from "../wire/messages.ts";
import { TokenBucket } from "./limits.ts";

export const OPERATOR_NAME = "server";

export interface LobbyLimits {
  messagesPerSecond: number;
  messageBurst: number;
}

export const DEFAULT_LOBBY_LIMITS: LobbyLimits = { messagesPerSecond: 20, messageBurst: 40 };

/** Relayed messages of one sender being signed and queued at once, at most. */
export const RELAY_WINDOW = 32;

export class Member {
  readonly bucket: TokenBucket;
  /** This member's relays still being delivered (see RELAY_WINDOW). */
  readonly inFlight = new Set<Promise<void>>();
  constructor(
    readonly session: ChatSession,
    readonly peer: string,
    limits: LobbyLimits,
    /** Ends the member's connection with a code (the session's run loop then returns). */
    readonly drop: (error: SecureChatError) => void,
  ) {
    this.bucket = new TokenBucket(limits.messageBurst, limits.messagesPerSecond);
  }
  get username(): string {
    return this.session.username;
  }
}

const keyOf = (name: string) => name.toLowerCase();

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
      await this.#deliver(previous, { kind: "notice", text: "you logged in elsewhere; closing" });
      void previous.session.close().catch(() => {});
    }
    await this.#broadcast({ kind: "notice", text: `${member.username} joined` }, member);
    await this.#deliver(member, {
      kind: "notice",
      text: `welcome ${member.username}; online: ${this.names().join(", ")}`,
    });
  }

  async leave(member: Member): Promise<void> {
    if (this.#members.get(keyOf(member.username)) !== member) return;
    this.#members.delete(keyOf(member.username));
    await this.#broadcast({ kind: "notice", text: `${member.username} left` });
  }

  /** Handles one verified message from a member. */
  async receive(from: Member, message: ReceivedMessage): Promise<void> {
    const { body } = message;
    if (body.kind === "who") {
      return await this.#deliver(from, {
        kind: "notice",
        text: `online: ${this.names().join(", ")}`,
      });
    }
    if (body.kind !== "text") return; // clients have nothing else to say to the lobby
    if (!from.bucket.take()) {
      this.log("RATE_LIMITED", { user: from.username, detail: "message dropped" });
      return await this.#deliver(from, { kind: "notice", text: "slow down: message dropped" });
    }
    // Forward the author's own signed message and its key (PROTOCOL §6.4).
    const { seqno, ts, ct, sig } = message.sealed;
    const cert = from.session.established.peer.der;
    const relay: MsgBodyJson = {
      kind: "relay",
      cert: toBase64(cert),
      seqno,
      ts,
      ct: toBase64(ct),
      sig: toBase64(sig),
      key: toBase64(message.messageKey),
    };
    // Deliveries are numbered in order the moment they start, so the sender's next
    // message need not wait for this fan-out; a window bounds what is in flight.
    const delivery = this.#route(relay, body.to, from, { cert, seqno, ts, ct, sig });
    from.inFlight.add(delivery);
    void delivery.finally(() => from.inFlight.delete(delivery));
    while (from.inFlight.size >= RELAY_WINDOW) await Promise.race(from.inFlight);
  }

  /** The operator speaks as `server` (serve's console). */
  async operatorSays(text: string, to?: string): Promise<void> {
    await this.#route(
      to === undefined ? { kind: "operator", text } : { kind: "operator", text, to },
      to,
    );
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#members.values()].map((m) => m.session.close().catch(() => {})));
  }

  async #route(
    body: MsgBodyJson,
    to: string | undefined,
    sender?: Member,
    author?: AuthorRecord,
  ): Promise<void> {
    if (to === undefined) return await this.#broadcast(body, sender, author);
    const target = this.#members.get(keyOf(to));
    if (!target) {
      if (sender) await this.#deliver(sender, { kind: "notice", text: `${to} is not online` });
      return;
    }
    await this.#deliver(target, body, author);
  }

  async #broadcast(body: MsgBodyJson, except?: Member, author?: AuthorRecord): Promise<void> {
    await Promise.all(
      [...this.#members.values()].filter((m) => m !== except).map((m) =>
        this.#deliver(m, body, author)
      ),
    );
  }

  async #deliver(member: Member, body: MsgBodyJson, author?: AuthorRecord): Promise<void> {
    if (member.session.closing) return;
    try {
      await member.session.send(body, author);
    } catch (error) {
      if (member.session.closing) return;
      const wrapped = error instanceof SecureChatError
        ? error
        : new SecureChatError(codeOf(error), String(error));
      member.drop(wrapped);
    }
  }
}
