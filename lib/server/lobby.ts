/**
 * The lobby (issue #6): every logged-in user hears every other one; records addressed
 * `user:x` go to one user. The server forwards the author's own signed record (PROTOCOL
 * §6.4): serialised once, sealed per recipient, never signed by the server. A recipient
 * that stops reading is dropped (SLOW_CONSUMER) rather than allowed to hold the others back.
 *
 * In a cluster (docs/DEPLOY.md) every record to deliver goes through the cluster's stream,
 * this node's own included, and each node delivers what it reads there to its own members:
 * one path, one order. Presence, `/who` and takeovers span the nodes.
 *
 * A private record to a user who is not online goes to the offline queue in the store
 * (PROTOCOL §6.6): the author is told `queued` once it is committed, and the recipient gets
 * it as `stored` at login (or at once, if they logged in meanwhile), before any live relay,
 * so each author's records arrive in order. Rows are deleted when the client acknowledges.
 */
import { codeOf, type ErrorCode, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { fromBase64, toBase64 } from "../bytes.ts";
import { BundleJsonSchema } from "../e2e/envelope.ts";
import { type KeyDirectory, PREKEYS_LOW } from "../store/key_directory.ts";
import {
  type AuthorCert,
  type Body,
  canonicalName,
  keysBodies,
  LOBBY,
  onlineBodies,
  type PreparedRelay,
  type ReceivedGroup,
  recipientUser,
  type RefusalCode,
  relaySharedBytes,
} from "../message/record.ts";
import type { ChatSession, ReceivedMessage } from "../session/session.ts";
import type { ClusterLink, LocalUser } from "../cluster/link.ts";
import type { LoginEvent, RecordEnvelope } from "../cluster/messages.ts";
import {
  type ClusterRecord,
  type ClusterRelay,
  decodeClusterRecord,
  decodeStoredRelay,
  encodeClusterRecord,
  heldRecordBytes,
  preparedRelayOf,
} from "./cluster_record.ts";
import { TokenBucket } from "./limits.ts";
import { commonNameOf, parseCertificate } from "../pki/certificate.ts";
import type { MessageQueue, QueueLimits } from "../store/message_queue.ts";
import type { CloseCode } from "../wire/messages.ts";
import { MAX_CONTENT_BYTES } from "../handshake/record.ts";
import { PRESENCE_NOTICE_WINDOW_MS, PresenceNotices, welcomeText, whoPages } from "./presence.ts";

// The operator's name is a reserved user name: its home is lib/pki/names.ts.
export { OPERATOR_NAME } from "../pki/names.ts";

/**
 * Shown to a session ended because its user logged in again, before the `close` whose code
 * `SESSION_TAKEN_OVER` is what the client acts on (PROTOCOL §7.1): display only (§6.2).
 */
const TAKEOVER_NOTICE = "you logged in elsewhere; closing";

export interface LobbyLimits {
  messagesPerSecond: number;
  messageBurst: number;
  /** Joins and leaves within this window go out as one notice (0: each at once). */
  presenceNoticeMs?: number;
}

export const DEFAULT_LOBBY_LIMITS: LobbyLimits = {
  messagesPerSecond: 20,
  messageBurst: 40,
  presenceNoticeMs: PRESENCE_NOTICE_WINDOW_MS,
};

/** The most private end-to-end records a membership change lets a member send beyond its rate. */
export const MAX_REKEY_ALLOWANCE = 1000;

/** Relayed messages of one sender being published to the cluster at once, at most. */
export const RELAY_WINDOW = 32;

/** Offline queue rows read per query while delivering (PROTOCOL §6.6). */
const STORED_PAGE = 100;
/** The share of a session's send queue its offline delivery and a replay leave free (#roomFor). */
const STORED_RESERVE = 0.5;
/**
 * How many times its send queue what is held back for a member may keep (PROTOCOL §8.2): the
 * live relays held during its offline delivery, each with the msg it came in (#heldCost), and the
 * stream records held during a cluster replay, together. They pile up while the member's link
 * carries its queue or its replay, so a reader on a slow link holds several send queues' worth
 * (review9 R9-2: ~9 at 200 KB/s with the lobby speaking half that, each line ~15 KB kept); one
 * that stopped reading would otherwise hold everything said (review17 R17-4, held17).
 */
const HELD_QUEUE_FACTOR = 16;

/** The offline queue and its bounds (absent: private records to absent users are refused). */
export interface OfflineDelivery {
  queue: MessageQueue;
  limits: QueueLimits;
  /** Why an author's certificate (DER), as the queue holds it, would now be refused, if so. */
  lapsed: (certDer: Uint8Array) => "revoked" | "expired" | undefined;
}

/** Refusal codes for what storing a record can fail with; anything else is the store's fault. */
const STORE_REFUSALS: Partial<Record<ErrorCode, RefusalCode>> = {
  UNKNOWN_USER: "NOT_ONLINE",
  QUEUE_FULL: "QUEUE_FULL",
};

export class Member {
  readonly bucket: TokenBucket;
  /**
   * This member's relays still being published (see RELAY_WINDOW). This and the stored-record
   * books below are made at first use: an idle member holds none of them.
   */
  inFlight?: Set<Promise<void>>;
  /** Login time: of two sessions of one user, the newer one stays; the operator's `/who` shows it. */
  readonly since = Date.now();
  /**
   * Stream records held back while older ones are replayed to this member (a takeover from a
   * lost node), so each author's messages still arrive in order; each with what it keeps, in
   * bytes (heldRecordBytes).
   */
  held?: { record: ClusterRecord; bytes: number }[];
  /** What `held` keeps, in bytes: bounded with `deferredBytes` (Lobby.#checkHeld). */
  heldBytes = 0;
  /** Ended because the user logged in again elsewhere: no "left" notice. */
  replaced = false;
  /**
   * While stored records are being delivered: live relays to this member wait here, so an
   * author's queued records arrive before their later live ones (PROTOCOL §6.6).
   */
  deferred?: PreparedRelay[];
  /** What `deferred` keeps, in bytes (Lobby.#heldCost), bounded with `heldBytes`. */
  deferredBytes = 0;
  /** How many relays of each msg `deferred` holds (its group is kept while any is). */
  deferredGroups?: Map<ReceivedGroup, number>;
  /**
   * While the lobby's online list goes to this member in parts, paced (Lobby.#sendParts): the
   * membership changes made meanwhile, told after the list's last part (PROTOCOL §12.5: no
   * `joined` or `left` before the whole list).
   */
  membersHeld?: Extract<Body, { kind: "members" }>[];
  /** More was queued while a delivery ran: it goes round again. */
  storedAgain = false;
  /**
   * In a cluster, while `held` or `deferred` hold records back: the stream sequence up to
   * which this member had been handed everything when they began (see ClusterHandlers.heldFrom).
   */
  heldFrom?: number;
  /** Stored records sent in this session and not yet acknowledged: hop seqno → queue row. */
  storedSent?: Map<number, number>;
  /** Every queue row sent in this session: never sent twice in one session. */
  storedIds?: Set<number>;
  /**
   * The session published an end-to-end device (PROTOCOL §12.6): it is told of membership
   * changes (`members` bodies, §12.5), which clients without the layer would not understand.
   */
  e2e = false;
  /**
   * Private end-to-end records the member may send beyond its rate after the last membership
   * change: one new sender key per member (§12.5), which the server cannot tell from text.
   */
  rekeyAllowance = 0;
  /** The member's key among the lobby's members (keyOf its name), made once. */
  readonly key: string;
  constructor(
    readonly session: ChatSession,
    readonly peer: string,
    limits: LobbyLimits,
    /** Ends the member's connection with a code (the session's run loop then returns). */
    readonly drop: (error: SecureChatError) => void,
  ) {
    this.bucket = new TokenBucket(limits.messageBurst, limits.messagesPerSecond);
    this.key = keyOf(session.username);
  }
  /**
   * The member's certificate as relays name or introduce it (PROTOCOL §6.4.1), made once (by
   * its session, at its first msg): every recipient session's list shares its fingerprint, and
   * its bytes.
   */
  get authorCert(): AuthorCert {
    return this.session.peerAuthor;
  }
  get username(): string {
    return this.session.username;
  }
}

/** Members are keyed by canonical name: a user is one member however the name is spelt. */
const keyOf = canonicalName;

/** A record of the offline queue, ready to send, with its place among its author's records. */
interface StoredRow {
  id: number;
  prepared: PreparedRelay;
  /** Its size in the queue: at least what it takes on the wire (which may leave out `cert`). */
  bytes: number;
  /** The author's session and the record's number in it. */
  sid: string;
  seqno: number;
}

/**
 * A member's record as the cluster's stream and the offline queue carry it (only there: a
 * relay on this node alone needs none of it). An end-to-end record travels with its envelope,
 * which the server cannot open.
 */
function clusterRelayOf(
  from: Member,
  message: Extract<ReceivedMessage, { type: "msg" | "sealed" }>,
): ClusterRelay {
  const cert = from.authorCert.cert!.base64;
  return message.type === "sealed"
    ? { cert, record: message.forms.json, e2e: message.e2e }
    : { cert, record: message.forms.json, k: toBase64(message.k) };
}

/** Where a relayed record stands among its author's: their session, and its number there. */
function authorPlace(relay: ClusterRelay): { sid: string; seqno: number } {
  return { sid: relay.record.sid, seqno: relay.record.seqno };
}

export class Lobby {
  readonly #members = new Map<string, Member>();
  readonly #cluster?: ClusterLink;
  readonly #offline?: OfflineDelivery;
  readonly #presence: PresenceNotices;
  readonly #keyDirectory?: KeyDirectory;
  /** Whether the CRL in force revokes a certificate a stored bundle was published under. */
  readonly #revoked?: (cert: Uint8Array) => boolean;

  constructor(
    readonly log: Logger,
    readonly limits: LobbyLimits = DEFAULT_LOBBY_LIMITS,
    cluster?: ClusterLink,
    offline?: OfflineDelivery,
    keyDirectory?: KeyDirectory,
    revoked?: (cert: Uint8Array) => boolean,
  ) {
    this.#cluster = cluster;
    this.#offline = offline;
    // A notice naming one user is not sent to that user (a joiner has its welcome); one
    // naming several goes to everyone who was there by its last change.
    this.#presence = new PresenceNotices(
      limits.presenceNoticeMs ?? PRESENCE_NOTICE_WINDOW_MS,
      (text, sole, at) => void this.#route({ body: { kind: "notice", text }, at }, undefined, sole),
    );
    this.#keyDirectory = keyDirectory;
    this.#revoked = revoked;
  }

  /** What the cluster link calls: records from the stream, logins elsewhere, presence. */
  clusterHandlers(): Pick<
    Parameters<ClusterLink["start"]>[0],
    "record" | "login" | "localUsers" | "heldFrom" | "forgotten"
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
      forgotten: (users) => this.#forgotten(users),
      heldFrom: () => {
        let from: number | undefined;
        for (const m of this.#members.values()) {
          if (m.heldFrom !== undefined) from = Math.min(from ?? Infinity, m.heldFrom);
        }
        return from;
      },
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
    for (const m of this.#members.values()) names.set(m.key, m.username);
    return [...names.values()].sort();
  }

  /**
   * The lobby's end-to-end membership (PROTOCOL §12.5): everyone online and, in a cluster, the
   * users of a node gone silent who have not logged in again. No `left` is told of those (their
   * node died; nobody saw them go), so every session that knew them still counts them as
   * members and sends them its sender keys, which the offline queue keeps for their return; the
   * node they come back to replays the lobby lines they missed (DEPLOY.md §4.4). A session that
   * starts meanwhile — above all another user of the same node, reconnecting first — must count
   * them too, or the lines it sends before their return reach them under a chain they never get.
   */
  #lobbyMembership(): string[] {
    const names = new Map<string, string>();
    for (const name of this.#cluster?.departedUsers() ?? []) names.set(keyOf(name), name);
    for (const name of this.names()) names.set(keyOf(name), name);
    return [...names.values()].sort();
  }

  /**
   * Users of a node gone silent whose last presence was forgotten without their logging in
   * again: not coming back through a replay, so they leave the lobby's membership (PROTOCOL
   * §12.5) — each node tells its own members, which retires every author's chain they held.
   */
  #forgotten(users: string[]): void {
    const members = this.localMembers();
    for (const name of users) {
      if (this.#isOnline(name)) continue;
      this.#membersChanged(members, { kind: "members", event: "left", users: [name] });
    }
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
    const previous = this.#members.get(member.key);
    const replay = this.#replayRangeFor(member);
    if (replay) {
      member.held = [];
      // What the member's last node had handed over: all it has until the replay is done.
      member.heldFrom = replay.after;
    }
    this.#members.set(member.key, member);
    // Before anything can be relayed to the member: what waited comes first (§6.6). A replay
    // sends it instead, each record in its author's order among the replayed ones.
    if (!replay) void this.#deliverStored(member);
    if (previous) await this.#replace(previous);
    this.#cluster?.announceLogin(member.username, member.session.sessionId, member.since);
    this.#cluster?.announcePresence();
    if (replay) void this.#replay(member, replay.after, replay.upTo);
    this.#presence.add("joined", member.username);
    this.#notify(member, { kind: "notice", text: welcomeText(member.username, this.names()) });
    for (const text of notices) this.#notify(member, { kind: "notice", text });
  }

  leave(member: Member): void {
    if (this.#members.get(member.key) !== member) return;
    this.#members.delete(member.key);
    this.#cluster?.announcePresence();
    if (!member.replaced) {
      this.#presence.add("left", member.username);
      void this.#route(
        { body: { kind: "members", event: "left", users: [member.username] } },
        undefined,
        member,
      );
    }
  }

  /**
   * Handles one verified session message from a member (PROTOCOL §6.3–6.5). A relay on this
   * node alone, a refusal and a `who` are done when it returns (undefined: the session's loop
   * goes on to the next message without a promise per message); what waits on the store, the
   * key directory or the cluster returns its promise.
   * @throws INTERNAL for a relayed record its session did not prepare (§6.3 step 7 is the
   *   session's, as §12.6's publish rules are: checked for every record of a msg before any is
   *   acted on)
   */
  receive(from: Member, message: ReceivedMessage): Promise<void> | undefined {
    if (message.type !== "msg" && message.type !== "sealed") return; // clients send nothing else
    const rekey = message.type === "sealed" && message.record.to !== LOBBY &&
      from.rekeyAllowance > 0;
    if (rekey) from.rekeyAllowance--;
    else if (!from.bucket.take()) {
      // Every kind counts, and a refusal costs no signature (issue 11 item 6).
      this.log("RATE_LIMITED", { user: from.username, detail: `message ${message.seqno} refused` });
      this.#refuse(from, message.seqno, "RATE_LIMITED");
      return;
    }
    const { record } = message;
    if (message.type === "msg") {
      const { body } = message;
      if (body.kind === "who") {
        for (const text of whoPages(this.names())) this.#notify(from, { kind: "notice", text });
        // Members failing over read the lobby too (#lobbyMembership): said, not hidden.
        const away = this.#lobbyMembership().filter((name) => !this.#isOnline(name));
        if (away.length === 0) return;
        for (const text of whoPages(away, "reconnecting")) {
          this.#notify(from, { kind: "notice", text });
        }
        return;
      }
      if (body.kind === "keys_publish" || body.kind === "keys_fetch") {
        return this.#keys(from, body);
      }
      if (body.kind === "received") {
        return this.#acknowledged(from, body.upto, new Set(body.unread ?? []));
      }
      if (body.kind !== "text") return;
    }
    // One serialisation, one seal per recipient, no signature (PROTOCOL §6.4): prepared by the
    // session with §6.3 step 7, before any record of the msg was acted on.
    const { prepared } = message;
    if (!prepared) throw new SecureChatError("INTERNAL", `message ${message.seqno} not prepared`);
    const to = record.to === LOBBY ? undefined : recipientUser(record.to)!;
    if (to !== undefined && !this.#reachable(to)) {
      return this.#store(from, message.seqno, to, clusterRelayOf(from, message));
    }
    // Joins and leaves told before this line stay before it.
    this.#presence.flush();
    if (!this.#cluster) {
      // Every record of every msg comes this way: no list of recipients made for it. The same
      // recipients as #localRecipients's (the author skipped by its key, so a session taken over
      // never reaches its successor): keep the two in step (tests/unit/lobby_test.ts).
      if (to !== undefined) {
        const target = this.#members.get(keyOf(to));
        if (target) this.#relay(target, prepared);
      } else {
        for (const member of this.#members.values()) {
          if (member.key !== from.key) this.#relay(member, prepared);
        }
      }
      return;
    }
    return this.#publish(from, message, to);
  }

  /**
   * In a cluster the delivery is the publish to the stream; an id of the author's session
   * and seqno makes a retried publish a no-op, and a window bounds what is in flight.
   */
  async #publish(
    from: Member,
    message: Extract<ReceivedMessage, { type: "msg" | "sealed" }>,
    to: string | undefined,
  ): Promise<void> {
    const relay: ClusterRecord = { relay: clusterRelayOf(from, message) };
    const delivery = this.#route(relay, to, from, {
      id: `${from.session.sessionId}:${message.seqno}`,
      seqno: message.seqno,
    });
    const inFlight = from.inFlight ??= new Set();
    inFlight.add(delivery);
    void delivery.finally(() => inFlight.delete(delivery));
    while (inFlight.size >= RELAY_WINDOW) await Promise.race(inFlight);
  }

  /** Online and not on the way out: a live relay would reach them. */
  #reachable(name: string): boolean {
    const local = this.#members.get(keyOf(name));
    if (local) return !local.session.closing;
    return this.#isOnline(name);
  }

  /**
   * A private record for a user who is not online (PROTOCOL §6.6): committed to the offline
   * queue, then the author is told `queued`; refused with a code when it cannot be stored.
   * The recipient, if they logged in meanwhile (here or on another node), gets it at once.
   */
  async #store(from: Member, seqno: number, to: string, relay: ClusterRelay): Promise<void> {
    if (!this.#offline) return this.#refuse(from, seqno, "NOT_ONLINE");
    if (!("e2e" in relay)) {
      // The queue holds ciphertext only (§6.6): a record whose content key the server can
      // read (a client without the end-to-end layer, or a recipient with no device) is not
      // kept on disk for weeks.
      this.log("NOT_ONLINE", {
        user: from.username,
        session: from.session.sessionId,
        detail: `message ${seqno} for ${to} not stored: it is not end-to-end encrypted`,
      });
      return this.#refuse(from, seqno, "NOT_ONLINE");
    }
    const { queue, limits } = this.#offline;
    try {
      const author = { name: from.key, serial: from.session.established.peer.serial };
      await queue.enqueue(to, author, JSON.stringify({ relay }), limits);
    } catch (error) {
      const refusal = STORE_REFUSALS[codeOf(error)] ?? "DB_UNAVAILABLE";
      this.log(codeOf(error), {
        user: from.username,
        session: from.session.sessionId,
        detail: `message ${seqno} for ${to} not stored: ${(error as Error).message}`,
      });
      return this.#refuse(from, seqno, refusal);
    }
    this.log("QUEUED", {
      user: from.username,
      session: from.session.sessionId,
      detail: `message ${seqno} stored for ${to}`,
    });
    this.#deliver(from, () => from.session.queued(seqno));
    await this.#storedFor(to, from, seqno);
  }

  /** Tells the node where `to` is (this one, or any in a cluster) that more is stored for them. */
  async #storedFor(to: string, from: Member, seqno: number): Promise<void> {
    if (!this.#cluster) {
      const member = this.#members.get(keyOf(to));
      if (member) void this.#deliverStored(member);
      return;
    }
    await this.#route({ stored: true }, to, from, {
      id: `${from.session.sessionId}:${seqno}:stored`,
    });
  }

  /**
   * Sends a member every stored record not yet sent in this session, oldest first, holding
   * live relays back meanwhile. A call while one runs makes it go round again, so a record
   * committed during a delivery is not left behind.
   */
  async #deliverStored(member: Member): Promise<void> {
    if (!this.#offline || member.session.closing) return;
    if (member.deferred) {
      member.storedAgain = true;
      return;
    }
    member.deferred = [];
    if (this.#cluster) {
      member.heldFrom = Math.min(member.heldFrom ?? Infinity, this.#cluster.processed);
    }
    let count = 0;
    try {
      do {
        member.storedAgain = false;
        count += await this.#storedPass(member);
      } while (member.storedAgain && !member.session.closing);
    } catch (error) {
      // Left in the queue: delivered at the next login.
      this.log(codeOf(error), {
        user: member.username,
        session: member.session.sessionId,
        detail: `offline queue: ${(error as Error).message}`,
      });
    } finally {
      await this.#sendDeferred(member);
      this.#holdsNothing(member);
    }
    if (count > 0) {
      this.log("STORED_SENT", {
        user: member.username,
        session: member.session.sessionId,
        detail: `${count} records from the offline queue`,
      });
    }
    // Stored while the held relays went: delivered now, behind them.
    if (member.storedAgain) void this.#deliverStored(member);
  }

  /**
   * Sends the live relays held back while the member's queue was delivered, paced as the stored
   * records were: they came in while the member's link carried its queue, and sent in one turn
   * they could fill the send queue of a member reading all along (SLOW_CONSUMER, review9 R9-2).
   * Relays that come in meanwhile are held too, behind them.
   */
  async #sendDeferred(member: Member): Promise<void> {
    const deferred = member.deferred!;
    try {
      for (let i = 0; i < deferred.length && !member.session.closing; i++) {
        const prepared = deferred[i];
        await this.#roomFor(member, relaySharedBytes(prepared));
        this.#deliver(member, () => void member.session.relay(prepared));
        member.deferredBytes -= this.#heldCost(member, prepared, true);
      }
    } finally {
      member.deferred = undefined;
      member.deferredBytes = 0;
      member.deferredGroups = undefined;
    }
  }

  /**
   * Deletes a queued record whose author's certificate was revoked or expired while it
   * waited: the recipient would refuse it (BAD_CERT ends the session, PROTOCOL §6.4 step 2),
   * at every login until the record expired.
   */
  async #dropLapsed(
    member: Member,
    id: number,
    certDer: Uint8Array,
    why: "revoked" | "expired",
  ): Promise<void> {
    await this.#offline!.queue.remove(member.username, [id]);
    this.log(why === "revoked" ? "REVOKED" : "BAD_CERT", {
      user: member.username,
      session: member.session.sessionId,
      detail: `offline queue: a record from ${
        commonNameOf(parseCertificate(certDer).subject)
      }, whose certificate is ${why}, deleted undelivered`,
    });
  }

  /**
   * One pass over the member's whole queue; @returns how many records it sent. A queue may
   * hold more than the session's send queue (1000 records of up to ~6 KB against 1 MiB, §8.2),
   * so when the next record would take the queue past half its limit, what was made is written
   * out before going on: the other half stays free for what the session sends meanwhile (the
   * answers to the client's first messages, live relays), which would otherwise find the queue
   * full and end the session (SLOW_CONSUMER).
   */
  async #storedPass(member: Member): Promise<number> {
    const rows = await this.#storedRows(member);
    let sent = 0;
    for (const row of rows) {
      await this.#roomFor(member, row.bytes);
      try {
        if (this.#sendStored(member, row)) sent++;
      } catch (error) {
        this.#failed(member, error); // the session ended: the rest stays queued
        break;
      }
    }
    return sent;
  }

  /**
   * Waits, when `bytes` more would take the member's send queue past half its limit, until
   * what was made is written out: a delivery of many records (the offline queue, a replay)
   * leaves the other half to what the session sends meanwhile (#storedPass).
   */
  async #roomFor(member: Member, bytes: number): Promise<void> {
    if (!member.session.hasRoom(bytes, STORED_RESERVE)) await member.session.drain();
  }

  /**
   * Sends an answer that comes in parts (a fetch's list, the lobby's members: PROTOCOL §12.5,
   * §12.6), each part paced as the offline delivery is (#roomFor; the first too, behind what is
   * already queued: review18 R18-2): all queued in
   * one turn they could take more than the member's send queue holds (8 parts of ~37 KB against
   * `serve --send-queue 131072`) and end the session of a member reading all along (review17
   * R17-1). A part is at most one record (MAX_CONTENT_BYTES); a member that stops reading is
   * dropped at the next part, as a full send queue drops it (SLOW_CONSUMER).
   */
  async #sendParts(member: Member, parts: readonly Body[]): Promise<void> {
    for (const part of parts) {
      await this.#roomFor(member, MAX_CONTENT_BYTES);
      if (member.session.closing) return;
      this.#notify(member, part);
    }
  }

  /** The member's queued records not yet sent in this session, oldest first. */
  async #storedRows(member: Member): Promise<StoredRow[]> {
    const rows: StoredRow[] = [];
    let after = 0;
    for (;;) {
      const page = await this.#offline!.queue.pending(member.username, STORED_PAGE, after);
      for (const row of page) {
        after = row.id;
        if (member.storedIds?.has(row.id)) continue;
        let relay: ClusterRelay;
        let prepared: PreparedRelay;
        try {
          relay = decodeStoredRelay(row.item);
          prepared = preparedRelayOf(relay);
        } catch (error) {
          // Not ours to deliver (a row this build did not write): it expires unread.
          this.log(codeOf(error), { user: member.username, detail: `offline queue row ${row.id}` });
          continue;
        }
        const certDer = fromBase64(relay.cert);
        const lapsed = this.#offline!.lapsed(certDer);
        if (lapsed) {
          await this.#dropLapsed(member, row.id, certDer, lapsed);
          continue;
        }
        rows.push({ id: row.id, prepared, bytes: row.item.length, ...authorPlace(relay) });
      }
      if (page.length < STORED_PAGE) return rows;
    }
  }

  /** Sends one queued record as `stored`, once per session; @returns whether it went. */
  #sendStored(member: Member, row: StoredRow): boolean {
    if (member.session.closing || member.storedIds?.has(row.id)) return false;
    const hop = member.session.relay(row.prepared, "stored");
    (member.storedSent ??= new Map()).set(hop, row.id);
    (member.storedIds ??= new Set()).add(row.id);
    return true;
  }

  /**
   * The client holds every stored record up to its s2c seqno `upto`: they leave the queue,
   * except those it could not open (`unread`: not wrapped for this device), which stay for
   * the user's other devices until one opens them or they expire (§6.6).
   */
  async #acknowledged(member: Member, upto: number, unread: Set<number>): Promise<void> {
    const ids: number[] = [];
    for (const [seqno, id] of member.storedSent ?? []) {
      if (seqno > upto) continue;
      if (!unread.has(seqno)) ids.push(id);
      member.storedSent!.delete(seqno);
    }
    if (ids.length === 0 || !this.#offline) return;
    try {
      await this.#offline.queue.remove(member.username, ids);
      this.log("STORED_ACKED", {
        user: member.username,
        session: member.session.sessionId,
        detail: `${ids.length} records delivered and deleted from the offline queue`,
      });
    } catch (error) {
      // Still queued: sent again at the next login, where the client's marks make it a
      // duplicate that is recorded but not shown (§6.6).
      this.log(codeOf(error), {
        user: member.username,
        session: member.session.sessionId,
        detail: `offline queue: acknowledged records not deleted: ${(error as Error).message}`,
      });
    }
  }

  /**
   * The end-to-end key directory (PROTOCOL §12.6): a device publishes its own bundle (signed
   * by the certificate its user logged in with) and one-time prekeys; anyone fetches anyone's
   * devices. The answer is a `keys` body; a store failure answers with no devices and is logged.
   */
  async #keys(from: Member, body: Extract<Body, { kind: "keys_publish" | "keys_fetch" }>) {
    const me = from.key;
    const directory = this.#keyDirectory;
    const answer = (fields: Omit<Extract<Body, { kind: "keys" }>, "kind">) =>
      this.#notify(from, { kind: "keys", ...fields });
    const user = body.kind === "keys_fetch" ? keyOf(body.user) : me;
    if (!directory) return answer({ user });
    try {
      if (body.kind === "keys_publish") {
        // The session checked that the bundle is its user's own (assertOwnPublish, §6.3 step 6).
        const { left, evicted } = await directory.publish(
          me,
          body.device,
          from.session.established.peer.der,
          body.bundle && JSON.stringify(body.bundle),
          body.opks.map((o) => ({ id: o.id, pub: fromBase64(o.pub) })),
          body.lobby === true,
          this.#revoked,
        );
        this.log("KEYS_PUBLISHED", {
          user: from.username,
          detail: `device ${body.device}: ${left} one-time prekeys` +
            (evicted.length ? `; dropped the oldest device(s) ${evicted.join(", ")}` : ""),
        });
        answer({ user: me, device: body.device, opks_left: left });
        if (body.bundle && body.lobby && !from.e2e) {
          // From now on this session hears of membership changes; first, who is there.
          from.e2e = true;
          const held: Extract<Body, { kind: "members" }>[] = from.membersHeld = [];
          const online = onlineBodies(this.#lobbyMembership());
          try {
            // The other end-to-end members hear of the newcomer only now that its device is
            // stored, so the refetch this makes them do finds it: it retires their sender
            // chains (PROTOCOL §12.5). Told before the newcomer's own list, which waits for room
            // behind its offline delivery: meanwhile their lines must already take it in.
            await this.#route(
              { body: { kind: "members", event: "joined", users: [from.username] } },
              undefined,
              from,
            );
            await this.#sendParts(from, online);
          } finally {
            from.membersHeld = undefined;
          }
          for (const change of held) this.#notify(from, change);
        }
        return;
      }
      // A revoked certificate's devices are never handed out (§12.6), whatever CRL the asker has.
      const stored = await directory.fetch(user, new Set(body.known ?? []), this.#revoked);
      const devices = stored.map(({ device, lobby, keys }) => {
        const caps = lobby ? { lobby: true as const } : {};
        if (!keys) return { device, ...caps };
        const bundle = BundleJsonSchema.safeParse(JSON.parse(keys.bundle));
        if (!bundle.success) throw new SecureChatError("INTERNAL", "a stored bundle is malformed");
        return {
          device,
          cert: toBase64(keys.cert),
          bundle: bundle.data,
          ...(keys.opk ? { opk: { id: keys.opk.id, pub: toBase64(keys.opk.pub) } } : {}),
          ...caps,
        };
      });
      // In parts when one record cannot hold them all: large certificates (§12.6).
      await this.#sendParts(from, keysBodies(user, devices));
      for (const { device, keys } of stored) {
        if (keys?.opk && keys.left < PREKEYS_LOW) await this.#prekeysLow(user, device, keys.left);
      }
      return;
    } catch (error) {
      // The directory's or the cluster's failure, not the peer's (a publish no honest client
      // makes failed the session's checks before this, assertOwnPublish): answered empty.
      this.log(codeOf(error), { user: from.username, detail: `keys: ${(error as Error).message}` });
      return answer({ user });
    }
  }

  /**
   * A device's one-time prekeys are running out (first contacts took them): its user is told,
   * on whichever node they are, with the count the device answers by publishing more
   * (PROTOCOL §12.6). Offline, the device tops up at its next login instead.
   */
  async #prekeysLow(user: string, device: string, left: number): Promise<void> {
    this.log("PREKEYS_LOW", { user, detail: `device ${device}: ${left} one-time prekeys left` });
    if (!this.#isOnline(user)) return;
    await this.#route({ body: { kind: "keys", user, device, opks_left: left } }, user);
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

  /**
   * Closes every session cleanly (receipts exchanged), first telling each member why; `code`
   * is the `close`'s own reason when it is the server's certificate (PROTOCOL §5.2).
   */
  async closeAll(why: string, code?: CloseCode): Promise<void> {
    this.#presence.flush();
    this.#presence.stop();
    await Promise.all([...this.#members.values()].map(async (m) => {
      this.#notify(m, { kind: "notice", text: why });
      await m.session.close(code).catch(() => {});
    }));
  }

  /**
   * This node's members a record from `from` (a user name) to `to` (one user, or all) reaches.
   * `receive` walks the members itself by the same rule for a single node's relays, without the
   * list: keep the two in step.
   */
  #localRecipients(from: string | undefined, to: string | undefined): Member[] {
    if (to !== undefined) {
      const target = this.#members.get(keyOf(to));
      return target ? [target] : [];
    }
    const author = from === undefined ? undefined : keyOf(from);
    const recipients: Member[] = [];
    // Keyed by canonical name: the author is the one whose key it is.
    for (const [key, m] of this.#members) if (key !== author) recipients.push(m);
    return recipients;
  }

  /**
   * Delivers locally, or in a cluster publishes to the stream (every node delivers from it),
   * to `to` or every member but the sender (a member, or only a name: a presence notice's).
   */
  async #route(
    record: ClusterRecord,
    to: string | undefined,
    sender?: Member | string,
    { id = crypto.randomUUID() as string, seqno }: { id?: string; seqno?: number } = {},
  ): Promise<void> {
    const from = typeof sender === "string" ? sender : sender?.username;
    if (!this.#cluster) {
      return this.#deliverRecord(this.#localRecipients(from, to), record);
    }
    const published = await this.#cluster.publishRecord(
      { from, to, record: encodeClusterRecord(record) },
      id,
    );
    if (published.outcome === "stored") return;
    const what = seqno === undefined ? "a record" : `message ${seqno}`;
    this.log("CLUSTER_UNAVAILABLE", {
      user: from,
      detail: published.outcome === "not_stored"
        ? `${what} not delivered: ${published.reason}`
        : `${what} may or may not have been delivered: ${published.reason}`,
    });
    if (typeof sender !== "object" || seqno === undefined) return;
    // The author's message: refused only when no one can ever get it (PROTOCOL §6.5). Whether
    // it was delivered is not known: no answer could be true, so the session ends instead,
    // with an `error` that tells the author why (a drop would say only that the link broke).
    if (published.outcome === "not_stored") this.#refuse(sender, seqno, "CLUSTER_UNAVAILABLE");
    else if (!sender.session.closing) {
      void sender.session.terminate(
        new SecureChatError(
          "CLUSTER_UNAVAILABLE",
          `the chat cluster did not confirm whether message ${seqno} was delivered; ` +
            "it may have reached its recipients",
        ),
      );
    }
  }

  /** One record to some members: a relay is serialised once for all of them. */
  #deliverRecord(members: Member[], record: ClusterRecord): void {
    if ("body" in record) {
      if (record.body.kind === "members") return this.#membersChanged(members, record.body);
      const { at } = record;
      for (const m of members) {
        if (at === undefined || m.since <= at) this.#notify(m, record.body);
      }
      return;
    }
    if ("stored" in record) {
      for (const m of members) void this.#deliverStored(m);
      return;
    }
    if (members.length === 0) return;
    const prepared = preparedRelayOf(record.relay);
    for (const m of members) this.#relay(m, prepared);
  }

  /**
   * A lobby membership change (PROTOCOL §12.5): told to end-to-end members only, each of whom
   * may now send one new sender key per member beyond its rate.
   */
  #membersChanged(members: Member[], body: Extract<Body, { kind: "members" }>): void {
    const allowance = Math.min(this.#lobbyMembership().length, MAX_REKEY_ALLOWANCE);
    for (const m of members) {
      if (!m.e2e) continue;
      m.rekeyAllowance = allowance;
      if (m.membersHeld) m.membersHeld.push(body);
      else this.#notify(m, body);
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
    const now: Member[] = [];
    let bytes: number | undefined;
    for (const member of this.#localRecipients(envelope.from, envelope.to)) {
      if (!member.held) now.push(member);
      else if (!member.session.closing) {
        member.held.push({ record, bytes: bytes ??= heldRecordBytes(record) });
        member.heldBytes += bytes;
        this.#checkHeld(member, "replay");
      }
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

  /**
   * Replays the stream range to the member, with the member's offline queue merged in: a
   * record queued while the member was away (its author's node took the member for offline
   * after the lost node went silent) goes right before the first replayed record its author
   * sent after it. Each author's records then arrive in the order the author sent them,
   * which the member's client demands of one session (§6.6 step 6'): the queue sent first, a
   * replayed line older than a queued record of its author ended the session with REPLAY.
   * Both are paced as the offline delivery is (#roomFor): a replay may carry up to
   * MAX_REPLAY records and the whole queue, far more than a session's send queue holds (R8-10).
   */
  async #replay(member: Member, after: number, upTo: number): Promise<void> {
    let count = 0;
    let queued: StoredRow[] = [];
    let storedCount = 0;
    const sendStored = async (row: StoredRow) => {
      await this.#roomFor(member, row.bytes);
      this.#deliver(member, () => {
        if (this.#sendStored(member, row)) storedCount++;
      });
    };
    try {
      if (this.#offline) {
        queued = await this.#storedRows(member).catch((error) => {
          // Left in the queue: the delivery after the replay tries again.
          this.log(codeOf(error), { user: member.username, detail: `offline queue: ${error}` });
          return [];
        });
      }
      for await (const [envelope] of this.#cluster!.replay(after, upTo)) {
        if (member.session.closing) return;
        if (!this.#localRecipients(envelope.from, envelope.to).includes(member)) continue;
        const record = decodeClusterRecord(envelope.record);
        // Join and leave notices of the past would only mislead; messages are what was missed.
        if ("body" in record && (record.body.kind === "notice" || record.body.kind === "members")) {
          continue;
        }
        // The queue's records are merged in by their authors' order instead.
        if ("stored" in record) continue;
        if ("relay" in record) {
          const { sid, seqno } = authorPlace(record.relay);
          const earlier = queued.filter((row) => row.sid === sid && row.seqno < seqno);
          queued = queued.filter((row) => !earlier.includes(row));
          for (const row of earlier) await sendStored(row);
          const prepared = preparedRelayOf(record.relay);
          await this.#roomFor(member, relaySharedBytes(prepared));
          this.#relay(member, prepared);
        } else {
          this.#deliverRecord([member], record);
        }
        count++;
      }
      for (const row of queued.splice(0)) await sendStored(row);
    } catch (error) {
      // The rows not sent are left to the delivery below, which sends what this session has not.
      this.log(codeOf(error), { user: member.username, detail: `replay: ${error}` });
    } finally {
      // Anything queued meanwhile (or not read above) goes before what came live since.
      void this.#deliverStored(member);
      await this.#sendHeld(member);
      this.#holdsNothing(member);
      this.log("REPLAYED", {
        user: member.username,
        session: member.session.sessionId,
        detail: `${count} records after stream seq ${after}` +
          (storedCount ? `, ${storedCount} from the offline queue merged in` : ""),
      });
    }
  }

  /**
   * Sends the stream records held back during a replay, paced as the replayed ones were: they
   * came in while the member's link carried the replay, and sent in one turn they could fill
   * the send queue of a member reading all along (SLOW_CONSUMER, review9 R9-2's last case: with
   * an offline queue they join its delivery's `deferred`, which is paced too). Records that come
   * in meanwhile are held as well, behind them.
   */
  async #sendHeld(member: Member): Promise<void> {
    const held = member.held ?? [];
    try {
      for (let i = 0; i < held.length && !member.session.closing; i++) {
        const { record, bytes } = held[i];
        member.heldBytes -= bytes;
        if (!("relay" in record)) {
          this.#deliverRecord([member], record);
          continue;
        }
        const prepared = preparedRelayOf(record.relay);
        // During an offline delivery it joins `deferred`, which #sendDeferred paces.
        if (!member.deferred) await this.#roomFor(member, relaySharedBytes(prepared));
        this.#relay(member, prepared);
      }
    } catch (error) {
      this.log(codeOf(error), { user: member.username, detail: `held records: ${error}` });
    } finally {
      member.held = undefined;
      member.heldBytes = 0;
    }
  }

  /** Once a member holds no record back, this node's cursor may pass what it held. */
  #holdsNothing(member: Member): void {
    if (!member.held && !member.deferred) member.heldFrom = undefined;
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
    await previous.session.close("SESSION_TAKEN_OVER").catch(() => {});
  }

  #notify(member: Member, body: Body): void {
    this.#deliver(
      member,
      () => void member.session.send(body).catch((e) => this.#failed(member, e)),
    );
  }

  #relay(member: Member, prepared: PreparedRelay): void {
    // Held behind the stored records being delivered (§6.6).
    if (member.deferred) return this.#defer(member, prepared);
    // #deliver's steps without its closure: one relay per recipient of every record.
    if (member.session.closing) return;
    try {
      member.session.relay(prepared);
    } catch (error) {
      this.#failed(member, error);
    }
  }

  /**
   * Holds a live relay behind the member's offline delivery (PROTOCOL §6.6, §8.2), up to
   * HELD_QUEUE_FACTOR times the member's send queue with what its replay holds (#checkHeld):
   * past that it is not reading, or reads far slower than the lobby speaks, and it is dropped as
   * a full send queue drops it (SLOW_CONSUMER). Before (review17 R17-4), a member that stopped
   * reading during its delivery made the server keep everything said meanwhile.
   */
  #defer(member: Member, prepared: PreparedRelay): void {
    if (member.session.closing) return;
    member.deferred!.push(prepared);
    member.deferredBytes += this.#heldCost(member, prepared);
    this.#checkHeld(member, "offline delivery");
  }

  /**
   * The one bound on what is held back for a member (PROTOCOL §8.2): the relays of its offline
   * delivery and the stream records of its replay together may keep HELD_QUEUE_FACTOR times its
   * send queue; past that it is dropped as a full send queue drops it (SLOW_CONSUMER), and what
   * it held goes now, not with the member. `during` names what was holding when it passed.
   */
  #checkHeld(member: Member, during: "offline delivery" | "replay"): void {
    const bytes = member.heldBytes + member.deferredBytes;
    const limit = HELD_QUEUE_FACTOR * member.session.established.conn.maxQueuedBytes;
    if (bytes <= limit) return;
    const count = (member.held?.length ?? 0) + (member.deferred?.length ?? 0);
    if (member.held) member.held.length = 0;
    if (member.deferred) member.deferred.length = 0;
    member.heldBytes = 0;
    member.deferredBytes = 0;
    member.deferredGroups = undefined;
    this.#failed(
      member,
      new SecureChatError(
        "SLOW_CONSUMER",
        `peer is not reading: ${count} records, ${bytes} bytes held back during its ${during}`,
      ),
    );
  }

  /**
   * What holding `prepared` for `member` keeps: its relay and, while it is the only relay of its
   * msg held, the msg (a relay made from a user's msg keeps the whole msg: review17 R17-5).
   * `release` is the same as the relay leaves.
   */
  #heldCost(member: Member, prepared: PreparedRelay, release = false): number {
    const bytes = relaySharedBytes(prepared);
    const group = prepared.forms.group;
    if (!group) return bytes;
    const groups = member.deferredGroups ??= new Map();
    const held = groups.get(group) ?? 0;
    if (release && held === 0) return bytes; // not counted: the member was dropped meanwhile
    const now = held + (release ? -1 : 1);
    if (now > 0) groups.set(group, now);
    else groups.delete(group);
    return (release ? now === 0 : held === 0) ? bytes + group.retainedBytes : bytes;
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
