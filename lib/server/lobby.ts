/**
 * The lobby (issue #6): every logged-in user hears every other one; records addressed
 * `user:x` go to one user. The server forwards the author's own signed record (PROTOCOL
 * §6.4): serialised once, sealed per recipient, never signed by the server. A recipient
 * that stops reading is dropped (SLOW_CONSUMER) rather than allowed to hold the others back.
 *
 * In a cluster (docs/DEPLOY.md) every record to deliver goes through the cluster's stream,
 * this node's own included, and each node delivers what it reads there to its own members:
 * one path, one order. Presence, `/who` and takeovers span the nodes.
 */
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { toBase64 } from "../bytes.ts";
import {
  type Body,
  canonicalName,
  LOBBY,
  type PreparedRelay,
  prepareRelay,
  recipientUser,
  type RefusalCode,
} from "../message/record.ts";
import type { ChatSession, ReceivedMessage } from "../session/session.ts";
import type { ClusterLink, LocalUser } from "../cluster/link.ts";
import type { LoginEvent, RecordEnvelope } from "../cluster/messages.ts";
import {
  type ClusterRecord,
  decodeClusterRecord,
  encodeClusterRecord,
  preparedRelayOf,
} from "./cluster_record.ts";
import { TokenBucket } from "./limits.ts";

// The operator's name is a reserved user name: its home is lib/pki/names.ts.
export { OPERATOR_NAME } from "../pki/names.ts";
/** The notice that ends a session because its user logged in again; clients do not reconnect. */
export const TAKEOVER_NOTICE = "you logged in elsewhere; closing";

export interface LobbyLimits {
  messagesPerSecond: number;
  messageBurst: number;
}

export const DEFAULT_LOBBY_LIMITS: LobbyLimits = { messagesPerSecond: 20, messageBurst: 40 };

/** Relayed messages of one sender being published to the cluster at once, at most. */
export const RELAY_WINDOW = 32;

