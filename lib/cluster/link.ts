/**
 * One node's link to the rest of the cluster over NATS (docs/DEPLOY.md): the JetStream stream
 * that carries every record to deliver, each node's presence heartbeat, and the events that
 * must hold on every node (a login that takes over a session, failed logins). No protocol of
 * our own beyond the subjects and schemas in messages.ts.
 */
import {
  connect,
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  nanos,
  type NatsConnection,
  RetentionPolicy,
  StorageType,
  type Subscription,
} from "nats";
import { codeOf, SecureChatError } from "../errors.ts";
import type { TicketStores } from "../resumption/ticket.ts";
import { clusterTicketStores } from "./ticket_stores.ts";
import { type CrlOffer, CrlShare } from "./crl_share.ts";
import type { Logger } from "../log.ts";
import {
  CLUSTER_VERSION,
  encodeClusterMessage,
  type LoginEvent,
  LoginEventSchema,
  parseClusterMessage,
  type Presence,
  PresenceSchema,
  RECORD_STREAM,
  type RecordEnvelope,
  RecordEnvelopeSchema,
  SUBJECTS,
} from "./messages.ts";

export interface ClusterOptions {
  /** nats:// URLs of one NATS cluster; the client fails over between them. */
  servers: string[];
  node: string;
  log: Logger;
  /** How often each node sends its presence; a node silent for 3 beats is gone. */
  heartbeatMs?: number;
  /** How long to ask whether an unanswered publish was stored (OUTCOME_WAIT_MS). */
  outcomeWaitMs?: number;
  /** How long a silent node's last presence is kept (DEPARTED_KEEP_MS). */
  departedKeepMs?: number;
}

export const DEFAULT_HEARTBEAT_MS = 500;
/**
 * How long records stay in the stream: what a late replay can reach. They carry message keys
 * (docs/DEPLOY.md §4.7), so not longer than a replay needs.
 */
export const RECORD_MAX_AGE_MS = 60 * 60 * 1000;
/** JetStream drops a re-published record with the same id within this window. */
export const DUPLICATE_WINDOW_MS = 2 * 60 * 1000;
/** At most this many records are replayed to one user taking over from a lost node. */
export const MAX_REPLAY = 1000;
/** A silent node's last presence is kept this long, to replay to its users. */
export const DEPARTED_KEEP_MS = 10 * 60 * 1000;
const PUBLISH_TIMEOUT_MS = 2000;
/**
 * How long a node keeps asking whether a publish without an answer was stored: well within
 * DUPLICATE_WINDOW_MS, past which the stream would no longer recognise the first copy's id.
 */
export const OUTCOME_WAIT_MS = 30_000;
const OUTCOME_RETRY_MS = 250;

/** What became of a published record (see ClusterLink.publishRecord). */
export type PublishOutcome =
  | { outcome: "stored"; seq: number }
  | { outcome: "not_stored"; reason: string }
  | { outcome: "unknown"; reason: string };
/**
 * A join or leave sends the membership at most this often (the heartbeat sends it anyway): a
 * snapshot lists every user of the node, so one per join would make N joins cost N².
 */
export const PRESENCE_MIN_GAP_MS = 100;

export interface LocalUser {
  name: string;
  session: string;
  /** Login time, ms: the newer of two sessions of one user wins a takeover. */
  since: number;
}

export interface ClusterHandlers {
  /** A record from the stream, in stream order; a returned promise holds the next one back. */
  record(envelope: RecordEnvelope, seq: number): void | Promise<void>;
  /** A user logged in on another node. */
  login(event: LoginEvent): void;
  /** This node's members, for the presence heartbeat. */
  localUsers(): LocalUser[];
  /**
   * While some session holds stream records back (behind its offline queue's delivery, or a
   * replay): the stream sequence up to which every such session had been handed everything.
   * The cursor a heartbeat reports never passes it (see #beat); undefined when none holds any.
   */
  heldFrom(): number | undefined;
  /**
   * The users a silent node last listed, forgotten with its presence (DEPARTED_KEEP_MS) and
   * never logged in again meanwhile: no replay will reach them now, so they left the lobby.
   */
  forgotten(users: string[]): void;
  /** The CRL the nodes share, now and at every change (docs/DEPLOY.md §4.6). */
  crl: CrlOffer;
}

