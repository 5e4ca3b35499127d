/**
 * Authorship across the relay (PROTOCOL §6.4). The server forwards the author's own
 * signed record and its content key; the recipient checks the author's certificate,
 * the record's binding to its recipients and direction, the signature, the content
 * against its commitment, and freshness — within the session and across sessions,
 * with high-water marks kept in a small state file.
 */
import { fromBase64 } from "../bytes.ts";
import { SessionCertList } from "../message/author_certs.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import {
  type Body,
  bodyFits,
  decodeRecord,
  envelopeFits,
  LOBBY,
  MAX_STORED_AGE_MS,
  type MessageRecord,
  openContent,
  RecordSignatures,
  type RelayMessage,
  type StoredMessage,
  userRecipient,
} from "../message/record.ts";
import type { VerifyingKey } from "../crypto/signature.ts";
import type { E2eEnvelope } from "../e2e/envelope.ts";
import { type TrustStore, type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";

/** A relayed text that passed every check. */
export interface RelayedText {
  /** The author's CN. */
  author: string;
  fingerprint: string;
  /** The author's certificate when this relay introduced it to the session (§6.4.1). */
  certDer?: Uint8Array;
  text: string;
  /** true when addressed to us alone (`user:<us>`), false for the lobby. */
  private: boolean;
  record: MessageRecord;
  /** The seqno its author's signed batch starts at (PROTOCOL §6.1): a relay's `first`. */
  batchFirst: number;
  /** The content key (unwrapped, for an end-to-end record); absent when it could not be. */
  k?: Uint8Array;
  /**
   * Not a line: the author's new lobby sender key, sent privately end to end (PROTOCOL
   * §12.5). Recorded; handed to the end-to-end layer as soon as its record opened
   * (RelayContext.senderKey), and nothing is shown.
   */
  senderKey?: SenderKeyUpdate;
  /**
   * Accepted in an earlier session already (a failover replay, or a server re-delivering
   * it): genuine and recorded, but not to be shown as new (PROTOCOL §6.4).
   */
  duplicate: boolean;
  /** Delivered from the offline queue (PROTOCOL §6.6): written while we were away. */
  stored: boolean;
  /**
   * Why this device cannot read the record (the end-to-end layer, PROTOCOL §12.6): no wrap
   * for this device, its state for that conversation is gone or older, or a client without
   * the layer. Genuine (its signature checked) and recorded, shown as unreadable, never as
   * text; a stored one is left in the queue for another of the user's devices (§6.6).
   */
  undecryptable?: string;
  /**
   * Why this end-to-end line cannot be shown although its wrap opened: its content does not
   * open under the author's key, or its body is no body it may carry (PROTOCOL §12.6 steps
   * 10–11). The author's doing, not the server's: recorded and accepted, shown as such (never
   * its bytes), acknowledged (no device can read it), and the session goes on.
   */
  malformed?: string;
}

/**
 * Per author (certificate fingerprint) and author session: the highest seqno and its ts;
 * `private` once a record of that session was addressed to us alone, which could come back
 * from the offline queue for MAX_STORED_AGE_MS (PROTOCOL §6.6), so its mark is kept as long.
 */
type Mark = { seqno: number; ts: number; private?: true };
type Marks = Record<string, Record<string, Mark>>;

/**
 * Where the marks are kept between sessions: a file for the CLI (./seen_file.ts), IndexedDB
 * for the browser page.
 */
export interface SeenStorage {
  /** For messages: the file's path, or the page's store. */
  readonly name: string;
  /** The saved text, or null when nothing was saved yet. @throws when it cannot be read */
  read(): Promise<string | null>;
  /** Replaces the saved text atomically. @throws when it cannot be written */
  write(text: string): Promise<void>;
  /** A deferred save must not keep a command-line process alive (Deno.unrefTimer). */
  unrefTimer?(timer: ReturnType<typeof setTimeout>): void;
}

/**
 * Relay high-water marks that outlive the session (PROTOCOL §6.4), saved a second after a
 * change and at the end. Marks older than the retention are dropped: the freshness rule
 * already refuses records that old.
 */
export class SeenStore {
  #marks: Marks;
  #dirty = false;
  #timer?: ReturnType<typeof setTimeout>;

  private constructor(
    readonly storage: SeenStorage | null,
    marks: Marks,
    readonly retentionMs: number,
  ) {
    this.#marks = marks;
  }

  /** A store kept only in memory (tests, or a client run without a state file). */
  static memory(retentionMs = 10 * 60 * 1000): SeenStore {
    return new SeenStore(null, {}, retentionMs);
  }

  /**
   * Loads the saved marks (nothing saved yet is an empty store).
   * @throws IO_ERROR for unreadable or malformed marks: refusing is safer than forgetting
   */
  static async load(
    storage: SeenStorage,
    retentionMs: number,
    now = Date.now(),
  ): Promise<SeenStore> {
    let marks: Marks = {};
    try {
      const text = await storage.read();
      if (text !== null) {
        const parsed = JSON.parse(text);
        if (parsed?.version !== 1 || typeof parsed.authors !== "object" || !parsed.authors) {
          throw new Error("format");
        }
        marks = parsed.authors as Marks;
      }
    } catch (cause) {
      throw new SecureChatError("IO_ERROR", `cannot read the relay state file ${storage.name}`, {
        cause,
        hint: "it is rewritten after every session; delete it only if you trust the server",
      });
    }
    const store = new SeenStore(storage, marks, retentionMs);
    store.#prune(now);
    return store;
  }

  /** True when a record at or above `seqno` of this author session was accepted before. */
  has(fingerprint: string, sid: string, seqno: number): boolean {
    const mark = this.#marks[fingerprint]?.[sid];
    return mark !== undefined && seqno <= mark.seqno;
  }

  accept(fingerprint: string, sid: string, seqno: number, ts: number, isPrivate = false): void {
    const sessions = this.#marks[fingerprint] ??= {};
    const keep = isPrivate || sessions[sid]?.private === true;
    sessions[sid] = keep ? { seqno, ts, private: true } : { seqno, ts };
    this.#dirty = true;
    if (this.storage && !this.#timer) {
      this.#timer = setTimeout(() => void this.save().catch(() => {}), 1000);
      this.storage.unrefTimer?.(this.#timer);
    }
  }

  /** Writes the marks if they changed (atomically). @throws IO_ERROR */
  async save(now = Date.now()): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.storage || !this.#dirty) return;
    this.#dirty = false;
    this.#prune(now);
    try {
      await this.storage.write(JSON.stringify({ version: 1, authors: this.#marks }));
    } catch (cause) {
      this.#dirty = true;
      throw new SecureChatError(
        "IO_ERROR",
        `cannot write the relay state file ${this.storage.name}`,
        { cause },
      );
    }
  }

  #prune(now: number): void {
    for (const [fp, sessions] of Object.entries(this.#marks)) {
      for (const [sid, mark] of Object.entries(sessions)) {
        const retention = mark?.private === true
          ? MAX_STORED_AGE_MS + this.retentionMs
          : this.retentionMs;
        if (typeof mark?.ts !== "number" || mark.ts < now - retention) delete sessions[sid];
      }
      if (Object.keys(sessions).length === 0) delete this.#marks[fp];
    }
  }
}

/** A lobby author's new sender chain, from the author device `fromDevice`. */
export interface SenderKeyUpdate {
  fromDevice: string;
  body: Extract<Body, { kind: "sender_key" }>;
}

/**
 * Unwraps an end-to-end record's content key (PROTOCOL §12.6) for its author's validated
 * certificate. @throws DECRYPT_FAIL, REPLAY, SIG_FAIL, PROTOCOL_ERROR, BAD_KEY_SHARE
 */
export type E2eUnwrap = (
  author: ValidatedPeer,
  record: MessageRecord,
  e2e: E2eEnvelope,
) => Promise<Uint8Array>;

export interface RelayContext {
  trust: TrustStore;
  seen: SeenStore;
  /** Our own user name: a private record must be addressed to it. */
  username: string;
  /** server_hello.time of this session: records older than it minus the skew are replays. */
  sessionTime: number;
  maxSkewMs: number;
  /** The client's end-to-end layer; without it an end-to-end relay is PROTOCOL_ERROR. */
  unwrap?: E2eUnwrap;
  /**
   * Takes an author's new lobby sender chain (PROTOCOL §12.5) as soon as its record opened: the
   * next record of the same relay may be a lobby line under it (a `sender_key` and the line
   * after it are one batch when they leave in one turn, §12.6 steps 7–12 per record in order).
   */
  senderKey?: (author: string, update: SenderKeyUpdate) => void;
}

/** Checks relayed records in the order of PROTOCOL §6.4. */
/**
 * A relayed record's author certificate that did not pass, said as that (not as the server's
 * certificate, which is what a client's own BAD_CERT is otherwise about).
 */
function authorRefused(error: unknown, type: "relay" | "stored"): unknown {
  if (codeOf(error) !== "BAD_CERT") return error;
  return new SecureChatError(
    "BAD_CERT",
    `the author's certificate of a ${type} message did not pass: ${(error as Error).message}`,
    {
      cause: error,
      hint: "the server should not have relayed it (a revoked author's messages are not " +
        "delivered): tell the operator; if the server's revocation list is older than yours, " +
        "it has not caught up yet",
    },
  );
}

/** An author whose certificate passed, as a relay's checks need it. */
interface Author {
  peer: ValidatedPeer;
  key: VerifyingKey;
}

/**
 * A certificate introduced in this session: its validation, and once that passed its result,
 * so that a relay naming the author later waits for nothing.
 */
interface AdmittedAuthor {
  validation: Promise<Author>;
  validated?: Author;
}

/** How a relay's content key came out: in hand, or why this device cannot read the record. */
type ContentKeyOutcome = { k: Uint8Array } | { undecryptable: string };

/** A relay's or stored message's record with its content key's carrier. */
type Item = { record: MessageRecord; key: { k: string } | { e2e: E2eEnvelope } };

/** What a message forwarding records is, as the checks below need it. */
type Forwarded = RelayMessage | StoredMessage;

/** A relay's batch members decoded (PROTOCOL §6.4): what its check and its line share. */
export interface RelayGroup {
  sig: Uint8Array;
  first: number;
  n: number;
  proof: Uint8Array[];
}

/**
 * A message whose every check passed: its records, each as a RelayedText in seqno order, and
 * for a relay its batch members decoded (its transcript line holds them).
 */
export interface RelayedMessage {
  texts: RelayedText[];
  group?: RelayGroup;
}

const carrierOf = (o: { k: string } | { e2e: E2eEnvelope }) =>
  "e2e" in o ? { e2e: o.e2e } : { k: o.k };

export class RelayVerifier {
  /** This session's author certificates (§6.4.1), each validated once when introduced. */
  readonly #authors = new SessionCertList<AdmittedAuthor>();
  /** Each author batch's signature is verified once (PROTOCOL §6.1). */
  readonly #signatures = new RecordSignatures();
  /** This session's marks: within one session the server never relays a record twice. */
  readonly #inSession = new Map<string, number>();
  readonly #me: string;

  constructor(readonly ctx: RelayContext) {
    this.#me = userRecipient(ctx.username);
  }

  /**
   * Steps 2–7 of PROTOCOL §6.4 (the hop's seqno and ts are the session's) for a relay's
   * records, or a stored record's with §6.6's steps 3', 4' and 6'; with `e2e`, §12.6: steps
   * 1–6 for the whole message before steps 7–12 for each record in seqno order.
   * @throws BAD_CERT, TAMPERED, SIG_FAIL, DECRYPT_FAIL, PROTOCOL_ERROR, REPLAY, STALE
   */
  async check(message: Forwarded): Promise<RelayedMessage> {
    return await this.checkNow(message);
  }

  /**
   * {@link check}, done at once when nothing needs waiting for — the author's certificate
   * validated earlier in the session, a signature that verifies synchronously or a batch
   * verified before, no end-to-end key to unwrap — and a promise otherwise: a session's steady
   * state checks its relays without an await. Its faults are thrown, or the promise rejects
   * with them. Steps, each waiting only where it says:
   */
  checkNow(message: Forwarded): RelayedMessage | Promise<RelayedMessage> {
    // Step 2: the author's certificate, validated when introduced (may wait, once per author).
    const certDer = message.cert === undefined ? undefined : fromBase64(message.cert);
    const admitted = this.#authors.admit(message.author_fp, certDer, (der) => {
      const entry: AdmittedAuthor = {
        validation: validatePeerCertificate(this.ctx.trust, der, { role: "client" }).then(
          (peer) => (entry.validated = { peer, key: peer.key }),
          (error) => {
            throw authorRefused(error, message.type);
          },
        ),
      };
      return entry;
    });
    if (admitted.validated) return this.#checkSignature(admitted.validated, message, certDer);
    return admitted.validation.then((author) => this.#checkSignature(author, message, certDer));
  }

  /**
   * Steps 3–5 of §12.6 (3–4 of §6.4): every record's addressing, every envelope, then the
   * author's signature — over the relay's root from its records and proof, or a stored
   * record's own (may wait, for WebCrypto's ECDSA).
   */
  #checkSignature(
    { peer, key }: Author,
    message: Forwarded,
    certDer: Uint8Array | undefined,
  ): RelayedMessage | Promise<RelayedMessage> {
    const stored = message.type === "stored";
    const items: Item[] = stored
      ? [{ record: decodeRecord(message.record), key: carrierOf(message) }]
      : message.records.map((item) => ({
        record: decodeRecord(item.record),
        key: carrierOf(item),
      }));
    // §12.6 step 3 for every record, then step 4 for every record (review15 R4).
    for (const { record } of items) {
      if (record.dir !== "c2s" || (record.to !== this.#me && (stored || record.to !== LOBBY))) {
        throw new SecureChatError(
          "TAMPERED",
          `${message.type} record is addressed ${record.dir} to ${
            record.to.slice(0, 80)
          }, not to us`,
        );
      }
    }
    for (const { record, key } of items) {
      if ("e2e" in key && !envelopeFits(key.e2e, record.to)) {
        // The server must have refused it from the author (§12.6): relaying it is its fault.
        throw new SecureChatError(
          "PROTOCOL_ERROR",
          `a ${key.e2e.kind} envelope relayed on a record to ${record.to.slice(0, 80)}`,
        );
      }
    }
    const author = { fingerprint: message.author_fp, key };
    let group: RelayGroup | undefined;
    let signing: Promise<void> | undefined;
    if (message.type === "stored") {
      if (!items[0].record.sig) {
        throw new SecureChatError("PROTOCOL_ERROR", "a stored record without its signature");
      }
      signing = this.#signatures.checkNow(
        author,
        items[0].record,
        `${peer.commonName}'s stored record`,
      );
    } else {
      group = {
        sig: fromBase64(message.sig),
        first: message.first,
        n: message.n,
        proof: message.proof.map(fromBase64),
      };
      signing = this.#signatures.checkGroupNow(
        author,
        items.map((item) => item.record),
        group,
        `${peer.commonName}'s relay`,
      );
    }
    const fresh = () => this.#checkFresh(peer, message, items, certDer, group);
    return signing ? signing.then(fresh) : fresh();
  }

  /**
   * Step 6, freshness, for every record before any unwrap (§6.4 step 6, §6.6 step 6'); then,
   * record by record in seqno order, the content key (may wait, for an end-to-end unwrap) and
   * the content: a record this device accepted in an earlier session is recorded but neither
   * shown nor unwrapped again — its ratchet key was used up, so a second unwrap would fail
   * REPLAY and show a line already shown as unreadable, each time a lost acknowledgement (§6.6)
   * or a failover replay (§6.4 step 7) legitimately repeats it. The marks are committed only
   * once every record of the message has passed: a message refused part way leaves none.
   */
  #checkFresh(
    peer: ValidatedPeer,
    message: Forwarded,
    items: readonly Item[],
    certDer: Uint8Array | undefined,
    group: RelayGroup | undefined,
  ): RelayedMessage | Promise<RelayedMessage> {
    const stored = message.type === "stored";
    const { sessionTime, maxSkewMs } = this.ctx;
    let last = 0;
    for (const { record } of items) {
      // A live relay is never older than our session; a stored one is never older than any
      // queue keeps it (§6.6), and the marks of private records are kept that long.
      if (!stored && record.ts < sessionTime - maxSkewMs) {
        throw new SecureChatError(
          "REPLAY",
          `relayed record from ${peer.commonName} was written before this session began`,
        );
      }
      if (stored && record.ts < message.ts - MAX_STORED_AGE_MS - maxSkewMs) {
        throw new SecureChatError(
          "REPLAY",
          `stored record from ${peer.commonName} is older than any queue keeps one`,
        );
      }
      if (record.ts > message.ts + maxSkewMs) {
        throw new SecureChatError("STALE", "relayed record is dated after its relay");
      }
      // The relay's records are one author session's, seqnos increasing (its schema).
      last ||= this.#inSession.get(`${message.author_fp}/${record.sid}`) ?? 0;
      if (record.seqno <= last) {
        throw new SecureChatError(
          "REPLAY",
          `relayed record ${record.sid.slice(0, 8)}…/${record.seqno} repeats one of this session`,
        );
      }
      last = record.seqno;
    }
    const texts: RelayedText[] = [];
    const done = (): RelayedMessage => {
      this.#commit(message.author_fp, texts);
      return group ? { texts, group } : { texts };
    };
    for (let j = 0; j < items.length; j++) {
      const opening = this.#open(peer, message, items[j], certDer);
      if (opening instanceof Promise) {
        return this.#openRest(opening, j, peer, message, items, certDer, texts, done);
      }
      texts.push(opening);
    }
    return done();
  }

  /** The rest of a message's records, from the one whose unwrap had to be waited for. */
  async #openRest(
    opening: Promise<RelayedText>,
    from: number,
    peer: ValidatedPeer,
    message: Forwarded,
    items: readonly Item[],
    certDer: Uint8Array | undefined,
    texts: RelayedText[],
    done: () => RelayedMessage,
  ): Promise<RelayedMessage> {
    texts.push(await opening);
    for (let j = from + 1; j < items.length; j++) {
      texts.push(await this.#open(peer, message, items[j], certDer));
    }
    return done();
  }

  /** Steps 7–11 of §12.6 (§6.4 steps 5 and 7 with `k`) for one record that passed 1–6. */
  #open(
    peer: ValidatedPeer,
    message: Forwarded,
    { record, key }: Item,
    certDer: Uint8Array | undefined,
  ): RelayedText | Promise<RelayedText> {
    const duplicate = this.ctx.seen.has(message.author_fp, record.sid, record.seqno);
    const accept = (outcome: ContentKeyOutcome) =>
      this.#accept(peer, message, record, key, certDer, duplicate, outcome);
    if (!("e2e" in key)) return accept({ k: fromBase64(key.k) });
    if (duplicate) return accept({ undecryptable: "received in an earlier session already" });
    if (!this.ctx.unwrap) {
      return accept({
        undecryptable: "this client has no end-to-end keys, so it cannot read this message",
      });
    }
    return this.#unwrap(this.ctx.unwrap, peer, record, key.e2e).then(accept);
  }

  async #unwrap(
    unwrap: E2eUnwrap,
    peer: ValidatedPeer,
    record: MessageRecord,
    e2e: E2eEnvelope,
  ): Promise<ContentKeyOutcome> {
    try {
      return { k: await unwrap(peer, record, e2e) };
    } catch (error) {
      // Lost, older or unknown state is this device's situation, not the peer's
      // misbehaviour: the record is signed and recorded, and the user told so. So is a wrap
      // whose message key this device used already (REPLAY from the chain, §12.4): the record
      // itself passed the replay checks above, so it is new here, and only its envelope is
      // spent — a crash between saving the end-to-end state and the marks does that, and
      // ending the session would end every later one on the same re-delivered record.
      const code = codeOf(error);
      if (code !== "DECRYPT_FAIL" && code !== "REPLAY") throw error;
      return {
        undecryptable: code === "REPLAY"
          ? `this device has no key for this message (it used that key already: ${
            (error as Error).message
          })`
          : (error as Error).message,
      };
    }
  }

  /** Step 5, the content (§6.4 step 5, §12.6 steps 10–11), of one record. */
  #accept(
    peer: ValidatedPeer,
    message: Forwarded,
    record: MessageRecord,
    carrier: Item["key"],
    certDer: Uint8Array | undefined,
    duplicate: boolean,
    outcome: ContentKeyOutcome,
  ): RelayedText {
    let k = "k" in outcome ? outcome.k : undefined;
    let text = "";
    let senderKey: SenderKeyUpdate | undefined;
    let malformed: string | undefined;
    const e2e = "e2e" in carrier ? carrier.e2e : undefined;
    if (k) {
      const opened = openBody(record, k, e2e !== undefined, peer.commonName);
      if ("malformed" in opened) {
        malformed = opened.malformed;
        k = undefined;
      } else if (opened.body.kind === "sender_key" && e2e) {
        senderKey = { fromDevice: e2e.from, body: opened.body };
        this.ctx.senderKey?.(peer.commonName, senderKey);
      } else if (opened.body.kind === "text") text = opened.body.text;
    }
    return {
      duplicate,
      stored: message.type === "stored",
      batchFirst: message.type === "stored" ? record.seqno - record.batch!.i : message.first,
      author: peer.commonName,
      fingerprint: message.author_fp,
      ...(certDer ? { certDer } : {}),
      text,
      private: record.to !== LOBBY,
      record,
      k,
      ...("undecryptable" in outcome ? { undecryptable: outcome.undecryptable } : {}),
      ...(malformed === undefined ? {} : { malformed }),
      ...(senderKey ? { senderKey } : {}),
    };
  }

  /** The marks of a message's records, once all of them passed. */
  #commit(fingerprint: string, texts: readonly RelayedText[]): void {
    for (const { record, duplicate } of texts) {
      this.#inSession.set(`${fingerprint}/${record.sid}`, record.seqno);
      if (!duplicate) {
        this.ctx.seen.accept(fingerprint, record.sid, record.seqno, record.ts, record.to !== LOBBY);
      }
    }
  }
}

/**
 * The body of a relayed record (PROTOCOL §6.4 step 5), or why an end-to-end line whose wrap
 * opened cannot be shown (§12.6 steps 10–11).
 * @throws DECRYPT_FAIL, TAMPERED, PROTOCOL_ERROR for a record with `k`
 */
function openBody(
  record: MessageRecord,
  k: Uint8Array,
  endToEnd: boolean,
  author: string,
): { body: Body } | { malformed: string } {
  try {
    const body = openContent(record, k);
    if (!bodyFits(body, "c2s", record.to, endToEnd)) {
      throw new SecureChatError("PROTOCOL_ERROR", `relayed a ${body.kind} to ${record.to}`);
    }
    return { body };
  } catch (error) {
    // With `k` the server checked the content itself (§6.3 steps 5–6): its fault. With `e2e`
    // it could not, and the signature and the wrap (bound to the signed statement) make `k`
    // the author's: ending our session with the server would let any author cut every
    // recipient off, again at every reconnect.
    if (!endToEnd || !(error instanceof SecureChatError)) throw error;
    return {
      malformed: `${author} sent a line this client cannot show (${error.code}: ${error.message})`,
    };
  }
}
