/**
 * Stateless hello cookies (PROTOCOL §5.1, issue 11 item 7), after DTLS's
 * HelloVerifyRequest and WireGuard's cookie reply: under load the server answers a `hello`
 * with `retry` carrying a cookie, and does the expensive part (key agreement, signature)
 * only for a hello that echoes a valid one. The server keeps no per-client state: a cookie
 * is a MAC, under a secret that rotates, over the client's address, the time, and the
 * hello's own fields, so it cannot be moved to another address or another hello.
 *
 *   cookie = u64be(t) || HMAC-SHA-256(secret, COOKIE_LABEL || lp(address) || u64be(t)
 *            || u16be(version) || nonce || lp(groups joined by ",") || lp(group) || lp(pub))
 *
 * where t is the server's time in milliseconds and lp(x) = u32be(len(x)) || x.
 */
import { hmacSha256 } from "#sync-crypto";
import { concat, randomBytes, timingSafeEqual, u32be, u64be, utf8 } from "../bytes.ts";

export const COOKIE_LABEL = "securechat/v1 hello cookie";
/** A cookie is accepted this long after it was made (a handshake takes at most 10 s). */
export const COOKIE_LIFETIME_MS = 30_000;
export const COOKIE_BYTES = 8 + 32;

/** The parts of a hello a cookie covers: everything but the cookie itself. */
export interface CookieHello {
  version: number;
  nonce: Uint8Array;
  groups: readonly string[];
  key_share: { group: string; pub: Uint8Array };
}

const lp = (bytes: Uint8Array) => concat(u32be(bytes.length), bytes);

export class CookieJar {
  #secret = randomBytes(32);
  #previous = randomBytes(32);
  #rotatedAt: number;

  constructor(now = Date.now()) {
    this.#rotatedAt = now;
  }

  issue(address: string, hello: CookieHello, now = Date.now()): Uint8Array {
    this.#rotate(now);
    return concat(u64be(now), this.#mac(this.#secret, address, now, hello));
  }

  /** Whether `cookie` was issued by us, to this address, for this hello, recently. */
  check(address: string, hello: CookieHello, cookie: Uint8Array, now = Date.now()): boolean {
    this.#rotate(now);
    if (cookie.length !== COOKIE_BYTES) return false;
    const t = Number(new DataView(cookie.buffer, cookie.byteOffset, 8).getBigUint64(0));
    if (t > now || now - t > COOKIE_LIFETIME_MS) return false;
    const mac = cookie.subarray(8);
    // Both secrets are tried whatever the first answer, so timing tells nothing about which.
    const current = timingSafeEqual(mac, this.#mac(this.#secret, address, t, hello));
    const previous = timingSafeEqual(mac, this.#mac(this.#previous, address, t, hello));
    return current || previous;
  }

  /** A secret serves for one lifetime, then one more as `previous`: no cookie outlives it. */
  #rotate(now: number): void {
    if (now - this.#rotatedAt < COOKIE_LIFETIME_MS) return;
    this.#previous = now - this.#rotatedAt < 2 * COOKIE_LIFETIME_MS
      ? this.#secret
      : randomBytes(32);
    this.#secret = randomBytes(32);
    this.#rotatedAt = now;
  }

  #mac(secret: Uint8Array, address: string, t: number, hello: CookieHello): Uint8Array {
    const version = new Uint8Array([hello.version >> 8, hello.version & 0xff]);
    const input = concat(
      utf8(COOKIE_LABEL),
      lp(utf8(address)),
      u64be(t),
      version,
      hello.nonce,
      lp(utf8(hello.groups.join(","))),
      lp(utf8(hello.key_share.group)),
      lp(hello.key_share.pub),
    );
    return hmacSha256(secret, input);
  }
}