/** The user names the presences list, in their order. */
export function listedNames(presences: Iterable<Presence>): string[] {
  const names: string[] = [];
  // One push per name, not push(...list): a spread passes every name as an argument, and past
  // the engine's limit (about 125,000, fewer on a deep stack) the call throws RangeError.
  for (const presence of presences) for (const user of presence.users) names.push(user.name);
  return names;
}

/** Where a user was last seen on another node, and how far that node had delivered. */
export interface LastSeen {
  node: string;
  session: string;
  cursor: number;
}

interface Peer {
  presence: Presence;
  /** Our clock when we heard it: liveness never trusts another node's clock. */
  heardAt: number;
}

export class ClusterLink {
  readonly node: string;
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #log: Logger;
  readonly #heartbeatMs: number;
  readonly #outcomeWaitMs: number;
  readonly #departedKeepMs: number;
  readonly #peers = new Map<string, Peer>();
  readonly #subscriptions: Subscription[] = [];
  #handlers?: ClusterHandlers;
  #crl?: CrlShare;
  #messages?: ConsumerMessages;
  #consuming?: Promise<void>;
  #timer?: ReturnType<typeof setInterval>;
  #presenceTimer?: ReturnType<typeof setTimeout>;
  #presenceSentAt = -Infinity;
  /**
   * The last MAX_REPLAY records this node consumed, by stream sequence: what a replay reads
   * first. In a storm every returning user replays about the same range, and fetching it from
   * JetStream one request per record per user made N users cost N × range requests.
   */
  readonly #recent = new Map<number, RecordEnvelope>();
  /** The last stream sequence handed to this node's sessions. */
  #processed: number;
  /** #processed as of the previous heartbeat: what a heartbeat reports (see #beat). */
  #lagged: number;
  #connected = true;
  #closed = false;

  private constructor(
    nc: NatsConnection,
    jsm: JetStreamManager,
    startSeq: number,
    opts: ClusterOptions,
  ) {
    this.node = opts.node;
    this.#nc = nc;
    this.#js = nc.jetstream();
    this.#jsm = jsm;
    this.#log = opts.log;
    this.#heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.#outcomeWaitMs = opts.outcomeWaitMs ?? OUTCOME_WAIT_MS;
    this.#departedKeepMs = opts.departedKeepMs ?? DEPARTED_KEEP_MS;
    this.#processed = this.#lagged = startSeq;
    // From the connection on: publishRecord() needs to know whether anything can go out.
    void this.#watchStatus();
  }

