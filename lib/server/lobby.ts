/**
 * The lobby (issue #6): every logged-in user hears every other one; `/msg`-style
 * bodies with `to` go to one user. Each hop is its own session, so relaying means
 * re-encrypting and re-signing for every recipient. A recipient that stops reading
 * is dropped (SLOW_CONSUMER) rather than allowed to hold the others back.
 *
 * In a cluster (docs/DEPLOY.md) every record to deliver goes through the cluster's stream,
 * this node's own included, and each node delivers what it reads there to its own members:
 * one path, one order. Presence, `/who` and takeovers span the nodes.
 */
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { toBase64 } from "../bytes.ts";
import type { AuthorRecord } from "../session/relay.ts";
import type { ChatSession, ReceivedMessage } from "../session/session.ts";
import type { MsgBodyJson } from "../wire/messages.ts";
import type { ClusterLink, LocalUser } from "../cluster/link.ts";
import type { LoginEvent, RecordEnvelope } from "../cluster/messages.ts";
import { type ClusterRecord, decodeClusterRecord, encodeClusterRecord } from "./cluster_record.ts";
import { TokenBucket } from "./limits.ts";
import { canonicalName } from "../pki/names.ts";

// The operator's name is a reserved user name: its home is lib/pki/names.ts.
export { OPERATOR_NAME } from "../pki/names.ts";
/** The notice that ends a session because its user logged in again; clients do not reconnect. */
export const TAKEOVER_NOTICE = "you logged in elsewhere; closing";

export interface LobbyLimits {
  messagesPerSecond: number;
  messageBurst: number;
}

export const DEFAULT_LOBBY_LIMITS: LobbyLimits = { messagesPerSecond: 20, messageBurst: 40 };

/** A member over its rate is told so at most once in this long; other drops cost nothing. */
export const THROTTLE_NOTICE_MS = 10_000;

/** Relayed messages of one sender being signed and queued at once, at most. */
export const RELAY_WINDOW = 32;
/** Records from the cluster stream being delivered at once, at most, before reading more. */
export const CLUSTER_DELIVERY_WINDOW = 256;

export class Member {
  readonly bucket: TokenBucket;
  /** This member's relays still being delivered (see RELAY_WINDOW). */
  readonly inFlight = new Set<Promise<void>>();
  /** Login time: of two sessions of one user, the newer one stays; the operator's `/who` shows it. */
  readonly since = Date.now();
  /**
   * Stream records held back while older ones are replayed to this member (a takeover from a
   * lost node), so each author's messages still arrive in order.
   */
  held?: ClusterRecord[];
  /** Ended because the user logged in again elsewhere: no "left" notice. */
  replaced = false;
  /** When this member was last told that messages are being dropped (see THROTTLE_NOTICE_MS). */
  throttleNoticeAt = -Infinity;
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

/** Members are keyed by canonical name: a user is one member however the name is spelt. */
const keyOf = canonicalName;

export class Lobby {
  readonly #members = new Map<string, Member>();
  readonly #cluster?: ClusterLink;
  readonly #clusterDeliveries = new Set<Promise<void>>();

  constructor(
    readonly log: Logger,
    readonly limits: LobbyLimits = DEFAULT_LOBBY_LIMITS,
    cluster?: ClusterLink,
  ) {
    this.#cluster = cluster;
  }

