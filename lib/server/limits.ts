/**
 * Admission limits (PROTOCOL §8.2): caps on connections with slots kept for sessions,
 * a handshake rate per address checked before any signature work, and slow-downs for
 * failed logins.
 * All state is bounded: entries expire and the maps are pruned.
 */
import { SecureChatError } from "../errors.ts";
import type { FailureCount, LoginFailureStore } from "../store/login_failures.ts";

/** A token bucket: `burst` tokens, refilled at `perSecond`. */
export class TokenBucket {
  #tokens: number;
  #updated: number;
  constructor(readonly burst: number, readonly perSecond: number, now = Date.now()) {
    this.#tokens = burst;
    this.#updated = now;
  }

  take(now = Date.now()): boolean {
    this.#tokens = Math.min(
      this.burst,
      this.#tokens + ((now - this.#updated) / 1000) * this.perSecond,
    );
    this.#updated = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Gives back one token taken earlier (never above the burst). */
  refund(): void {
    this.#tokens = Math.min(this.burst, this.#tokens + 1);
  }

  full(now = Date.now()): boolean {
    return this.#tokens + ((now - this.#updated) / 1000) * this.perSecond >= this.burst;
  }
}

export interface AdmissionLimits {
  maxConnections: number;
  /** Connections from one address that have not completed their handshake. */
  maxConnectionsPerAddress: number;
  /**
   * Connections still in their handshake, at most (issue 11 item 7): the rest of
   * maxConnections is kept for sessions that completed theirs.
   */
  maxPending: number;
  /** From this many handshakes in progress on, a hello must echo a cookie (0: always). */
  cookieThreshold: number;
  handshakeBurst: number;
  handshakesPerSecond: number;
}

export const DEFAULT_ADMISSION: AdmissionLimits = {
  maxConnections: 2048,
  maxConnectionsPerAddress: 64,
  maxPending: 512,
  cookieThreshold: 64,
  handshakeBurst: 20,
  handshakesPerSecond: 10,
};

/** One admitted connection's place: pending until its handshake completes. */
export interface Slot {
  /** The handshake completed: the connection holds a session slot, which is never shed. */
  established(): void;
  /** The connection ended (idempotent). */
  release(): void;
}

interface PendingSlot {
  address: string;
  shed: () => void;
}

/**
 * Connection admission. Sessions that completed their handshake keep their slots; under
 * pressure (all slots, or maxPending, taken) a new connection sheds a pending one instead
 * of being refused: the oldest pending connection of the address holding the most, so a
 * flood from a few addresses sheds itself, and an honest user's one handshake in progress
 * is shed last. Only when every slot holds a session is a new connection refused.
 */
export class Admission {
  #open = 0;
  /** Pending connections per address, oldest first (a Set keeps insertion order). */
  readonly #pending = new Map<string, Set<PendingSlot>>();
  #pendingCount = 0;
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(readonly limits: AdmissionLimits = DEFAULT_ADMISSION) {}

  get open(): number {
    return this.#open;
  }

  get pending(): number {
    return this.#pendingCount;
  }

  /** Whether hellos must carry a cookie now (PROTOCOL §5.1). */
  underLoad(): boolean {
    return this.#pendingCount >= this.limits.cookieThreshold;
  }

