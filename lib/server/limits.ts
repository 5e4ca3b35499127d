/**
 * Admission limits (PROTOCOL §8.2): caps on connections, a handshake rate per
 * address checked before any signature work, and slow-downs for failed logins.
 * All state is bounded: entries expire and the maps are pruned.
 */
import { SecureChatError } from "../errors.ts";

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

  full(now = Date.now()): boolean {
    return this.#tokens + ((now - this.#updated) / 1000) * this.perSecond >= this.burst;
  }
}

export interface AdmissionLimits {
  maxConnections: number;
  maxConnectionsPerAddress: number;
  handshakeBurst: number;
  handshakesPerSecond: number;
}

export const DEFAULT_ADMISSION: AdmissionLimits = {
  maxConnections: 2048,
  maxConnectionsPerAddress: 64,
  handshakeBurst: 20,
  handshakesPerSecond: 10,
};

export class Admission {
  #open = 0;
  readonly #perAddress = new Map<string, number>();
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(readonly limits: AdmissionLimits = DEFAULT_ADMISSION) {}

  get open(): number {
    return this.#open;
  }

  /**
   * Counts a new connection in, or refuses it.
   * @throws TOO_MANY_CONNECTIONS
   */
  connect(address: string): void {
    const mine = this.#perAddress.get(address) ?? 0;
    if (this.#open >= this.limits.maxConnections) {
      throw new SecureChatError("TOO_MANY_CONNECTIONS", "server connection limit reached");
    }
    if (mine >= this.limits.maxConnectionsPerAddress) {
      throw new SecureChatError(
        "TOO_MANY_CONNECTIONS",
        "connection limit for this address reached",
      );
    }
    this.#open++;
    this.#perAddress.set(address, mine + 1);
  }

  disconnect(address: string): void {
    this.#open--;
    const mine = (this.#perAddress.get(address) ?? 1) - 1;
    if (mine <= 0) this.#perAddress.delete(address);
    else this.#perAddress.set(address, mine);
  }

  /**
   * Called on a well-formed hello, before the server signs anything.
   * @throws RATE_LIMITED
   */
  admitHandshake(address: string, now = Date.now()): void {
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

  #prune(now: number): void {
    for (const [address, bucket] of this.#buckets) {
      if (bucket.full(now)) this.#buckets.delete(address);
    }
  }
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

/** Slows down repeated failed logins, per user name and per address. */
export class LoginThrottle {
  readonly #failures = new Map<string, { count: number; last: number }>();

  constructor(readonly options: LoginThrottleOptions = DEFAULT_LOGIN_THROTTLE) {}

  /**
   * The delay to apply before checking this attempt.
   * @throws RATE_LIMITED when either key is locked out
   */
  delayFor(keys: string[], now = Date.now()): number {
    const count = Math.max(0, ...keys.map((key) => this.#recent(key, now)));
    if (count >= this.options.lockoutFailures) {
      throw new SecureChatError("RATE_LIMITED", "too many failed logins; try again later");
    }
    if (count === 0) return 0;
    return Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (count - 1));
  }

  failed(keys: string[], now = Date.now()): void {
    if (this.#failures.size > 100_000) this.#prune(now);
    for (const key of keys) {
      this.#failures.set(key, { count: this.#recent(key, now) + 1, last: now });
    }
  }

  succeeded(keys: string[]): void {
    for (const key of keys) this.#failures.delete(key);
  }

  #recent(key: string, now: number): number {
    const entry = this.#failures.get(key);
    return entry && now - entry.last < this.options.windowMs ? entry.count : 0;
  }

  #prune(now: number): void {
    for (const [key, entry] of this.#failures) {
      if (now - entry.last >= this.options.windowMs) this.#failures.delete(key);
    }
  }
}
