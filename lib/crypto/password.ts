/**
 * Password hashing for the user store: PBKDF2-HMAC-SHA256 through WebCrypto, which Deno runs
 * off the JavaScript thread, so a hash in progress never stalls other sessions.
 *
 * Parameters travel with every hash (scheme, iterations, salt) so that the cost can be raised
 * later: rows hashed under older parameters still verify and `needsRehash()` says to upgrade them.
 */
import { SecureChatError } from "../errors.ts";
import { randomBytes, sha256, timingSafeEqual, utf8, wipe } from "../bytes.ts";

/** OWASP Password Storage Cheat Sheet (2023 onwards): PBKDF2-HMAC-SHA256, 600,000 iterations. */
export const PBKDF2_ITERATIONS = 600_000;
export const SALT_BYTES = 16;
const HASH_BYTES = 32;

export const PASSWORD_MIN_BYTES = 8;
/** Hashes waiting for a slot beyond this are refused: the server is saturated, not slow. */
export const MAX_WAITING_HASHES = 1024;
export const PASSWORD_MAX_BYTES = 1024;

/**
 * `pbkdf2-sha256`: PBKDF2-HMAC-SHA256(NFC(password), salt, iterations), 32 bytes.
 * `seed-sha256`: the seed's legacy SHA-256(salt || password), iterations 1; verify only.
 */
export interface PasswordHash {
  scheme: "pbkdf2-sha256" | "seed-sha256";
  iterations: number;
  salt: Uint8Array;
  hash: Uint8Array;
}

/**
 * Applies the rules for a new password: 8–1024 bytes of UTF-8 after NFC normalisation.
 * @throws INVALID_INPUT when it breaks them (the message never contains the password)
 */
export function checkNewPassword(password: string): void {
  const length = utf8(password.normalize("NFC")).length;
  if (length < PASSWORD_MIN_BYTES || length > PASSWORD_MAX_BYTES) {
    throw new SecureChatError(
      "INVALID_INPUT",
      `password must be ${PASSWORD_MIN_BYTES} to ${PASSWORD_MAX_BYTES} bytes of UTF-8`,
    );
  }
}

/**
 * Applies the rules for a user's own password change (PROTOCOL §6.7): the new password's
 * rules, and that it differs from the old one (after NFC, as they are hashed). The client
 * checks this before sending and the store again before changing anything.
 * @throws INVALID_INPUT (the message never contains either password)
 */
export function checkPasswordChange(oldPassword: string, newPassword: string): void {
  checkNewPassword(newPassword);
  if (oldPassword.normalize("NFC") === newPassword.normalize("NFC")) {
    throw new SecureChatError("INVALID_INPUT", "the new password is the same as the old one");
  }
}

/**
 * Hashes a password under the current parameters with a fresh random salt.
 * It does not apply the length rules (`checkNewPassword` does), because a login that upgrades
 * a legacy row must re-hash whatever password that row was made with.
 */
export async function hashPassword(password: string): Promise<PasswordHash> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await pbkdf2(password, salt, PBKDF2_ITERATIONS);
  return { scheme: "pbkdf2-sha256", iterations: PBKDF2_ITERATIONS, salt, hash };
}

/**
 * Whether `password` matches `stored`, compared in constant time.
 * @throws INTERNAL when the stored parameters are unusable (a corrupt row, not a wrong password)
 */
export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  let candidate: Uint8Array;
  if (stored.scheme === "pbkdf2-sha256") {
    if (!Number.isSafeInteger(stored.iterations) || stored.iterations < 1) {
      throw new SecureChatError("INTERNAL", "stored password hash has invalid iterations");
    }
    candidate = await pbkdf2(password, stored.salt, stored.iterations);
  } else if (stored.scheme === "seed-sha256") {
    // The seed hashed the password as typed, without normalising it.
    candidate = await sha256(stored.salt, utf8(password));
  } else {
    throw new SecureChatError("INTERNAL", "stored password hash has an unknown scheme");
  }
  return timingSafeEqual(candidate, stored.hash);
}

/** Whether a hash was made under weaker parameters than `hashPassword` uses now. */
export function needsRehash(stored: PasswordHash): boolean {
  return stored.scheme !== "pbkdf2-sha256" || stored.iterations < PBKDF2_ITERATIONS;
}

/**
 * A counting semaphore around PBKDF2 (issue 11 item 6): at most `limit` hashes run at once,
 * so password checks (cores − 1 by default) always leave a core for the sessions already in,
 * and a burst of logins queues instead of starving the event loop's thread pool.
 */
export class HashSlots {
  #active = 0;
  #peak = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** The most hashes that ran at once since the last `resetPeak()`. */
  get peak(): number {
    return this.#peak;
  }

  resetPeak(): void {
    this.#peak = this.#active;
  }

  /** @throws RATE_LIMITED when MAX_WAITING_HASHES are already queued */
  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) {
      if (this.#waiting.length >= MAX_WAITING_HASHES) {
        throw new SecureChatError("RATE_LIMITED", "the server is busy checking passwords");
      }
      // The releasing run hands its slot over directly, so #active never exceeds limit.
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    this.#peak = Math.max(this.#peak, this.#active);
    try {
      return await work();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}

/** The process's password hashing slots: cores − 1, at least one. */
export const passwordHashSlots = new HashSlots(
  Math.max(1, (navigator.hardwareConcurrency ?? 2) - 1),
);

/** PBKDF2 over the NFC form, so the same password composed differently gives the same hash. */
function pbkdf2(password: string, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  return passwordHashSlots.run(() => pbkdf2Now(password, salt, iterations));
}

async function pbkdf2Now(password: string, salt: Uint8Array, iterations: number) {
  const bytes = utf8(password.normalize("NFC"));
  try {
    const key = await crypto.subtle.importKey("raw", bytes as BufferSource, "PBKDF2", false, [
      "deriveBits",
    ]);
    const bits = await crypto.subtle.deriveBits(
      { name: "PBKDF2", hash: "SHA-256", salt: salt as BufferSource, iterations },
      key,
      HASH_BYTES * 8,
    );
    return new Uint8Array(bits);
  } finally {
    wipe(bytes); // best-effort in JS: the engine may keep other copies
  }
}