  /**
   * Counts a new connection in, shedding a pending one if the server is full, or refuses it.
   * `shed` closes this connection if it is later shed itself.
   * @throws TOO_MANY_CONNECTIONS when the address has too many pending, or every slot
   *   holds a session
   */
  connect(client: string, shed: () => void): Slot {
    const address = addressBlock(client);
    const mine = this.#pending.get(address)?.size ?? 0;
    if (mine >= this.limits.maxConnectionsPerAddress) {
      throw new SecureChatError(
        "TOO_MANY_CONNECTIONS",
        "connection limit for this address reached",
      );
    }
    if (this.#open >= this.limits.maxConnections || this.#pendingCount >= this.limits.maxPending) {
      const victim = this.#heaviestOldest();
      if (!victim) {
        throw new SecureChatError("TOO_MANY_CONNECTIONS", "server connection limit reached");
      }
      this.#unpend(victim);
      this.#open--;
      victim.shed();
    }
    const slot: PendingSlot = { address, shed };
    let set = this.#pending.get(address);
    if (!set) this.#pending.set(address, set = new Set());
    set.add(slot);
    this.#pendingCount++;
    this.#open++;
    let state: "pending" | "established" | "gone" = "pending";
    return {
      established: () => {
        if (state !== "pending") return;
        state = "established";
        this.#unpend(slot);
      },
      release: () => {
        if (state === "gone") return;
        // A shed slot was already counted out when it was shed.
        if (state === "pending" && !this.#unpend(slot)) return void (state = "gone");
        state = "gone";
        this.#open--;
      },
    };
  }

  /** @returns false when the slot was no longer pending (it was shed) */
  #unpend(slot: PendingSlot): boolean {
    const set = this.#pending.get(slot.address);
    if (!set?.delete(slot)) return false;
    if (set.size === 0) this.#pending.delete(slot.address);
    this.#pendingCount--;
    return true;
  }

  #heaviestOldest(): PendingSlot | undefined {
    let heaviest: Set<PendingSlot> | undefined;
    for (const set of this.#pending.values()) {
      if (!heaviest || set.size > heaviest.size) heaviest = set;
    }
    return heaviest?.values().next().value;
  }

  /**
   * Called on a well-formed hello, before the server signs anything.
   * @throws RATE_LIMITED
   */
  admitHandshake(client: string, now = Date.now()): void {
    const address = addressBlock(client);
    let bucket = this.#buckets.get(address);
    if (!bucket) {
      if (this.#buckets.size > 10_000) this.#prune(now);
      bucket = new TokenBucket(this.limits.handshakeBurst, this.limits.handshakesPerSecond, now);
      this.#buckets.set(address, bucket);
    }
    if (!bucket.take(now)) {
      throw new SecureChatError("RATE_LIMITED", "too many handshakes from this address");
    }
  }

  /** The operator forgives an address: its handshake budget is full again. */
  resetHandshakes(client: string): void {
    this.#buckets.delete(addressBlock(client));
  }

  /**
   * The client proved its certificate: its hello is no longer charged to the address
   * (issue 11 item 5), so only unauthenticated handshakes spend an address's budget and
   * many users behind one NAT can all log in.
   */
  refundHandshake(client: string): void {
    this.#buckets.get(addressBlock(client))?.refund();
  }

  #prune(now: number): void {
    for (const [address, bucket] of this.#buckets) {
      if (bucket.full(now)) this.#buckets.delete(address);
    }
  }
}

/**
 * What a per-address limit counts an address as (PROTOCOL §8.2): an IPv4 address as itself, an
 * IPv6 address by its /64 — the block one subscriber, host or virtual machine is given, so a
 * client choosing among its 2^64 addresses cannot multiply its caps and budgets — and an
 * IPv4-mapped IPv6 address (a dual-stack listener's, or a PROXY header's) as the IPv4 address
 * it maps. A text that is no IP address (the caller's own name for a peer) counts as itself.
 */