  /**
   * Connects to NATS and makes sure the record stream exists.
   * @throws CLUSTER_UNAVAILABLE NATS (or its JetStream) cannot be reached
   */
  static async connect(opts: ClusterOptions): Promise<ClusterLink> {
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: opts.servers,
        name: `securechat-${opts.node}`,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
      });
    } catch (cause) {
      throw new SecureChatError(
        "CLUSTER_UNAVAILABLE",
        `cannot reach NATS at ${opts.servers.map(redactUrl).join(", ")}`,
        { cause, hint: "start nats-server -js, or check --cluster" },
      );
    }
    try {
      const jsm = await nc.jetstreamManager();
      const lastSeq = await ensureStream(jsm);
      return new ClusterLink(nc, jsm, lastSeq, opts);
    } catch (cause) {
      await nc.close();
      throw new SecureChatError("CLUSTER_UNAVAILABLE", "NATS has no usable JetStream", {
        cause,
        hint: "run nats-server with -js (JetStream enabled)",
      });
    }
  }

  /**
   * Starts following the shared CRL (resolving once the current one has been offered),
   * consuming records from where the stream stood at connect, and the heartbeat.
   * @throws CLUSTER_UNAVAILABLE
   */
  async start(handlers: ClusterHandlers): Promise<void> {
    this.#handlers = handlers;
    this.#crl = await CrlShare.open(this.#js, this.node, this.#log);
    await this.#crl.follow(handlers.crl);
    for (
      const [subject, handle] of [
        [SUBJECTS.presence, (data: Uint8Array) => this.#onPresence(data)],
        [SUBJECTS.login, (data: Uint8Array) => this.#onLogin(data)],
      ] as const
    ) {
      this.#subscriptions.push(this.#nc.subscribe(subject, {
        callback: (error, msg) => {
          if (!error) this.#guard(subject, () => handle(msg.data));
        },
      }));
    }
    this.#messages = await this.#openConsumer();
    this.#consuming = this.#consume(this.#messages);
    this.#timer = setInterval(() => this.#beat(), this.#heartbeatMs);
    this.announcePresence();
  }

  /** Connected to NATS right now: what the health check reports. */
  get healthy(): boolean {
    return this.#connected && !this.#closed;
  }

  /** The last stream sequence handed to this node's sessions. */
  get processed(): number {
    return this.#processed;
  }

  /**
   * Stores a record in the stream and says whether it is there (PROTOCOL §6.5, DEPLOY.md §4.1):
   * `stored` once JetStream acknowledged it (the point from which no node crash loses it);
   * `not_stored` only when it is certain no node will ever deliver it (this node was not
   * connected, so nothing was sent, or JetStream answered that it did not take it); `unknown`
   * when no answer came within OUTCOME_WAIT_MS (ClusterOptions.outcomeWaitMs). A publish without an acknowledgement may still
   * have landed (JetStream was slow, or the answer was lost): the node then asks with
   * #storedBefore() rather than guess, since a refusal for a record others received is a lie.
   * It logs `CLUSTER_SLOW` when it starts asking (`outcome=asking`) and when the answer is
   * `stored` (`outcome=stored`); the other outcomes are its caller's to log.
   */
  async publishRecord(
    envelope: Omit<RecordEnvelope, "v" | "node">,
    id: string,
  ): Promise<PublishOutcome> {
    if (!this.#connected || this.#closed) {
      return { outcome: "not_stored", reason: "not connected to NATS: nothing was published" };
    }
    const subject = envelope.to === undefined ? SUBJECTS.lobby : SUBJECTS.user(envelope.to);
    const data = encodeClusterMessage({ v: CLUSTER_VERSION, node: this.node, ...envelope });
    const msgID = `${this.node}:${id}`;
    const since = Date.now();
    try {
      const ack = await this.#js.publish(subject, data, { msgID, timeout: PUBLISH_TIMEOUT_MS });
      return { outcome: "stored", seq: ack.seq };
    } catch (error) {
      if (refusedByNats(error)) {
        return { outcome: "not_stored", reason: `the record stream refused it: ${error}` };
      }
      // Said as it happens (the outcome may take OUTCOME_WAIT_MS): NATS is slower than the
      // publish waits, which the operator should see even when the record turns out stored.
      this.#log("CLUSTER_SLOW", {
        outcome: "asking",
        detail: `record ${msgID}: no acknowledgement in ${PUBLISH_TIMEOUT_MS} ms (${error}); ` +
          "asking the stream whether it was stored",
      });
      const outcome = await this.#storedBefore(subject, data, msgID, since, error);
      // What else it can be is logged by the caller, who knows what it refuses or ends.
      if (outcome.outcome === "stored") {
        this.#log("CLUSTER_SLOW", {
          outcome: "stored",
          detail: `record ${msgID}: stored (stream seq ${outcome.seq}), known ` +
            `${Date.now() - since} ms after its publish`,
        });
      }
      return outcome;
    }
  }

  /**
   * Asks JetStream whether a record whose publish got no answer was stored, without giving it
   * a second chance to land: the same message id (a duplicate within DUPLICATE_WINDOW_MS is
   * answered with the first copy's sequence) and an expected last sequence no stream reaches.
   * JetStream checks the id first, so the question is answered "duplicate" (it was stored) or
   * "wrong last sequence" (it was not; and since one connection's publishes are taken in
   * order, the first copy, sent before this question, can no longer land either).
   */
  async #storedBefore(
    subject: string,
    data: Uint8Array,
    msgID: string,
    since: number,
    first: unknown,
  ): Promise<PublishOutcome> {
    let last = first;
    while (Date.now() - since < this.#outcomeWaitMs && !this.#closed) {
      try {
        const ack = await this.#js.publish(subject, data, {
          msgID,
          timeout: PUBLISH_TIMEOUT_MS,
          expect: { lastSequence: Number.MAX_SAFE_INTEGER },
        });
        return { outcome: "stored", seq: ack.seq };
      } catch (error) {
        if (wrongLastSequence(error)) {
          return { outcome: "not_stored", reason: `the record stream did not take it (${first})` };
        }
        last = error;
      }
      await new Promise((resolve) => setTimeout(resolve, OUTCOME_RETRY_MS));
    }
    return {
      outcome: "unknown",
      reason: `no answer from the record stream in ${this.#outcomeWaitMs} ms (${last})`,
    };
  }

  /** The resumption ticket stores every node shares (docs/DEPLOY.md §8). */
  ticketStores(): Promise<TicketStores> {
    return clusterTicketStores(this.#nc);
  }

  /**
   * Puts a CRL this node has adopted where every node follows it, replacing the latest one
   * this node has seen (docs/DEPLOY.md §4.6).
   * @returns false when another was put meanwhile: it is offered next, and decides
   * @throws CLUSTER_UNAVAILABLE
   */
  async shareCrl(der: Uint8Array): Promise<boolean> {
    if (!this.#crl) throw new SecureChatError("INTERNAL", "shareCrl() before start()");
    return await this.#crl.put(der);
  }

  /** Tells every node that `user` logged in here, so older sessions elsewhere end. */
  announceLogin(user: string, session: string, at: number): void {
    this.#forget(user, this.node);
    this.#publish(SUBJECTS.login, { user, session, at });
  }

  /**
   * Sends this node's membership soon rather than at the next beat (a join or a leave): now,
   * or PRESENCE_MIN_GAP_MS after the last one.
   */
  announcePresence(): void {
    if (!this.#handlers || this.#presenceTimer !== undefined) return;
    const wait = this.#presenceSentAt + PRESENCE_MIN_GAP_MS - Date.now();
    if (wait <= 0) return this.#sendPresence();
    this.#presenceTimer = setTimeout(() => this.#sendPresence(), wait);
  }

  #sendPresence(): void {
    clearTimeout(this.#presenceTimer);
    this.#presenceTimer = undefined;
    if (!this.#handlers) return;
    this.#presenceSentAt = Date.now();
    this.#publish(SUBJECTS.presence, {
      at: Date.now(),
      cursor: this.#deliveredUpTo(this.#lagged),
      users: this.#handlers.localUsers(),
    });
  }

  /** Users on the other live nodes. */
  remoteUsers(now = Date.now()): string[] {
    return listedNames(this.#presences((peer) => this.#alive(peer, now)));
  }

  /**
   * Users a node that fell silent listed last and who have not logged in since (a login
   * forgets them there, see #forget): failing over, most likely, to a node that will replay
   * what they missed (DEPLOY.md §4.4). Kept as long as the node's last presence, for replays.
   */
  departedUsers(now = Date.now()): string[] {
    return listedNames(this.#presences((peer) => !this.#alive(peer, now)));
  }

  /** The last presence of each peer `which` picks. */
  *#presences(which: (peer: Peer) => boolean): Iterable<Presence> {
    for (const peer of this.#peers.values()) if (which(peer)) yield peer.presence;
  }

  /**
   * Where `user` was last listed by another node (alive or gone), other than in `session`: a
   * session there may have lost records the stream still holds.
   */
  lastSeen(user: string, session: string): LastSeen | undefined {
    const key = user.toLowerCase();
    for (const peer of this.#peers.values()) {
      const entry = peer.presence.users.find((u) => u.name.toLowerCase() === key);
      if (entry && entry.session !== session) {
        return { node: peer.presence.node, session: entry.session, cursor: peer.presence.cursor };
      }
    }
    return undefined;
  }

  /**
   * The records with stream sequence in (after, upTo], oldest first; at most MAX_REPLAY of the
   * newest. Records the stream no longer holds are skipped.
   */
  async *replay(after: number, upTo: number): AsyncGenerator<[RecordEnvelope, number]> {
    const first = Math.max(after + 1, upTo - MAX_REPLAY + 1);
    if (first > after + 1) {
      this.#log("REPLAY_TRUNCATED", { detail: `records ${after + 1}..${first - 1} not replayed` });
    }
    for (let seq = first; seq <= upTo; seq++) {
      const recent = this.#recent.get(seq);
      if (recent) {
        yield [recent, seq];
        continue;
      }
      let data: Uint8Array;
      try {
        data = (await this.#jsm.streams.getMessage(RECORD_STREAM, { seq })).data;
      } catch {
        continue; // aged out or never stored under this number
      }
      try {
        yield [parseClusterMessage(data, RecordEnvelopeSchema), seq];
      } catch (error) {
        this.#log(codeOf(error), { detail: `stream record ${seq}: ${(error as Error).message}` });
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // The membership as it is now (none, after a clean stop): a last presence listing users
    // whose sessions were closed would count them as members failing over (departedUsers).
    this.#sendPresence();
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#presenceTimer);
    this.#messages?.stop();
    await this.#consuming;
    await this.#crl?.stop();
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
    await this.#nc.drain().catch(() => {});
  }

  /**
   * The ordered consumer from where the stream stood at connect. JetStream API calls time out
   * on a loaded server, so a few attempts are made before giving up.
   * @throws CLUSTER_UNAVAILABLE
   */
  async #openConsumer(attempts = 3): Promise<ConsumerMessages> {
    for (let attempt = 1;; attempt++) {
      try {
        const consumer = await this.#js.consumers.get(RECORD_STREAM, {
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: this.#processed + 1,
        });
        return await consumer.consume();
      } catch (cause) {
        if (attempt >= attempts) {
          throw new SecureChatError("CLUSTER_UNAVAILABLE", "cannot read the record stream", {
            cause,
          });
        }
        this.#log("CLUSTER_UNAVAILABLE", { detail: `record stream consumer: ${cause}; retrying` });
      }
    }
  }

  async #consume(messages: ConsumerMessages): Promise<void> {
    for await (const m of messages) {
      let envelope: RecordEnvelope;
      try {
        envelope = parseClusterMessage(m.data, RecordEnvelopeSchema);
      } catch (error) {
        this.#log(codeOf(error), { detail: `stream record ${m.seq}: ${(error as Error).message}` });
        this.#processed = m.seq;
        continue;
      }
      this.#recent.set(m.seq, envelope);
      // Insertion order is stream order: the first key is the oldest.
      if (this.#recent.size > MAX_REPLAY) this.#recent.delete(this.#recent.keys().next().value!);
      const pending = this.#handlers!.record(envelope, m.seq);
      this.#processed = m.seq;
      if (pending) await pending;
    }
  }

  async #watchStatus(): Promise<void> {
    for await (const status of this.#nc.status()) {
      if (status.type === "disconnect") {
        this.#connected = false;
        this.#log("CLUSTER_UNAVAILABLE", {
          detail: `lost NATS at ${redactUrl(String(status.data))}`,
        });
      }
      if (status.type === "reconnect") {
        this.#connected = true;
        this.#log("CLUSTER_RECONNECTED", { detail: redactUrl(String(status.data)) });
      }
    }
  }

  /**
   * A heartbeat reports the cursor of the previous beat, not the current one: records handed
   * to a session just before a crash may still sit in its send queue, so a node replaying to
   * that session's user starts a beat earlier (the client drops what it already has).
   */
  #beat(): void {
    this.#sendPresence();
    this.#lagged = this.#deliveredUpTo(this.#processed);
    const now = Date.now();
    for (const [node, peer] of this.#peers) {
      if (now - peer.heardAt <= this.#departedKeepMs) continue;
      this.#peers.delete(node);
      const users = peer.presence.users.map((u) => u.name);
      if (users.length > 0) this.#handlers?.forgotten(users);
    }
  }

  /**
   * `seq`, or less while a session holds records back: a record held in this node's memory
   * when it is killed was never sent, and the node replaying to that session's user must
   * start before it (the session's next node replays from the cursor this node reported).
   */
  #deliveredUpTo(seq: number): number {
    return Math.min(seq, this.#handlers?.heldFrom() ?? Infinity);
  }

  #alive(peer: Peer, now: number): boolean {
    return now - peer.heardAt <= 3 * this.#heartbeatMs;
  }

  #onPresence(data: Uint8Array): void {
    const presence = parseClusterMessage(data, PresenceSchema);
    if (presence.node === this.node) return;
    this.#peers.set(presence.node, { presence, heardAt: Date.now() });
  }

  #onLogin(data: Uint8Array): void {
    const event = parseClusterMessage(data, LoginEventSchema);
    if (event.node === this.node) return;
    this.#forget(event.user, event.node);
    // The login is news before that node's next presence snapshot (throttled, and late under
    // load): list the user there now, so a private line right after the login is relayed, not
    // queued, and `/who` names them.
    const users = this.#peers.get(event.node)?.presence.users;
    const key = event.user.toLowerCase();
    if (users && !users.some((u) => u.name.toLowerCase() === key)) {
      users.push({ name: event.user, session: event.session, since: event.at });
    }
    this.#handlers?.login(event);
  }

  /**
   * Drops `user` from what the other nodes last said, but `node`'s: the user has a new
   * session there, so an old entry (a lost node's above all) must not cause a second replay.
   * A node that still has the user lists it again at its next beat.
   */
  #forget(user: string, node: string): void {
    const key = user.toLowerCase();
    for (const peer of this.#peers.values()) {
      if (peer.presence.node === node) continue;
      peer.presence.users = peer.presence.users.filter((u) => u.name.toLowerCase() !== key);
    }
  }

  #publish(subject: string, fields: Record<string, unknown>): void {
    if (this.#closed) return;
    try {
      this.#nc.publish(
        subject,
        encodeClusterMessage({ v: CLUSTER_VERSION, node: this.node, ...fields }),
      );
    } catch (error) {
      this.#log("CLUSTER_UNAVAILABLE", { detail: `${subject}: ${(error as Error).message}` });
    }
  }

  /** A bad message from NATS is logged with its code and dropped, never thrown into nats.js. */
  #guard(subject: string, handle: () => void): void {
    try {
      handle();
    } catch (error) {
      this.#log(codeOf(error), { detail: `${subject}: ${(error as Error).message}` });
    }
  }
}