export class Member {
  readonly bucket: TokenBucket;
  /** This member's relays still being published (see RELAY_WINDOW). */
  readonly inFlight = new Set<Promise<void>>();
  /** The member's certificate as relays carry it, encoded once. */
  readonly certBase64: string;
  /** Login time: of two sessions of one user, the newer one stays; the operator's `/who` shows it. */
  readonly since = Date.now();
  /**
   * Stream records held back while older ones are replayed to this member (a takeover from a
   * lost node), so each author's messages still arrive in order.
   */
  held?: ClusterRecord[];
  /** Ended because the user logged in again elsewhere: no "left" notice. */
  replaced = false;
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

/** Members are keyed by canonical name: a user is one member however the name is spelt. */
const keyOf = canonicalName;

export class Lobby {
  readonly #members = new Map<string, Member>();
  readonly #cluster?: ClusterLink;

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
  kick(name: string): Promise<boolean> {
    const member = this.#members.get(keyOf(name));
    if (!member) return Promise.resolve(false);
    this.log("KICKED", { user: member.username, session: member.session.sessionId });
    this.#notify(member, { kind: "notice", text: "the operator closed your session" });
    void member.session.close().catch(() => {});
    return Promise.resolve(true);
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
    await this.#route(
      { body: { kind: "notice", text: `${member.username} joined` } },
      undefined,
      member,
    );
    this.#notify(member, {
      kind: "notice",
      text: `welcome ${member.username}; online: ${this.names().join(", ")}`,
    });
    for (const text of notices) this.#notify(member, { kind: "notice", text });
  }

  async leave(member: Member): Promise<void> {
    if (this.#members.get(keyOf(member.username)) !== member) return;
    this.#members.delete(keyOf(member.username));
    this.#cluster?.announcePresence();
    if (!member.replaced) {
      await this.#route(
        { body: { kind: "notice", text: `${member.username} left` } },
        undefined,
        member,
      );
    }
  }

  /** Handles one verified session message from a member (PROTOCOL §6.3–6.5). */
  async receive(from: Member, message: ReceivedMessage): Promise<void> {
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
    const to = record.to === LOBBY ? undefined : recipientUser(record.to)!;
    if (to !== undefined && !this.#isOnline(to)) {
      return this.#refuse(from, message.seqno, "NOT_ONLINE");
    }
    const relay: ClusterRecord = {
      relay: { cert: from.certBase64, record: message.recordJson, k: toBase64(message.k) },
    };
    if (!this.#cluster) {
      // One serialisation, one seal per recipient, no signature (PROTOCOL §6.4).
      const prepared = prepareRelay(
        from.certBase64,
        from.session.established.peer.der,
        message.recordJson,
        record,
        message.k,
      );
      for (const member of this.#localRecipients(from.username, to)) this.#relay(member, prepared);
      return;
    }
    // In a cluster the delivery is the publish to the stream; an id of the author's session
    // and seqno makes a retried publish a no-op, and a window bounds what is in flight.
    const delivery = this.#route(relay, to, from, {
      id: `${from.session.sessionId}:${message.seqno}`,
    });
    from.inFlight.add(delivery);
    void delivery.finally(() => from.inFlight.delete(delivery));
    while (from.inFlight.size >= RELAY_WINDOW) await Promise.race(from.inFlight);
  }

  /** The operator speaks as `server` (serve's console); false when `to` is not online. */
  async operatorSays(text: string, to?: string): Promise<boolean> {
    if (to !== undefined && !this.#isOnline(to)) return false;
    const body: Body = to === undefined
      ? { kind: "operator", text }
      : { kind: "operator", text, private: true };
    await this.#route({ body }, to);
    return true;
  }

  /** Closes every session cleanly (receipts exchanged), first telling each member why. */
  async closeAll(why: string): Promise<void> {
    await Promise.all([...this.#members.values()].map(async (m) => {
      this.#notify(m, { kind: "notice", text: why });
      await m.session.close().catch(() => {});
    }));
  }

  /** This node's members a record from `from` (a user name) to `to` (one user, or all) reaches. */
  #localRecipients(from: string | undefined, to: string | undefined): Member[] {
    if (to !== undefined) {
      const target = this.#members.get(keyOf(to));
      return target ? [target] : [];
    }
    const author = from === undefined ? undefined : keyOf(from);
    return [...this.#members.values()].filter((m) => keyOf(m.username) !== author);
  }

  /** Delivers locally, or in a cluster publishes to the stream (every node delivers from it). */
  async #route(
    record: ClusterRecord,
    to: string | undefined,
    sender?: Member,
    { id = crypto.randomUUID() as string } = {},
  ): Promise<void> {
    if (!this.#cluster) {
      return this.#deliverRecord(this.#localRecipients(sender?.username, to), record);
    }
    try {
      await this.#cluster.publishRecord({
        from: sender?.username,
        to,
        record: encodeClusterRecord(record),
      }, id);
    } catch (error) {
      this.log(codeOf(error), { user: sender?.username, detail: (error as Error).message });
      if (sender && "relay" in record) {
        this.#notify(sender, {
          kind: "notice",
          text: "not delivered: the chat cluster is unavailable; try again",
        });
      }
    }
  }

  /** One record to some members: a relay is serialised once for all of them. */
  #deliverRecord(members: Member[], record: ClusterRecord): void {
    if ("body" in record) {
      for (const m of members) this.#notify(m, record.body);
      return;
    }
    if (members.length === 0) return;
    const prepared = preparedRelayOf(record.relay);
    for (const m of members) this.#relay(m, prepared);
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
    const now: Member[] = [];
    for (const member of this.#localRecipients(envelope.from, envelope.to)) {
      if (member.held) member.held.push(record);
      else now.push(member);
    }
    // The server's sends are synchronous (no signature): nothing to wait for here.
    this.#deliverRecord(now, record);
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
        if (!this.#localRecipients(envelope.from, envelope.to).includes(member)) continue;
        const record = decodeClusterRecord(envelope.record);
        // Join and leave notices of the past would only mislead; messages are what was missed.
        if ("body" in record && record.body.kind === "notice") continue;
        this.#deliverRecord([member], record);
        count++;
      }
    } catch (error) {
      this.log(codeOf(error), { user: member.username, detail: `replay: ${error}` });
    } finally {
      const held = member.held ?? [];
      member.held = undefined;
      for (const record of held) this.#deliverRecord([member], record);
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
    this.#notify(previous, { kind: "notice", text: TAKEOVER_NOTICE });
    await previous.session.close().catch(() => {});
  }

  #notify(member: Member, body: Body): void {
    this.#deliver(
      member,
      () => void member.session.send(body).catch((e) => this.#failed(member, e)),
    );
  }

  #relay(member: Member, prepared: PreparedRelay): void {
    this.#deliver(member, () => member.session.relay(prepared));
  }

  #refuse(member: Member, of: number, code: RefusalCode): void {
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
