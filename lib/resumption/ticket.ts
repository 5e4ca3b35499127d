/**
 * Session resumption tickets (docs/DEPLOY.md §8): issued in `auth_ok` after a login, redeemed
 * by a `resume` in its place so a reconnect skips the password hash — after the full mutual
 * certificate authentication of phase 1, which a ticket never replaces. A ticket is sealed
 * under a key every node has (KeyRing), bound to the user, the client certificate and the
 * account's credential epoch (a password change retires every ticket issued before it), good
 * for TICKET_LIFETIME_MS and for one use (UsedTickets, shared by the nodes in a cluster).
 */
import { aesGcmOpen, aesGcmSeal } from "#sync-crypto";
import { z } from "zod";
import { concat, fromUtf8, randomBytes, toHex, u32be, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { MAX_TICKET_BYTES } from "../wire/messages.ts";

export const TICKET_LIFETIME_MS = 10 * 60 * 1000;
/** Ticket keys rotate every hour; a ticket is accepted under the current key and the one before. */
export const TICKET_KEY_PERIOD_MS = 60 * 60 * 1000;
const LABEL = utf8("securechat ticket v1");
const KID_BYTES = 4;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export interface KeyRing {
  /** The key id new tickets are sealed under, and its key. */
  current(now: number): Promise<{ kid: number; key: Uint8Array }>;
  /** The key for `kid`, or undefined when it is unknown or retired. */
  get(kid: number, now: number): Promise<Uint8Array | undefined>;
}

export interface UsedTickets {
  /** Records ticket `id` as used; false when it already was (a second use). */
  claim(id: string, expiresAt: number): Promise<boolean>;
}

const ClaimsSchema = z.object({
  user: z.string().min(1).max(64),
  /** Hex SHA-256 of the client certificate the ticket was issued to. */
  cert: z.string().regex(/^[0-9a-f]{64}$/),
  id: z.string().regex(/^[0-9a-f]{32}$/),
  exp: z.number().int().nonnegative(),
  /** The account's credential epoch when the ticket was issued (lib/store/user_store.ts). */
  epoch: z.number().int().nonnegative(),
}).strict();

export type TicketClaims = z.infer<typeof ClaimsSchema>;

export const kidAt = (now: number) => Math.floor(now / TICKET_KEY_PERIOD_MS);

export interface TicketStores {
  keys: KeyRing;
  used: UsedTickets;
}

/** One node on its own: keys and used ids in memory (a restart retires every ticket). */
export function memoryTicketStores(): TicketStores {
  return { keys: new MemoryKeyRing(), used: new MemoryUsedTickets() };
}

export class TicketAuthority {
  readonly keys: KeyRing;
  readonly used: UsedTickets;
  constructor(stores: TicketStores) {
    this.keys = stores.keys;
    this.used = stores.used;
  }

  /**
   * A ticket for `user` holding the certificate with SHA-256 `certFingerprint`, good while
   * the account's credential epoch stays `epoch`.
   */
  async issue(
    user: string,
    certFingerprint: string,
    epoch: number,
    now = Date.now(),
  ): Promise<Uint8Array> {
    const { kid, key } = await this.keys.current(now);
    const claims: TicketClaims = {
      user,
      cert: certFingerprint,
      id: toHex(randomBytes(16)),
      exp: now + TICKET_LIFETIME_MS,
      epoch,
    };
    const kidBytes = u32be(kid);
    const nonce = randomBytes(NONCE_BYTES);
    const sealed = aesGcmSeal(key, nonce, utf8(JSON.stringify(claims)), concat(LABEL, kidBytes));
    return concat(kidBytes, nonce, sealed);
  }

  /**
   * Checks a ticket for `user` presenting the certificate with SHA-256 `certFingerprint`
   * against the account's current credential epoch (null: no such account any more), and
   * uses it up.
   * @throws AUTH_FAIL unknown key, tampered, expired, another user's or certificate's, issued
   *   before the password last changed (or for a deleted account), or used
   */
  async redeem(
    ticket: Uint8Array,
    user: string,
    certFingerprint: string,
    epoch: number | null,
    now = Date.now(),
  ): Promise<void> {
    const claims = await this.#open(ticket, now);
    if (claims.exp <= now) fail("the resumption ticket has expired");
    if (claims.user !== user || claims.cert !== certFingerprint) {
      fail("the resumption ticket belongs to another user or certificate");
    }
    if (claims.epoch !== epoch) {
      fail("the resumption ticket was issued before the account's password last changed");
    }
    if (!await this.used.claim(claims.id, claims.exp)) {
      fail("the resumption ticket was already used");
    }
  }

  async #open(ticket: Uint8Array, now: number): Promise<TicketClaims> {
    if (ticket.length < KID_BYTES + NONCE_BYTES + TAG_BYTES || ticket.length > MAX_TICKET_BYTES) {
      fail("malformed resumption ticket");
    }
    const kidBytes = ticket.subarray(0, KID_BYTES);
    const kid = new DataView(kidBytes.buffer, kidBytes.byteOffset).getUint32(0);
    const key = await this.keys.get(kid, now);
    if (!key) fail("the resumption ticket's key is unknown or retired");
    const nonce = ticket.subarray(KID_BYTES, KID_BYTES + NONCE_BYTES);
    let plain: Uint8Array;
    try {
      plain = aesGcmOpen(
        key,
        nonce,
        ticket.subarray(KID_BYTES + NONCE_BYTES),
        concat(LABEL, kidBytes),
      );
    } catch {
      return fail("the resumption ticket does not open");
    }
    const parsed = ClaimsSchema.safeParse(safeJson(plain));
    if (!parsed.success) fail("the resumption ticket's contents are malformed");
    return parsed.data;
  }
}

/** One node on its own: a random key per period, in memory (a restart retires every ticket). */
export class MemoryKeyRing implements KeyRing {
  readonly #keys = new Map<number, Uint8Array>();
  current(now: number): Promise<{ kid: number; key: Uint8Array }> {
    const kid = kidAt(now);
    let key = this.#keys.get(kid);
    if (!key) {
      key = randomBytes(32);
      this.#keys.set(kid, key);
      for (const old of this.#keys.keys()) if (old < kid - 1) this.#keys.delete(old);
    }
    return Promise.resolve({ kid, key });
  }
  get(kid: number, now: number): Promise<Uint8Array | undefined> {
    const current = kidAt(now);
    return Promise.resolve(
      kid === current || kid === current - 1 ? this.#keys.get(kid) : undefined,
    );
  }
}

/** One node on its own: used ticket ids in memory until they expire. */
export class MemoryUsedTickets implements UsedTickets {
  readonly #used = new Map<string, number>();
  claim(id: string, expiresAt: number): Promise<boolean> {
    const now = Date.now();
    if (this.#used.size > 10_000) {
      for (const [old, exp] of this.#used) if (exp <= now) this.#used.delete(old);
    }
    if (this.#used.has(id)) return Promise.resolve(false);
    this.#used.set(id, expiresAt);
    return Promise.resolve(true);
  }
}

function safeJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(fromUtf8(bytes));
  } catch {
    return undefined;
  }
}

function fail(message: string): never {
  throw new SecureChatError("AUTH_FAIL", message);
}