export function addressBlock(address: string): string {
  if (!address.includes(":")) return address;
  const groups = ipv6Groups(address.split("%")[0]); // a zone (fe80::1%eth0) names our interface
  if (!groups) return address;
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return [groups[6] >> 8, groups[6] & 0xff, groups[7] >> 8, groups[7] & 0xff].join(".");
  }
  return `${groups.slice(0, 4).map((group) => group.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address in text (RFC 4291 §2.2), or undefined. */
function ipv6Groups(text: string): number[] | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = groupsOf(halves[0]);
  const tail = halves.length === 2 ? groupsOf(halves[1]) : [];
  if (!head || !tail) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const zeros = 8 - head.length - tail.length;
  if (zeros < 1) return undefined;
  return [...head, ...new Array<number>(zeros).fill(0), ...tail];
}

/** The groups of one side of `::`: hex groups, the last of which may be a dotted IPv4 address. */
function groupsOf(part: string): number[] | undefined {
  if (part === "") return [];
  const pieces = part.split(":");
  const groups: number[] = [];
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i];
    if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
      groups.push(parseInt(piece, 16));
      continue;
    }
    const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(piece);
    if (!v4 || i !== pieces.length - 1) return undefined;
    const [a, b, c, d] = v4.slice(1).map(Number);
    if (Math.max(a, b, c, d) > 255) return undefined;
    groups.push((a << 8) | b, (c << 8) | d);
  }
  return groups;
}

export interface LoginThrottleOptions {
  /** Delay before answering, doubled per recent failure from the first. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Failures after which attempts are refused outright until the window passes. */
  lockoutFailures: number;
  windowMs: number;
}

export const DEFAULT_LOGIN_THROTTLE: LoginThrottleOptions = {
  baseDelayMs: 250,
  maxDelayMs: 8000,
  lockoutFailures: 20,
  windowMs: 15 * 60 * 1000,
};

/** Who is trying: the certificate (its fingerprint) and, for a login, the account's canonical name. */
export interface LoginSubject {
  certificate: string;
  /** The canonical user name the certificate claims, for an operator's unlock (default: account). */
  user?: string;
  account?: string;
}

/** One reserved password check; exactly one of its three outcomes must be reported. */
export interface LoginAttempt {
  /** Wait this long before checking the password. */
  readonly delayMs: number;
  /**
   * The check failed (wrong password, a refused registration): the failure is recorded in the
   * store, then the reservation ends.
   * @throws DB_UNAVAILABLE the store could not record it (the reservation ends all the same)
   */
  failed(now?: number): Promise<void>;
  /** The check passed: the certificate's own count is cleared. @throws DB_UNAVAILABLE */
  succeeded(): Promise<void>;
  /** Nothing was decided (the database was down): the reservation is dropped uncounted. */
  released(): Promise<void>;
}

/**
 * Failed-login slow-down and lockout (issue 11 items 4 and 5), per certificate and per
 * account — never per address, so one user on a shared NAT cannot lock out the others.
 *
 * An attempt is reserved before the password is hashed and counts as a failure until it
 * is decided, so concurrent guesses cannot all pass the check. With N = lockoutFailures:
 *   - a certificate is refused once it has N failed or undecided checks in the window;
 *   - an account with N failed or undecided checks refuses every certificate that itself
 *     has one, while a certificate with none is always let through to the password check.
 * So a certificate never gets more than N password checks per window, however many it
 * sends at once, and an account sees at most N + (its other certificates) failed checks
 * per window; a correct password from a certificate that has not failed is never refused.
 * The window restarts at each failure (it ends windowMs after the last one).
 *
 * Decided failures live in the store (lib/store/login_failures.ts), shared by every node of a
 * cluster and by `securechat user unlock`; reservations live in this node's memory, because a
 * reservation in the database would outlive a node killed while holding it. Every read and
 * write of a subject's count on this node is serialised by a lock per subject, and a failure
 * is recorded before its reservation ends, so on one node the count read is never below the
 * truth: the race the reservation closes stays closed. Across k nodes at most k × N checks of
 * one certificate can be undecided at once (PROTOCOL §8.2).
 */
export class LoginThrottle {
  /** This node's undecided attempts per subject. */
  readonly #pending = new Map<string, number>();
  readonly #locks = new SubjectLocks();
  #prunedAt = 0;

  constructor(
    readonly failures: LoginFailureStore,
    readonly options: LoginThrottleOptions = DEFAULT_LOGIN_THROTTLE,
  ) {}

  /**
   * Reserves one password check for `who`.
   * @throws RATE_LIMITED when the certificate, or the account for a certificate that has
   *   failed, is locked out
   * @throws DB_UNAVAILABLE the counts cannot be read (nothing is reserved)
   */
  async begin(who: LoginSubject, now = Date.now()): Promise<LoginAttempt> {
    const { lockoutFailures, baseDelayMs, maxDelayMs, windowMs } = this.options;
    const certKey = `cert:${who.certificate}`;
    const accountKey = who.account === undefined ? undefined : `account:${who.account}`;
    const subjects = accountKey === undefined ? [certKey] : [certKey, accountKey];
    const user = who.user ?? who.account ?? null;
    this.#prune(now);
    let stored: Map<string, FailureCount>;
    let mine: number;
    let account: number;
    const unlock = await this.#locks.lock(subjects);
    try {
      stored = await this.failures.read(subjects);
      const count = (key: string) => this.#recent(stored.get(key), now) + this.#pendingOf(key);
      mine = count(certKey);
      account = accountKey === undefined ? 0 : count(accountKey);
      if (mine >= lockoutFailures) {
        throw new SecureChatError(
          "RATE_LIMITED",
          "too many failed logins with this certificate; try again later",
        );
      }
      if (mine > 0 && account >= lockoutFailures) {
        throw new SecureChatError(
          "RATE_LIMITED",
          "too many failed logins for this account; try again later",
        );
      }
      for (const key of subjects) this.#pending.set(key, this.#pendingOf(key) + 1);
    } finally {
      unlock();
    }
    const certFailed = this.#recent(stored.get(certKey), now) > 0;
    const recent = mine === 0 ? 0 : Math.max(mine, account);
    let decided = false;
    const decide = async (record?: () => Promise<void>) => {
      if (decided) return;
      decided = true;
      const release = record ? await this.#locks.lock(subjects) : undefined;
      try {
        await record?.();
      } finally {
        for (const key of subjects) {
          const left = this.#pendingOf(key) - 1;
          if (left > 0) this.#pending.set(key, left);
          else this.#pending.delete(key);
        }
        release?.();
      }
    };
    return {
      delayMs: recent === 0 ? 0 : Math.min(maxDelayMs, baseDelayMs * 2 ** (recent - 1)),
      failed: (at = Date.now()) => decide(() => this.failures.fail(subjects, user, at, windowMs)),
      // The account's count stays: another certificate's failures are not forgiven by this one.
      succeeded: () => decide(certFailed ? () => this.failures.clear([certKey]) : undefined),
      released: () => decide(),
    };
  }

  /**
   * The operator forgives `user` (canonical name): the account's count and that of every
   * certificate that claimed the user are cleared, for every node on the store.
   * @returns how many counts were cleared
   * @throws DB_UNAVAILABLE
   */
  async unlock(user: string): Promise<number> {
    return await this.failures.unlock(user);
  }

  #pendingOf(key: string): number {
    return this.#pending.get(key) ?? 0;
  }

  #recent(count: FailureCount | undefined, now: number): number {
    return count && now - count.last < this.options.windowMs ? count.failures : 0;
  }

  /**
   * Counts whose window has passed count for nothing; once per window they are dropped. A
   * failed prune is only tidiness missed, and the next window tries again.
   */
  #prune(now: number): void {
    if (now - this.#prunedAt < this.options.windowMs) return;
    this.#prunedAt = now;
    this.failures.prune(now - this.options.windowMs).catch(() => {});
  }
}

/** Per-subject mutual exclusion: a waiter gets the lock when every earlier holder let go. */
class SubjectLocks {
  readonly #tails = new Map<string, Promise<void>>();

  /**
   * Takes the lock of every subject, in the order given (callers list a certificate before an
   * account, so no two callers wait on each other in a cycle).
   * @returns the release of them all
   */
  async lock(subjects: readonly string[]): Promise<() => void> {
    const releases: (() => void)[] = [];
    for (const subject of subjects) releases.push(await this.#lockOne(subject));
    return () => releases.reverse().forEach((release) => release());
  }

  async #lockOne(subject: string): Promise<() => void> {
    const previous = this.#tails.get(subject) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => release = resolve);
    const tail = previous.then(() => mine);
    this.#tails.set(subject, tail);
    await previous;
    return () => {
      release();
      if (this.#tails.get(subject) === tail) this.#tails.delete(subject);
    };
  }
}
