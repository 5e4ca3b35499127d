/**
 * One device's end-to-end layer (PROTOCOL §12.6, §12.7): its own keys and published bundle,
 * Double Ratchet sessions with each device of each contact, the key directory conversation
 * with the server, and the state it saves through an injected {@link E2eStorage} (an
 * encrypted file for the CLI, lib/store/e2e_state_file.ts; the page's own store in a
 * browser). The chat session calls `wrap` for each record it sends and `unwrap` for each
 * end-to-end relay it receives; the command asks `prepare` before a private line (it fetches
 * the contact's device list when it has none or an old one, and starts a session with each
 * new device from its prekeys).
 */
import { z } from "zod";
import { fromBase64, randomBytes, toBase64, toHex } from "../bytes.ts";
import { sha256 } from "#sync-crypto";
import { mlKem768, type MlKemKeyPair } from "../crypto/mlkem.ts";
import type { SigningKey } from "../crypto/signature.ts";
import { type X25519KeyPair, x25519KeyPair } from "../crypto/x25519.ts";
import { codeOf, type ErrorCode, SecureChatError } from "../errors.ts";
import {
  type Body,
  canonicalName,
  type ListedDevice,
  LOBBY,
  MAX_CERT_BYTES,
  type MessageRecord,
  recipientUser,
  statement,
  userRecipient,
} from "../message/record.ts";
import { type TrustStore, type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";
import { fingerprintOf } from "../pki/describe.ts";
import { base64Text } from "../wire/schema.ts";
import {
  deviceOf,
  encodeBundle,
  type KeyBundle,
  parseBundle,
  signBundle,
  verifyBundle,
  verifyIdentityKey,
} from "./bundle.ts";
import {
  DeviceIdSchema,
  type DeviceWrapJson,
  type E2eEnvelope,
  MAX_DEVICES,
  type PrekeyHeaderJson,
  PrekeyHeaderJsonSchema,
} from "./envelope.ts";
import {
  decodePrekeyHeader,
  encodePrekeyHeader,
  initiateFirstContact,
  respondFirstContact,
} from "./pqxdh.ts";
import { Ratchet, RatchetJsonSchema } from "./ratchet.ts";
import { encodeDistribution, SenderChain, SenderKeyReceiver } from "./sender_key.ts";
import { MAX_SKIP } from "./chain.ts";

/** One-time prekeys a device keeps on the server; it tops up when fewer than half are left. */
export const PREKEY_TARGET = 20;
/** Ratchet sessions kept per contact device (simultaneous first contacts, a restored backup). */
const SESSIONS_PER_DEVICE = 4;
/** How long a key directory answer may take. */
const FETCH_TIMEOUT_MS = 10_000;
/** How long the chains of a member who left are kept for their lines still on the way. */
const DEPARTED_CHAINS_KEPT_MS = 5 * 60_000;
/**
 * An author device's chains kept, newest first: its lines under a chain it has since replaced
 * may still come (sent before a membership change, delivered after, or replayed after a node
 * failed).
 */
const CHAINS_KEPT_PER_DEVICE = 4;
/** How often members the current lobby chain left out are looked up again (PROTOCOL §12.5). */
const LEFT_OUT_RECHECK_MS = 2_000;
/** Sender chains one lobby line may start while the membership keeps changing under it. */
const LOBBY_REKEY_ROUNDS = 3;
/** A contact's device list is fetched again before a line when it is older than this. */
export const DEVICE_LIST_MAX_AGE_MS = 60_000;

/**
 * Where a device keeps its end-to-end state (PROTOCOL §12.7). lib/e2e does no I/O itself.
 */
export interface E2eStorage {
  /** The state saved last, or null when there is none yet. */
  load(): Promise<unknown>;
  /** Replaces the saved state; resolves once it is durable. @throws IO_ERROR */
  save(state: unknown): Promise<void>;
  /** A deferred save must not keep a command-line process alive (Deno.unrefTimer). */
  unrefTimer?(timer: ReturnType<typeof setTimeout>): void;
}

/** Storage that lives as long as the process (tests, a page that keeps nothing). */
export class MemoryStorage implements E2eStorage {
  #state: unknown = null;
  load(): Promise<unknown> {
    return Promise.resolve(this.#state === null ? null : structuredClone(this.#state));
  }
  save(state: unknown): Promise<void> {
    this.#state = structuredClone(state);
    return Promise.resolve();
  }
}

export interface E2eIdentity {
  user: string;
  certDer: Uint8Array;
  signingKey: SigningKey;
}

/** What the client needs from its chat session: sending a body to the server. */
export interface KeysChannel {
  send(body: Body, to: string): Promise<number>;
}

/** What `prepare` found out about a contact's devices. */
export interface Preparation {
  /** Devices the next line is wrapped for (at least 1). */
  devices: number;
  /** Devices whose published keys were refused (revoked certificate, bad signature), and why. */
  refused: { device: string; reason: string }[];
}

interface PeerSession {
  ratchet: Ratchet;
  /** The certificate (DER) that signed the contact device's identity key. */
  cert: Uint8Array;
  /** Our PQXDH header, sent with every message until the contact device has answered. */
  pre?: PrekeyHeaderJson;
  /** The contact's PQXDH ephemeral key (hex), when they started it: repeats of it land here. */
  theirEk?: string;
}

type KeysBody = Extract<Body, { kind: "keys" }>;

/**
 * A `keys_fetch` waiting for its answer, and the devices its earlier parts listed. `take` is
 * gone once the fetch gave up (timed out, or refused a part): its answer, or the rest of it,
 * is still its own when it comes, and is dropped (#pending).
 */
interface PendingFetch {
  take?: (answer: KeysBody | SecureChatError) => void;
  listed: ListedDevice[];
  /** Its `keys_fetch`'s seqno, once sent: a refusal of it (§6.5) is its only answer. */
  seqno?: number;
}
type MembersBody = Extract<Body, { kind: "members" }>;
type SenderKeyBody = Extract<Body, { kind: "sender_key" }>;

const key32 = () => base64Text(32, 32);
const uint32 = () => z.number().int().min(0).max(0xffff_ffff);
const SessionJsonSchema = z.object({
  ratchet: RatchetJsonSchema,
  cert: base64Text(1, MAX_CERT_BYTES),
  pre: PrekeyHeaderJsonSchema.optional(),
  their_ek: z.string().optional(),
}).strict();
const StateSchema = z.object({
  version: z.literal(1),
  user: z.string(),
  ik: key32(),
  created: z.number().int().min(0),
  spk: z.object({ id: uint32(), key: key32() }).strict(),
  pq: z.object({ id: uint32(), seed: base64Text(64, 64) }).strict(),
  opks: z.array(z.tuple([uint32(), key32()])),
  next_opk: uint32(),
  /** contact → contact device → sessions, the active one first */
  peers: z.record(z.string(), z.record(DeviceIdSchema, z.array(SessionJsonSchema))),
}).strict();

interface OwnKeys {
  ik: X25519KeyPair;
  created: number;
  spk: { id: number; key: X25519KeyPair };
  pq: { id: number; seed: Uint8Array; pair: MlKemKeyPair };
  opks: Map<number, X25519KeyPair>;
  nextOpk: number;
}

export class E2eClient {
  readonly #me: E2eIdentity;
  readonly #trust: TrustStore;
  readonly #storage: E2eStorage;
  readonly #own: OwnKeys;
  /** Contact (canonical name) → contact device → sessions, the active one first. */
  readonly #peers: Map<string, Map<string, PeerSession[]>>;
  #bundle?: KeyBundle;
  /** When each contact's device list was last fetched (this run only). */
  readonly #listedAt = new Map<string, number>();
  /**
   * Each session's device-list fetches in flight, by contact. Per session: a fetch sent on a
   * session that died is never answered, and a newer session must not wait on it.
   */
  readonly #preparing = new WeakMap<KeysChannel, Map<string, Promise<Preparation>>>();
  /**
   * Contact devices (`name/device`) whose message this device could not open: the next line
   * to them starts a new session from fresh prekeys, in front of the old ones (§12.6).
   */
  readonly #restart = new Set<string>();
  /** The other lobby members, as the server's `members` bodies say (PROTOCOL §12.5). */
  readonly #lobby = new Set<string>();
  /**
   * Members the last session had, not yet in this session's `online` list: those it leaves out
   * left while we were away (no `left` reached us) and are dropped when the list is whole.
   */
  readonly #unconfirmed = new Set<string>();
  /** Members who left, and when: their chains go at a later membership change. */
  readonly #departed = new Map<string, number>();
  /**
   * Our sender chain, as last distributed. Memory only: a restarted client logs in again,
   * which is a membership change.
   */
  #chain?: SenderChain;
  /**
   * The membership (#membership) `#chain` was distributed to. A change makes the next
   * prepareLobby start a new chain; a line already prepared still goes under the old one (it
   * was written for the members of that moment), so a change between prepare and send cannot
   * leave a prepared line without a key.
   */
  #chainMembership = -1;
  /** Members `#chain` was not sent to (no fitting device, or their keys could not be had). */
  #leftOut = new Set<string>();
  #leftOutCheckedAt = 0;
  /** Members told (or to be told) under `#chain` that the server refused their key. */
  #refusalsTold = new Set<string>();
  /** Refusals of `#chain`'s keys not yet told, member → the refusal's code. */
  #refusalsToTell = new Map<string, string>();
  /** Our seqnos of the `sender_key` records that carried `#chain`, and the member of each. */
  #chainSeqnos = new Map<number, string>();
  /**
   * Whether the server queued one of `#chain`'s `sender_key` records (§6.6): that member reads
   * from the chain's position then, and a line more than MAX_SKIP ahead of what they last
   * opened would end their session (§12.5 step 4), so the chain wraps at most MAX_SKIP lines.
   */
  #chainQueued = false;
  /** Counts membership changes: a chain made across one is not kept. */
  #membership = 0;
  /**
   * Resolves with this session's whole `online` list (its chunk without `more`): who was in
   * the lobby when we came. Renewed when a session ends, so a reconnected client waits for
   * its new session's list.
   */
  #membersKnown: Promise<void>;
  #membersArrived!: () => void;
  /** This session's whole `online` list came: from now on only `joined` and `left` may. */
  #listWhole = false;
  /** Counts ended sessions: a chain that went out in one of them is not kept. */
  #sessionsEnded = 0;
  /**
   * Contact devices (`name/device`) that take lobby sender keys, from the last device list
   * (this run only; a device we learnt of otherwise counts as not taking them until listed).
   */
  readonly #lobbyDevices = new Set<string>();
  /** Each lobby author device's chain (`name/device`), as its author distributed it to us. */
  readonly #receivers = new Map<string, SenderKeyReceiver[]>();
  /**
   * Each session's unanswered `keys_fetch`es: contact → its fetches in the order they were
   * sent, each with its answer's taker and the devices of the answer's parts so far (a list
   * that did not fit one record comes in parts, §12.6). The server answers each fetch once, in
   * order, so an answer is the oldest's: one that gave up stays until its answer has come, or
   * that late answer would be taken by the next fetch for the same contact (interop17).
   */
  readonly #pending = new WeakMap<KeysChannel, Map<string, PendingFetch[]>>();
  /** Per session, rejects once it ended ({@link sessionEnded}): nothing waits on it after. */
  readonly #ends = new WeakMap<KeysChannel, { ended: Promise<never>; end: () => void }>();
  #saveTimer?: ReturnType<typeof setTimeout>;
  /** This device's id (PROTOCOL §12.2), derived from its identity key. */
  readonly device: string;
  /** True when there was no saved state: this device starts with no conversations. */
  readonly fresh: boolean;

  private constructor(
    me: E2eIdentity,
    trust: TrustStore,
    storage: E2eStorage,
    own: OwnKeys,
    peers: Map<string, Map<string, PeerSession[]>>,
    fresh: boolean,
  ) {
    this.#me = me;
    this.#trust = trust;
    this.#storage = storage;
    this.#own = own;
    this.#peers = peers;
    this.device = deviceOf(own.ik.publicKey);
    this.fresh = fresh;
    this.#membersKnown = new Promise((resolve) => this.#membersArrived = resolve);
  }

  /**
   * Loads the device's state from `storage`, or makes new keys (a new device) when it holds
   * none.
   * @throws DECRYPT_FAIL (a state that is not this user's), IO_ERROR
   */
  static async open(storage: E2eStorage, me: E2eIdentity, trust: TrustStore): Promise<E2eClient> {
    const value = await storage.load();
    const user = canonicalName(me.user);
    const identity = { ...me, user };
    if (value === null) {
      const seed = randomBytes(64);
      const client = new E2eClient(
        identity,
        trust,
        storage,
        {
          ik: x25519KeyPair(),
          created: Date.now(),
          spk: { id: randomId(), key: x25519KeyPair() },
          pq: { id: randomId(), seed, pair: await mlKem768.generateKeyPair(seed) },
          opks: new Map(),
          nextOpk: 1,
        },
        new Map(),
        true,
      );
      await client.save();
      return client;
    }
    const parsed = StateSchema.safeParse(value);
    if (!parsed.success || parsed.data.user !== user) {
      throw new SecureChatError("DECRYPT_FAIL", `the end-to-end state is not ${user}'s`, {
        hint: "move it away to start new conversations",
      });
    }
    const s = parsed.data;
    const seed = fromBase64(s.pq.seed);
    const peers = new Map<string, Map<string, PeerSession[]>>();
    for (const [name, devices] of Object.entries(s.peers)) {
      const byDevice = new Map<string, PeerSession[]>();
      for (const [device, sessions] of Object.entries(devices)) {
        byDevice.set(
          device,
          sessions.map((p) => ({
            ratchet: Ratchet.fromJSON(p.ratchet),
            cert: fromBase64(p.cert),
            pre: p.pre,
            theirEk: p.their_ek,
          })),
        );
      }
      peers.set(name, byDevice);
    }
    return new E2eClient(
      identity,
      trust,
      storage,
      {
        ik: x25519KeyPair(fromBase64(s.ik)),
        created: s.created,
        spk: { id: s.spk.id, key: x25519KeyPair(fromBase64(s.spk.key)) },
        pq: { id: s.pq.id, seed, pair: await mlKem768.generateKeyPair(seed) },
        opks: new Map(s.opks.map(([id, k]) => [id, x25519KeyPair(fromBase64(k))])),
        nextOpk: s.next_opk,
      },
      peers,
      false,
    );
  }

  /** Writes the state now (durably). @throws IO_ERROR */
  async save(): Promise<void> {
    clearTimeout(this.#saveTimer);
    this.#saveTimer = undefined;
    await this.#storage.save(this.#toJSON());
  }

  /** Saves soon: after a received message (losing it costs a re-derivation, never a reuse). */
  #saveSoon(): void {
    if (this.#saveTimer) return;
    this.#saveTimer = setTimeout(() => void this.save().catch(() => {}), 200);
    this.#storage.unrefTimer?.(this.#saveTimer);
  }

  #toJSON(): z.input<typeof StateSchema> {
    const own = this.#own;
    return {
      version: 1,
      user: this.#me.user,
      ik: toBase64(own.ik.privateKey),
      created: own.created,
      spk: { id: own.spk.id, key: toBase64(own.spk.key.privateKey) },
      pq: { id: own.pq.id, seed: toBase64(own.pq.seed) },
      opks: [...own.opks].map(([id, k]) => [id, toBase64(k.privateKey)]),
      next_opk: own.nextOpk,
      peers: Object.fromEntries(
        [...this.#peers].map(([name, devices]) => [
          name,
          Object.fromEntries(
            [...devices].map(([device, sessions]) => [
              device,
              sessions.map((p) => ({
                ratchet: p.ratchet.toJSON(),
                cert: toBase64(p.cert),
                ...(p.pre ? { pre: p.pre } : {}),
                ...(p.theirEk ? { their_ek: p.theirEk } : {}),
              })),
            ]),
          ),
        ]),
      ),
    };
  }

  /** Our signed bundle (made once per run: the certificate key signs it). */
  async bundle(): Promise<KeyBundle> {
    const own = this.#own;
    this.#bundle ??= await signBundle(this.#me.signingKey, {
      user: this.#me.user,
      created: own.created,
      ik: own.ik.publicKey,
      spkId: own.spk.id,
      spk: own.spk.key.publicKey,
      pqId: own.pq.id,
      pq: own.pq.pair.encapsulationKey,
    });
    return this.#bundle;
  }

  /** Publishes this device's bundle and, on a new state, its first one-time prekeys (login). */
  async publish(channel: KeysChannel): Promise<void> {
    const opks = this.fresh && this.#own.opks.size === 0 ? this.#newPrekeys(PREKEY_TARGET) : [];
    if (opks.length) await this.save(); // their private halves first, then the server
    await channel.send({
      kind: "keys_publish",
      device: this.device,
      bundle: encodeBundle(await this.bundle()),
      opks,
      lobby: true,
    }, "server");
  }

  #newPrekeys(count: number): { id: number; pub: string }[] {
    const out: { id: number; pub: string }[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.#own.nextOpk++;
      const pair = x25519KeyPair();
      this.#own.opks.set(id, pair);
      out.push({ id, pub: toBase64(pair.publicKey) });
    }
    return out;
  }

  /**
   * Handles a `keys` answer from the server: this device's prekey count (topped up when low),
   * or a contact's devices for a pending `prepare`.
   */
  async onKeys(body: KeysBody, channel: KeysChannel): Promise<void> {
    if (body.opks_left !== undefined) {
      if (body.device === this.device && body.opks_left < PREKEY_TARGET / 2) {
        const opks = this.#newPrekeys(PREKEY_TARGET - body.opks_left);
        await this.save();
        await channel.send({ kind: "keys_publish", device: this.device, opks }, "server");
      }
      return;
    }
    const waiting = this.#pending.get(channel);
    const fetches = waiting?.get(body.user);
    const fetch = fetches?.[0];
    if (!fetch) return; // not asked for
    // The parts of one list follow one another (§12.6): it is whole at the one without `more`,
    // and it answers the oldest fetch, which then leaves.
    if (!body.more) {
      fetches!.shift();
      if (fetches!.length === 0) waiting!.delete(body.user);
    }
    const take = fetch.take;
    if (!take) return; // the answer of a fetch that gave up: dropped
    if (body.devices !== undefined) {
      const listed = [...fetch.listed, ...body.devices];
      const twice = new Set(listed.map((d) => d.device)).size !== listed.length;
      if (listed.length > MAX_DEVICES || twice) {
        fetch.take = undefined; // the rest of this list, if more comes, is dropped
        return take(
          new SecureChatError(
            "PROTOCOL_ERROR",
            `the server listed ${
              twice ? "a device twice" : `more than ${MAX_DEVICES} devices`
            } for ${body.user}`,
          ),
        );
      }
      if (body.more) {
        fetch.listed = listed;
        return;
      }
      body = { ...body, devices: listed };
    }
    take(body);
  }

  /**
   * Tells the layer that `channel`'s session ended: what still waits on its server (a device
   * list, the lobby's membership) fails now rather than at its timeout, so a client that
   * reconnects is not held up for seconds by a fetch sent just before its node went away,
   * nor makes its next lobby chain without the members that fetch was for.
   */
  sessionEnded(channel: KeysChannel): void {
    this.#endOf(channel).end();
    // Our chain went out in that session, maybe no further than a node that died: the next
    // session's `online` list (a membership change) retires it, and its seqnos were that
    // session's.
    this.#sessionsEnded++;
    this.#chainSeqnos = new Map();
    // The next session's `online` list is the membership then: until it comes, no lobby line.
    this.#membersKnown = new Promise((resolve) => this.#membersArrived = resolve);
    this.#listWhole = false;
    for (const user of this.#lobby) this.#unconfirmed.add(user);
  }

  #endOf(channel: KeysChannel): { ended: Promise<never>; end: () => void } {
    let entry = this.#ends.get(channel);
    if (!entry) {
      let reject!: (error: Error) => void;
      const ended = new Promise<never>((_, r) => reject = r);
      ended.catch(() => {}); // only ever raced
      entry = {
        ended,
        end: () => reject(new SecureChatError("PROTOCOL_ERROR", "the session ended")),
      };
      this.#ends.set(channel, entry);
    }
    return entry;
  }

  /**
   * A `members` body from the server (PROTOCOL §12.5): the lobby's membership. Any change
   * retires our sender chain, so the next lobby line starts a new one for the new membership;
   * a member who left loses their chains with us, and one who joined (maybe on a new device)
   * gets their device list fetched again. The `online` list is whole at its chunk without
   * `more`: a lobby line waits for it, or its chain would miss the later chunks' members.
   */
  onMembers(body: MembersBody): void {
    // The order the server promises (§12.5): the whole list first, once, then changes. A body
    // out of it (a buggy or replaying server) would leave the membership a guess.
    if ((body.event === "online") === this.#listWhole) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        this.#listWhole
          ? "the server sent the lobby's online list a second time in this session"
          : `the server sent a '${body.event}' before the whole online list`,
      );
    }
    this.#membership++;
    const whole = body.event === "online" && !body.more;
    if (whole) {
      this.#listWhole = true;
      this.#membersArrived();
    }
    for (const user of body.users.map(canonicalName)) {
      if (user === this.#me.user) continue;
      if (body.event === "left") {
        this.#lobby.delete(user);
        // Their chains stay a while: lines they sent before they left may still come (a
        // replay after a node failed, a slow node). Leaving needs nothing from us: what
        // keeps a leaver from reading on is that every author starts a new chain.
        this.#departed.set(user, Date.now());
      } else {
        this.#lobby.add(user);
        this.#departed.delete(user);
        if (body.event === "joined") this.#listedAt.delete(user);
        this.#unconfirmed.delete(user);
      }
    }
    if (whole) {
      // Whom the last session had and this one's list leaves out went while we were away.
      for (const user of this.#unconfirmed) {
        this.#lobby.delete(user);
        this.#departed.set(user, Date.now());
      }
      this.#unconfirmed.clear();
    }
    const now = Date.now();
    for (const [user, leftAt] of this.#departed) {
      if (now - leftAt < DEPARTED_CHAINS_KEPT_MS) continue;
      this.#departed.delete(user);
      for (const key of this.#receivers.keys()) {
        if (key.startsWith(`${user}/`)) this.#receivers.delete(key);
      }
    }
  }

  /**
   * Makes sure a lobby line can be wrapped (PROTOCOL §12.5): without a chain for the current
   * membership, makes sure of every member's devices, starts a new chain and sends it, in a
   * private end-to-end `sender_key` record, to each member with a device that takes sender
   * keys. A lobby line never goes readable: a member without such a device (no keys
   * published, keys refused, or only clients without sender keys) gets no chain, and their
   * client shows that it has no key for the line.
   * @returns the members who get no chain, and why: said when a chain is made, once per
   *   membership
   * @throws TIMEOUT when the server never said (to its end) who is in the lobby (it sends that
   *   once our device is published, PROTOCOL §12.5)
   */
  async prepareLobby(
    channel: KeysChannel,
  ): Promise<{ unreadable: { user: string; reason: string }[] }> {
    await withTimeout(
      this.#membersKnown,
      FETCH_TIMEOUT_MS,
      "the server did not say who is in the lobby",
      this.#endOf(channel).ended,
    );
    // A membership that changes while the chain goes out (members came or left meanwhile)
    // needs another chain; past a few such changes in a row, the last chain is used as it is:
    // those who came meanwhile show that they have no key for this line.
    let result = { unreadable: [] as { user: string; reason: string }[] };
    for (let round = 0; round < LOBBY_REKEY_ROUNDS; round++) {
      if (this.#chain && this.#chainMembership === this.#membership && !this.#chainSpent()) {
        if (round === 0) await this.#catchUpLeftOut(channel);
        break;
      }
      result = await this.#distributeChain(channel);
    }
    return { unreadable: [...result.unreadable, ...this.#takeRefusalsToTell()] };
  }

  /**
   * Members the current chain left out (no device listed yet — a newcomer whose keys were still
   * being stored —, or a fetch that failed) are looked up again, at most every
   * LEFT_OUT_RECHECK_MS; one who now has a device that takes sender keys gets the chain from its
   * current position, so they read from the next line on and nothing before.
   */
  async #catchUpLeftOut(channel: KeysChannel): Promise<void> {
    if (!this.#chain || this.#leftOut.size === 0) return;
    if (Date.now() - this.#leftOutCheckedAt < LEFT_OUT_RECHECK_MS) return;
    this.#leftOutCheckedAt = Date.now();
    const chain = this.#chain;
    for (const user of [...this.#leftOut]) {
      if (!this.#lobby.has(user)) {
        this.#leftOut.delete(user);
        continue;
      }
      this.#listedAt.delete(user);
      const ready = await this.prepare(user, channel).then(() => true, () => false);
      if (!ready || !this.#lobbyDevicesOf(user).length || this.#chain !== chain) continue;
      const distribution = encodeDistribution(chain.distribution());
      this.#chainSeqnos.set(
        await channel.send({ kind: "sender_key", ...distribution }, userRecipient(user)),
        user,
      );
      this.#leftOut.delete(user);
    }
  }

  /**
   * One new sender chain, sent to every current member with a device that takes it
   * (PROTOCOL §12.5).
   */
  async #distributeChain(
    channel: KeysChannel,
  ): Promise<{ unreadable: { user: string; reason: string }[] }> {
    const membership = this.#membership;
    const sessionsEnded = this.#sessionsEnded;
    const members = [...this.#lobby];
    const results = await Promise.allSettled(members.map((m) => this.prepare(m, channel)));
    const unreadable: { user: string; reason: string }[] = [];
    const ready: string[] = [];
    members.forEach((user, i) => {
      const result = results[i];
      if (result.status === "rejected") {
        unreadable.push({
          user,
          reason: codeOf(result.reason) !== "NO_E2E_KEYS"
            ? (result.reason as Error).message
            : this.devicesOf(user).length
            ? "WARNING: the server now lists none of their devices, though this device has " +
              "conversations with them: it may be hiding them"
            : "no end-to-end keys published",
        });
      } else if (!this.#lobbyDevicesOf(user).length) {
        unreadable.push({ user, reason: "no device of theirs takes lobby sender keys" });
      } else ready.push(user);
    });
    const chain = SenderChain.fresh(this.#me.user);
    const distribution = encodeDistribution(chain.distribution());
    const seqnos = new Map<number, string>();
    for (const user of ready) {
      seqnos.set(
        await channel.send({ kind: "sender_key", ...distribution }, userRecipient(user)),
        user,
      );
    }
    // Sent in a session that has ended since: not ours to keep.
    if (sessionsEnded !== this.#sessionsEnded) return { unreadable };
    this.#chain = chain;
    this.#chainMembership = membership;
    this.#chainSeqnos = seqnos;
    this.#chainQueued = false;
    this.#leftOut = new Set(unreadable.map(({ user }) => user));
    this.#leftOutCheckedAt = Date.now();
    this.#refusalsTold.clear();
    this.#refusalsToTell.clear();
    return { unreadable };
  }

  /** The devices of `user` we have a session with that take lobby sender keys (last list). */
  #lobbyDevicesOf(user: string): string[] {
    return this.devicesOf(user).filter((d) => this.#lobbyDevices.has(`${user}/${d}`));
  }

  /** A chain queued for someone that has wrapped MAX_SKIP lines (see #chainQueued). */
  #chainSpent(): boolean {
    return this.#chainQueued && this.#chain!.position >= MAX_SKIP;
  }

  /**
   * The server refused our message `seqno` (PROTOCOL §6.5). When it carried our sender key to
   * a member, only that member lacks the chain: they are left out of it, and looked up again
   * and sent it from its position then, as a member the chain was not sent to (§12.5). A new
   * chain for everyone would rekey every member at every line for as long as the refusal lasts
   * (a full queue: as long as the member stays away). The user is told before their next lobby
   * line (prepareLobby's `unreadable`), once per chain and member.
   * A refused `keys_fetch` of `channel`'s session gets no `keys` answer (§12.6): it fails now
   * with the refusal's code, and leaves the fetches the answers are paired with.
   * @returns whether it was one of our sender keys or fetches (the layer's, not a line of the
   *   user's)
   */
  onNotDelivered(seqno: number, code: string, channel?: KeysChannel): boolean {
    if (channel && this.#fetchRefused(seqno, code, channel)) return true;
    const member = this.#chainSeqnos.get(seqno);
    if (member === undefined) return false;
    this.#chainSeqnos.delete(seqno);
    this.#leftOut.add(member);
    if (!this.#refusalsTold.has(member)) {
      this.#refusalsTold.add(member);
      this.#refusalsToTell.set(member, code);
    }
    return true;
  }

  #fetchRefused(seqno: number, code: string, channel: KeysChannel): boolean {
    const waiting = this.#pending.get(channel);
    for (const [user, fetches] of waiting ?? []) {
      const at = fetches.findIndex((fetch) => fetch.seqno === seqno);
      if (at < 0) continue;
      const [fetch] = fetches.splice(at, 1);
      if (fetches.length === 0) waiting!.delete(user);
      fetch.take?.(
        new SecureChatError(
          code as ErrorCode,
          `the server refused the fetch of ${user}'s keys: ${code}`,
        ),
      );
      return true;
    }
    return false;
  }

  /**
   * Members whose key of the current chain the server refused and who are still left out, not
   * yet told under this chain (§12.5: once per chain and member), said with the refusal's code.
   */
  #takeRefusalsToTell(): { user: string; reason: string }[] {
    const told = [...this.#refusalsToTell].filter(([user]) => this.#leftOut.has(user));
    this.#refusalsToTell.clear();
    return told.map(([user, code]) => ({
      user,
      reason: `the server refused your key for them: ${code}; offered again every ${
        LEFT_OUT_RECHECK_MS / 1000
      } s`,
    }));
  }

  /**
   * The server stored our message `seqno` in its recipient's offline queue (§6.6). When it
   * carried our sender key, the chain stays: the member is sent the key before our later lines
   * (at their login, merged into a cluster's replay, or at once if they are online elsewhere),
   * so sending it again with every line would only queue one more key per line (§6.5).
   * @returns whether it was one of our sender keys (not a line of the user's)
   */
  onQueued(seqno: number): boolean {
    if (!this.#chainSeqnos.has(seqno)) return false;
    this.#chainQueued = true;
    return true;
  }

  /**
   * A lobby author's new chain, from an accepted private end-to-end record of theirs (PROTOCOL
   * §12.5): it opens their lobby lines from its position on.
   */
  onSenderKey(author: string, update: { fromDevice: string; body: SenderKeyBody }): void {
    const name = canonicalName(author);
    const { id, n, ck } = update.body;
    const key = `${name}/${update.fromDevice}`;
    const older = (this.#receivers.get(key) ?? []).filter((r) => r.id !== id);
    this.#receivers.set(key, [
      new SenderKeyReceiver(name, { id, n, ck: fromBase64(ck) }),
      ...older.slice(0, CHAINS_KEPT_PER_DEVICE - 1),
    ]);
  }

  /** The devices of `user` this device has sessions with. */
  devicesOf(user: string): string[] {
    return [...this.#peers.get(canonicalName(user))?.keys() ?? []];
  }

  /**
   * Makes sure a private line to `user` can be wrapped for each of their devices: fetches
   * their device list when this run has none or an old one, checks each new device's bundle
   * (PROTOCOL §12.2) and runs PQXDH with it (§12.3); devices no longer listed are dropped.
   * @returns the devices the line will be wrapped for (at least one) and those refused
   * @throws NO_E2E_KEYS when the server lists no device for `user` (a line would have to go
   *   readable by the server, which this client never sends; louder when we had sessions with
   *   their devices: a server hiding devices); the first refusal's code (BAD_CERT: revoked or
   *   not theirs, SIG_FAIL, BAD_KEY_SHARE, PROTOCOL_ERROR) when every listed device was
   *   refused; DB_UNAVAILABLE when the server could not answer; TIMEOUT
   */
  prepare(user: string, channel: KeysChannel): Promise<Preparation> {
    const name = canonicalName(user);
    const listedAt = this.#listedAt.get(name);
    if (listedAt !== undefined && Date.now() - listedAt < DEVICE_LIST_MAX_AGE_MS) {
      return Promise.resolve({ devices: this.#peers.get(name)?.size ?? 0, refused: [] });
    }
    let fetching = this.#preparing.get(channel);
    if (!fetching) this.#preparing.set(channel, fetching = new Map());
    let running = fetching.get(name);
    if (!running) {
      running = this.#fetchDevices(name, channel).finally(() => fetching.delete(name));
      fetching.set(name, running);
    }
    return running;
  }

  /**
   * `/verify`: fetches `user`'s devices now, checks every one (bundle and certificate, as a
   * line would), and lists them with the fingerprint of the certificate that signed each
   * device's keys, for the user to compare out of band (PROTOCOL §12.2).
   * @throws as {@link prepare}
   */
  async identify(
    user: string,
    channel: KeysChannel,
  ): Promise<
    { devices: { device: string; fingerprint: string }[]; refused: Preparation["refused"] }
  > {
    const name = canonicalName(user);
    this.#listedAt.delete(name);
    const { refused } = await this.prepare(name, channel);
    const devices = [...this.#peers.get(name) ?? []].map(([device, [session]]) => ({
      device,
      fingerprint: fingerprintOf(session.cert),
    }));
    return { devices, refused };
  }

  /**
   * The refusal when the server lists no device of `name` (PROTOCOL §12.6). The sessions with
   * devices whose certificate has lapsed (revoked or expired; a revoked one a server must not
   * list) go, as they would from a list, and when none of ours is left that refusal is the reason
   * (BAD_CERT); only devices whose certificates still validate count as hidden. A failure of our
   * own (a CRL past its nextUpdate) is the answer, and drops nothing.
   */
  async #noDevices(name: string): Promise<SecureChatError> {
    const sessions = this.#peers.get(name);
    let revoked: unknown;
    for (const [device, [session]] of sessions ?? []) {
      let retired: SecureChatError | undefined;
      try {
        retired = await this.#retired(session.cert);
      } catch (error) {
        return error instanceof SecureChatError ? error : noDevices(name, sessions!.size);
      }
      if (!retired) continue;
      sessions!.delete(device);
      this.#restart.delete(`${name}/${device}`);
      revoked ??= retired;
    }
    if (revoked === undefined) return noDevices(name, sessions?.size ?? 0);
    if (sessions!.size === 0) this.#peers.delete(name);
    await this.save();
    return sessions!.size === 0 && revoked instanceof SecureChatError
      ? revoked
      : noDevices(name, sessions!.size);
  }

  /**
   * Why the certificate a session with a contact device was made under has lapsed for good
   * (revoked in our CRL, or expired), if it has: then the device's sessions go (§12.6 step 2).
   * A certificate that fails to validate for another reason says nothing about the contact (our
   * CRL past its nextUpdate, typically) and must not cost sessions that cannot be rebuilt.
   * @throws BAD_CERT when it fails to validate for such a reason: the line is not sent
   */
  async #retired(cert: Uint8Array): Promise<SecureChatError | undefined> {
    const lapsed = this.#trust.lapsed(cert);
    if (lapsed !== undefined) return new SecureChatError("BAD_CERT", `certificate is ${lapsed}`);
    await validatePeerCertificate(this.#trust, cert, { role: "client" });
    return undefined;
  }

  async #fetchDevices(name: string, channel: KeysChannel): Promise<Preparation> {
    const known = this.devicesOf(name).filter((d) => !this.#restart.has(`${name}/${d}`));
    let waiting = this.#pending.get(channel);
    if (!waiting) this.#pending.set(channel, waiting = new Map());
    let fetches = waiting.get(name);
    if (!fetches) waiting.set(name, fetches = []);
    const fetch: PendingFetch = { listed: [] };
    const answer = new Promise<KeysBody>((resolve, reject) =>
      fetch.take = (a) => a instanceof SecureChatError ? reject(a) : resolve(a)
    );
    fetches.push(fetch);
    try {
      fetch.seqno = await channel.send({ kind: "keys_fetch", user: name, known }, "server");
    } catch (error) {
      // Not sent: no answer will come for it.
      fetches.splice(fetches.indexOf(fetch), 1);
      if (fetches.length === 0 && waiting.get(name) === fetches) waiting.delete(name);
      throw error;
    }
    const { devices } = await withTimeout(
      answer,
      FETCH_TIMEOUT_MS,
      `the server did not answer for ${name}'s keys`,
      this.#endOf(channel).ended,
    ).finally(() => fetch.take = undefined); // given up, if not answered: its answer is dropped
    if (devices === undefined) {
      throw new SecureChatError("DB_UNAVAILABLE", `the server could not hand out ${name}'s keys`, {
        hint: "try again in a moment",
      });
    }
    if (devices.length === 0) throw await this.#noDevices(name);
    // The contact's map is in place before the awaits below, so a first message from one of
    // their devices answered meanwhile (§12.3) adds its session to this map rather than to one
    // this fetch would then replace: that lost the session, and their next message, still
    // carrying the same first-contact header, showed "a one-time prekey already used".
    let sessions = this.#peers.get(name);
    if (!sessions) this.#peers.set(name, sessions = new Map<string, PeerSession[]>());
    const listed = new Set(devices.map((d) => d.device));
    for (const entry of devices) {
      const key = `${name}/${entry.device}`;
      if (entry.lobby) this.#lobbyDevices.add(key);
      else this.#lobbyDevices.delete(key);
    }
    const refused: { device: string; reason: string; error: unknown }[] = [];
    let outdated = false;
    for (const [device, [session]] of sessions) {
      if (!listed.has(device)) {
        sessions.delete(device);
        continue;
      }
      // A device we know is kept only while the certificate its session was made under has not
      // lapsed. One the server still lists, though, may have moved to a new certificate (a key
      // rotation: re-issued, then the old one revoked, §6.6): it is asked for afresh below, and
      // its bundle decides, as a new device's does.
      if (await this.#retired(session.cert)) {
        sessions.delete(device);
        this.#restart.delete(`${name}/${device}`);
        outdated = true;
      }
    }
    if (outdated) {
      await this.save();
      // Those devices are no longer in `known`, so the answer carries their current bundles.
      return this.#fetchDevices(name, channel);
    }
    for (const entry of devices) {
      if (!listed.has(entry.device)) continue; // refused above
      const restart = this.#restart.delete(`${name}/${entry.device}`);
      if (sessions.has(entry.device) && !restart) continue;
      try {
        const session = await this.#startSession(name, entry);
        const older = sessions.get(entry.device) ?? [];
        sessions.set(entry.device, [session, ...older].slice(0, SESSIONS_PER_DEVICE));
      } catch (error) {
        refused.push({ device: entry.device, reason: (error as Error).message, error });
      }
    }
    if (sessions.size === 0 && this.#peers.get(name) === sessions) this.#peers.delete(name);
    await this.save();
    // Every device refused: nothing is cached, so each later line asks (and refuses) again.
    if (sessions.size === 0 && refused.length) throw refused[0].error;
    this.#listedAt.set(name, Date.now());
    return {
      devices: sessions.size,
      refused: refused.map(({ device, reason }) => ({ device, reason })),
    };
  }

  /** First contact with one device of `name` from its published keys (§12.2, §12.3). */
  async #startSession(
    name: string,
    entry: NonNullable<KeysBody["devices"]>[number],
  ): Promise<PeerSession> {
    if (!entry.bundle || !entry.cert) {
      throw new SecureChatError("PROTOCOL_ERROR", "the server left out a new device's keys");
    }
    const bundle = parseBundle(entry.bundle);
    const cert = fromBase64(entry.cert);
    await verifyBundle(this.#trust, cert, bundle);
    if (bundle.user !== name) {
      throw new SecureChatError("BAD_CERT", `the server answered with ${bundle.user}'s keys`);
    }
    if (deviceOf(bundle.ik) !== entry.device) {
      throw new SecureChatError("PROTOCOL_ERROR", "a device id that is not its identity key's");
    }
    const first = await initiateFirstContact(
      { ik: this.#own.ik, ikSig: (await this.bundle()).ikSig, cert: this.#me.certDer },
      {
        bundle,
        cert,
        opk: entry.opk ? { id: entry.opk.id, pub: fromBase64(entry.opk.pub) } : undefined,
      },
    );
    return {
      ratchet: Ratchet.initiator(first.sk, first.ad, bundle.spk),
      cert,
      pre: encodePrekeyHeader(first.header),
    };
  }

  #addSession(name: string, device: string, session: PeerSession): void {
    const devices = this.#peers.get(name) ?? new Map<string, PeerSession[]>();
    const sessions = devices.get(device) ?? [];
    sessions.unshift(session);
    devices.set(device, sessions.slice(0, SESSIONS_PER_DEVICE));
    this.#peers.set(name, devices);
  }

  /**
   * The envelope for one of our records (PROTOCOL §12.6): a private line's content key is
   * wrapped once per recipient device, each by that device's active ratchet (a `sender_key`
   * body only for the devices that take sender keys), and the state is saved before the line
   * leaves, so a crash can never make us wrap twice under one key. Only a record to `server`
   * goes without: a record to a user is never left readable by the server (§12.6).
   * @throws NO_E2E_KEYS when there is no session with any (fitting) device of a private
   *   recipient (`prepare` refused, or was not asked); INTERNAL for a lobby line without
   *   `prepareLobby`
   */
  async wrap(
    record: MessageRecord,
    k: Uint8Array,
    body?: Body,
  ): Promise<E2eEnvelope | undefined> {
    if (record.to === LOBBY) return this.#wrapForLobby(record, k);
    const to = recipientUser(record.to);
    if (to === null) return undefined; // the server reads what is addressed to it
    const devices = [...this.#peers.get(to) ?? []].filter(([device]) =>
      body?.kind !== "sender_key" || this.#lobbyDevices.has(`${to}/${device}`)
    );
    if (!devices.length) {
      throw new SecureChatError("NO_E2E_KEYS", `no end-to-end session with ${to}: not sent`);
    }
    const binding = bindingOf(record);
    const wraps: DeviceWrapJson[] = [];
    for (const [device, [session]] of devices) {
      const { header, wrapped } = session.ratchet.encrypt(k, binding);
      wraps.push({
        device,
        dh: toBase64(header.dh),
        pn: header.pn,
        n: header.n,
        w: toBase64(wrapped),
        ...(session.pre ? { pre: session.pre } : {}),
      });
    }
    await this.save();
    return { kind: "ratchet", from: this.device, wraps };
  }

  /** One wrap under our sender chain for everyone in the lobby (§12.5). */
  #wrapForLobby(record: MessageRecord, k: Uint8Array): E2eEnvelope {
    if (!this.#chain) throw new SecureChatError("INTERNAL", "no sender key for the lobby");
    const { id, n, wrapped } = this.#chain.encrypt(k, bindingOf(record));
    return { kind: "sender", from: this.device, id, n, w: toBase64(wrapped) };
  }

  /**
   * Unwraps the content key of a relayed end-to-end record from `author` (validated).
   * @throws DECRYPT_FAIL (no wrap for this device, or none of our sessions with the author's
   *   device opens it: our state is gone or older than the message), REPLAY, SIG_FAIL (a
   *   first message's identity key not signed by the author's certificate), PROTOCOL_ERROR,
   *   BAD_KEY_SHARE
   */
  async unwrap(
    author: ValidatedPeer,
    record: MessageRecord,
    e2e: E2eEnvelope,
  ): Promise<Uint8Array> {
    const name = canonicalName(author.commonName);
    if (e2e.kind === "sender") {
      const chains = this.#receivers.get(`${name}/${e2e.from}`) ?? [];
      const receiver = chains.find((r) => r.id === e2e.id) ?? chains[0];
      if (!receiver) {
        throw new SecureChatError(
          "DECRYPT_FAIL",
          `this device has no key for this lobby line (${name} did not send it one)`,
        );
      }
      return receiver.decrypt(e2e.id, e2e.n, fromBase64(e2e.w), bindingOf(record));
    }
    const mine = e2e.wraps.find((w) => w.device === this.device);
    if (!mine) {
      this.#listedAt.delete(name); // our next line fetches their keys and introduces us
      throw new SecureChatError(
        "DECRYPT_FAIL",
        `this device has no key for this message (${name} did not know this device yet)`,
      );
    }
    const header = { dh: fromBase64(mine.dh), pn: mine.pn, n: mine.n };
    const wrapped = fromBase64(mine.w);
    const binding = bindingOf(record);
    const sessions = this.#peers.get(name)?.get(e2e.from) ?? [];
    if (mine.pre) {
      const ik = fromBase64(mine.pre.ik);
      if (deviceOf(ik) !== e2e.from) {
        throw new SecureChatError("PROTOCOL_ERROR", "a first message from another device's key");
      }
      const theirEk = toHex(fromBase64(mine.pre.ek));
      if (!sessions.some((s) => s.theirEk === theirEk)) {
        await verifyIdentityKey(author, ik, fromBase64(mine.pre.ik_sig));
        return await this.#answerFirstContact(name, e2e.from, author, mine.pre, {
          header,
          wrapped,
          binding,
        });
      }
    }
    let failure: unknown;
    for (const session of sessions) {
      try {
        const k = session.ratchet.decrypt(header, wrapped, binding);
        session.pre = undefined; // they have the session: no need to send our header again
        sessions.splice(sessions.indexOf(session), 1);
        sessions.unshift(session);
        this.#saveSoon();
        return k;
      } catch (error) {
        if (codeOf(error) === "REPLAY" || failure === undefined) failure = error;
      }
    }
    if (failure && codeOf(failure) === "REPLAY") throw failure;
    // The way back from lost or older state: our next line starts a new session.
    this.#restart.add(`${name}/${e2e.from}`);
    this.#listedAt.delete(name);
    throw new SecureChatError(
      "DECRYPT_FAIL",
      `this device has no key for this message (its conversation with ${name} is gone or ` +
        `older than the message); your next message to ${name} starts a new one`,
      { cause: failure },
    );
  }

  async #answerFirstContact(
    name: string,
    device: string,
    author: ValidatedPeer,
    pre: PrekeyHeaderJson,
    message: {
      header: { dh: Uint8Array; pn: number; n: number };
      wrapped: Uint8Array;
      binding: Uint8Array;
    },
  ): Promise<Uint8Array> {
    const own = this.#own;
    const h = decodePrekeyHeader(pre);
    if (h.spkId !== own.spk.id || h.pqId !== own.pq.id) {
      throw new SecureChatError("DECRYPT_FAIL", `${name} used prekeys this device no longer has`);
    }
    const opk = h.opkId === undefined ? undefined : own.opks.get(h.opkId);
    if (h.opkId !== undefined && !opk) {
      throw new SecureChatError("DECRYPT_FAIL", `${name} used a one-time prekey already used`);
    }
    const { sk, ad } = await respondFirstContact(
      {
        ik: own.ik,
        cert: this.#me.certDer,
        spkId: own.spk.id,
        spk: own.spk.key,
        pqId: own.pq.id,
        pq: own.pq.pair,
        opk,
      },
      author.der,
      h,
    );
    const ratchet = Ratchet.responder(sk, ad, own.spk.key);
    // Commits nothing if it fails.
    const k = ratchet.decrypt(message.header, message.wrapped, message.binding);
    if (h.opkId !== undefined) own.opks.delete(h.opkId);
    // A contact device we did not know about (their new device) joins the list we wrap for.
    this.#addSession(name, device, { ratchet, cert: author.der, theirEk: toHex(h.ek) });
    this.#listedAt.delete(name); // a new device of theirs: its capabilities come with the list
    await this.save();
    return k;
  }
}

/** binding = SHA-256(statement) of the record a wrap travels with (PROTOCOL §12.4). */
export function bindingOf(record: MessageRecord): Uint8Array {
  return sha256(statement(record));
}

/**
 * The refusal when the server lists no device of `name` (PROTOCOL §12.6): a line would have
 * to go readable by the server. When we had sessions with `had` of their devices, the server
 * may be hiding them to read what is sent: said loudly, and those sessions are kept.
 */
function noDevices(name: string, had: number): SecureChatError {
  if (had === 0) {
    return new SecureChatError(
      "NO_E2E_KEYS",
      `${name} has no device with valid end-to-end keys (none published, or their certificate ` +
        "was revoked): nothing was sent (the server could have read it)",
      {
        hint: `${name}'s keys are published when ${name} logs in with securechat, under a ` +
          "certificate that is not revoked",
      },
    );
  }
  return new SecureChatError(
    "NO_E2E_KEYS",
    `WARNING: the server now lists no device of ${name}, though this device has a ` +
      `conversation with ${had} of them: nothing was sent. A server that hides a user's ` +
      "devices could read what is sent without end-to-end encryption; this client never does that",
    {
      hint: `if ${name} did not remove every device and was not revoked (a CRL newer than ` +
        `yours), the server may be lying: compare \`/verify ${name}\` with ${name} out of ` +
        "band and tell the operator",
    },
  );
}

/** `promise`, or TIMEOUT after `ms`, or `ended`'s rejection if that comes first. */
async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  ended: Promise<never>,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SecureChatError("TIMEOUT", what)), ms);
  });
  try {
    return await Promise.race([promise, timeout, ended]);
  } finally {
    clearTimeout(timer);
  }
}

function randomId(): number {
  return new DataView(randomBytes(4).buffer).getUint32(0);
}