  /** What the cluster link calls: records from the stream, logins elsewhere, presence. */
  clusterHandlers(): Pick<
    Parameters<ClusterLink["start"]>[0],
    "record" | "login" | "localUsers"
  > {
    return {
      record: (envelope) => this.#fromCluster(envelope),
      login: (event) => this.#loggedInElsewhere(event),
      localUsers: (): LocalUser[] =>
        [...this.#members.values()].map((m) => ({
          name: m.username,
          session: m.session.sessionId,
          since: m.since,
        })),
    };
  }

  /** Bytes queued toward all members and toward the worst one: what a stalled reader costs. */
  queueStats(): { members: number; queuedBytes: number; maxQueuedBytes: number } {
    const queued = [...this.#members.values()].map((m) => m.session.established.conn.queuedBytes);
    return {
      members: queued.length,
      queuedBytes: queued.reduce((a, b) => a + b, 0),
      maxQueuedBytes: Math.max(0, ...queued),
    };
  }

  /** This node's members themselves (in a cluster, others are on other nodes). */
  localMembers(): Member[] {
    return [...this.#members.values()];
  }

  /** Everyone online: on this node, and in a cluster on every live node. */
  names(): string[] {
    const names = new Map<string, string>();
    for (const name of this.#cluster?.remoteUsers() ?? []) names.set(keyOf(name), name);
    for (const m of this.#members.values()) names.set(keyOf(m.username), m.username);
    return [...names.values()].sort();
  }

  #isOnline(name: string): boolean {
    return this.#members.has(keyOf(name)) ||
      (this.#cluster?.remoteUsers().some((remote) => keyOf(remote) === keyOf(name)) ?? false);
  }

  /** Who is online, from where and since when: the operator's `/who`. */
  members(): { username: string; peer: string; since: number }[] {
    return [...this.#members.values()]
      .map(({ username, peer, since }) => ({ username, peer, since }))
      .sort((a, b) => a.username.localeCompare(b.username));
  }

  /**
   * The operator ends a member's session: a notice saying so, then a clean close
   * (receipts exchanged). False when nobody of that name is online.
   */
  async kick(name: string): Promise<boolean> {
    const member = this.#members.get(keyOf(name));
    if (!member) return false;
    this.log("KICKED", { user: member.username, session: member.session.sessionId });
    await this.#deliver(member, { kind: "notice", text: "the operator closed your session" });
    void member.session.close().catch(() => {});
    return true;
  }

  /**
   * Adds a member. A user logging in a second time takes over: the older session
   * is closed cleanly (receipts exchanged) with a notice saying why — on this node
   * here, on the others when they hear of the login. `notices` left for the account
   * (lib/store) follow the welcome.
   */
  async join(member: Member, notices: readonly string[] = []): Promise<void> {
    const previous = this.#members.get(keyOf(member.username));
    const replay = this.#replayRangeFor(member);
    if (replay) member.held = [];
    this.#members.set(keyOf(member.username), member);
    if (previous) await this.#replace(previous);
    this.#cluster?.announceLogin(member.username, member.session.sessionId, member.since);
    this.#cluster?.announcePresence();
    if (replay) void this.#replay(member, replay.after, replay.upTo);
    await this.#route({ kind: "notice", text: `${member.username} joined` }, undefined, member);
    await this.#deliver(member, {
      kind: "notice",
      text: `welcome ${member.username}; online: ${this.names().join(", ")}`,
    });
    for (const text of notices) await this.#deliver(member, { kind: "notice", text });
  }

  async leave(member: Member): Promise<void> {
    if (this.#members.get(keyOf(member.username)) !== member) return;
    this.#members.delete(keyOf(member.username));
    this.#cluster?.announcePresence();
    if (!member.replaced) {
      await this.#route({ kind: "notice", text: `${member.username} left` }, undefined, member);
    }
  }

  /**
   * Handles one verified message from a member. Every kind counts against the member's
   * rate (issue 11 item 6): over it, a message is dropped and answered (and logged) at
   * most once per THROTTLE_NOTICE_MS, so a flood costs no reply or signature per message.
   */
  async receive(from: Member, message: ReceivedMessage): Promise<void> {
    const { body } = message;
    if (!from.bucket.take()) {
      const now = Date.now();
      if (now - from.throttleNoticeAt < THROTTLE_NOTICE_MS) return;
      from.throttleNoticeAt = now;
      this.log("RATE_LIMITED", { user: from.username, detail: `${body.kind} dropped` });
      return await this.#deliver(from, {
        kind: "notice",
        text: "slow down: messages are being dropped",
      });
    }
    if (body.kind === "who") {
      return await this.#deliver(from, {
        kind: "notice",
        text: `online: ${this.names().join(", ")}`,
      });
    }
    if (body.kind !== "text") return; // clients have nothing else to say to the lobby
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
    // message need not wait for this fan-out; a window bounds what is in flight. In a
    // cluster the delivery is the publish to the stream, and an id of the author's
    // session and seqno makes a retried publish a no-op.
    const delivery = this.#route(relay, body.to, from, { cert, seqno, ts, ct, sig }, {
      id: `${from.session.sessionId}:${seqno}`,
    });
    from.inFlight.add(delivery);
    void delivery.finally(() => from.inFlight.delete(delivery));
    while (from.inFlight.size >= RELAY_WINDOW) await Promise.race(from.inFlight);
  }

  /** The operator speaks as `server` (serve's console); false when `to` is not online. */
  async operatorSays(text: string, to?: string): Promise<boolean> {
    if (to !== undefined && !this.#isOnline(to)) return false;
    await this.#route(
      to === undefined ? { kind: "operator", text } : { kind: "operator", text, to },
      to,
    );
    return true;
  }

  /** Closes every session cleanly (receipts exchanged), first telling each member why. */
  async closeAll(why: string): Promise<void> {
    await Promise.all([...this.#members.values()].map(async (m) => {
      await this.#deliver(m, { kind: "notice", text: why });
      await m.session.close().catch(() => {});
    }));
  }

  async #route(
    body: MsgBodyJson,
    to: string | undefined,
    sender?: Member,
    author?: AuthorRecord,
    { id = crypto.randomUUID() as string } = {},
  ): Promise<void> {
    if (to !== undefined && !this.#isOnline(to)) {
      // The end-to-end offline queue will take the record here (docs/DEPLOY.md "Offline").
      if (sender) await this.#deliver(sender, { kind: "notice", text: `${to} is not online` });
      return;
    }
    if (!this.#cluster) {
      if (to === undefined) return await this.#broadcast(body, sender, author);
      return await this.#deliver(this.#members.get(keyOf(to))!, body, author);
    }
    try {
      await this.#cluster.publishRecord({
        from: sender?.username,
        to,
        record: encodeClusterRecord({ body, author }),
      }, id);
    } catch (error) {
      this.log(codeOf(error), { user: sender?.username, detail: (error as Error).message });
      if (sender && body.kind === "relay") {
        await this.#deliver(sender, {
          kind: "notice",
          text: "not delivered: the chat cluster is unavailable; try again",
        });
      }
    }
  }

  /** A record from the cluster stream: to this node's members it is meant for. */
  #fromCluster(envelope: RecordEnvelope): Promise<void> | undefined {
    let record: ClusterRecord;
    try {
      record = decodeClusterRecord(envelope.record);
    } catch (error) {
      this.log(codeOf(error), { detail: `from node ${envelope.node}` });
      return;
    }
    for (const member of this.#recipients(envelope)) {
      if (member.held) {
        member.held.push(record);
        continue;
      }
      const delivery = this.#deliver(member, record.body, record.author);
      this.#clusterDeliveries.add(delivery);
      void delivery.finally(() => this.#clusterDeliveries.delete(delivery));
    }
    // Sends are numbered when they start, so the next record may start before these end.
    if (this.#clusterDeliveries.size >= CLUSTER_DELIVERY_WINDOW) {
      return Promise.race(this.#clusterDeliveries);
    }
  }

  #recipients({ from, to }: RecordEnvelope): Member[] {
    if (to !== undefined) {
      const target = this.#members.get(keyOf(to));
      return target ? [target] : [];
    }
    const author = from === undefined ? undefined : keyOf(from);
    return [...this.#members.values()].filter((m) => keyOf(m.username) !== author);
  }

  /**
   * A user whose last session was on another node may have lost records that node had not
   * yet handed over (it was killed, say): replay from that node's reported cursor to what
   * this node has delivered so far; everything after reaches the member live.
   */
  #replayRangeFor(member: Member): { after: number; upTo: number } | undefined {
    const seen = this.#cluster?.lastSeen(member.username, member.session.sessionId);
    const upTo = this.#cluster?.processed ?? 0;
    if (!seen || seen.cursor >= upTo) return undefined;
    return { after: seen.cursor, upTo };
  }

  async #replay(member: Member, after: number, upTo: number): Promise<void> {
    let count = 0;
    try {
      for await (const [envelope] of this.#cluster!.replay(after, upTo)) {
        if (member.session.closing) return;
        if (!this.#recipients(envelope).includes(member)) continue;
        const record = decodeClusterRecord(envelope.record);
        // Join and leave notices of the past would only mislead; messages are what was missed.
        if (record.body.kind === "notice") continue;
        void this.#deliver(member, record.body, record.author);
        count++;
      }
    } catch (error) {
      this.log(codeOf(error), { user: member.username, detail: `replay: ${error}` });
    } finally {
      const held = member.held ?? [];
      member.held = undefined;
      for (const record of held) void this.#deliver(member, record.body, record.author);
      this.log("REPLAYED", {
        user: member.username,
        session: member.session.sessionId,
        detail: `${count} records after stream seq ${after}`,
      });
    }
  }

  /** Another node logged this user in: the older of the two sessions ends. */
  #loggedInElsewhere(event: LoginEvent): void {
    const member = this.#members.get(keyOf(event.user));
    if (!member || member.session.sessionId === event.session) return;
    const { since } = member;
    if (since > event.at || (since === event.at && member.session.sessionId > event.session)) {
      return; // ours is the newer one; that node ends its own when it hears of ours
    }
    this.#members.delete(keyOf(event.user));
    this.#cluster?.announcePresence();
    void this.#replace(member, event.node);
  }

  /** Ends a member's session because its user logged in again (here, or on `node`). */
  async #replace(previous: Member, node?: string): Promise<void> {
    previous.replaced = true;
    this.log("SESSION_REPLACED", {
      user: previous.username,
      session: previous.session.sessionId,
      ...(node ? { detail: `logged in on node ${node}` } : {}),
    });
    await this.#deliver(previous, { kind: "notice", text: TAKEOVER_NOTICE });
    void previous.session.close().catch(() => {});
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