/** Creates the record stream if missing; returns its last sequence (0 when empty). */
async function ensureStream(jsm: JetStreamManager): Promise<number> {
  try {
    return (await jsm.streams.info(RECORD_STREAM)).state.last_seq;
  } catch {
    // not there yet: create it (a node racing us to it gets the same configuration)
  }
  const info = await jsm.streams.add({
    name: RECORD_STREAM,
    subjects: [SUBJECTS.recordWildcard],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(RECORD_MAX_AGE_MS),
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
  });
  return info.state.last_seq;
}

/**
 * NATS answered the publish itself, so it was not stored: no stream listens on the subject
 * (503, "no responders") or JetStream refused it with an API error.
 */
function refusedByNats(error: unknown): boolean {
  const e = error as { code?: unknown; api_error?: unknown };
  return e.code === "503" || e.api_error !== undefined;
}

/** JetStream's answer to a question whose expected last sequence did not hold (err_code 10071). */
function wrongLastSequence(error: unknown): boolean {
  return (error as { api_error?: { err_code?: unknown } }).api_error?.err_code === 10071;
}

/** A NATS URL for logs: user and password removed. */
export function redactUrl(url: string | undefined): string {
  if (!url) return "?";
  try {
    const parsed = new URL(url.includes("://") ? url : `nats://${url}`);
    parsed.username = "";
    parsed.password = "";
    return parsed.toString().replace(/\/$/, "");
  } catch {
    return "(unparsable URL)";
  }
}
