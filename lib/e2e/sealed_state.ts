/**
 * The end-to-end state at rest (PROTOCOL §12.7), whatever holds it: one JSON text, the state
 * encrypted with AES-256-GCM under a key derived from the user's login password with scrypt,
 * and the password change that re-encrypts it. The CLI keeps the text in a file
 * (lib/store/e2e_state_file.ts), the page in IndexedDB (web/e2e_storage.ts); both seal, open
 * and re-encrypt it here ({@link SealedState} over their {@link SealedSlots}), so the two
 * cannot drift.
 */
import { scrypt } from "#sync-crypto";
import { z } from "zod";
import { fromBase64, fromUtf8, randomBytes, toBase64, utf8, wipe } from "../bytes.ts";
import { openAesGcm, sealAesGcm } from "../crypto/aead.ts";
import { codeOf, SecureChatError } from "../errors.ts";
import { base64Text } from "../wire/schema.ts";
import type { E2eStorage } from "./client.ts";

const AAD = utf8("securechat/e2e state");
/** scrypt cost: ~50 ms once per client start on a laptop; the state is worth a real guess cost. */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;

const SealedSchema = z.object({
  version: z.literal(1),
  kdf: z.literal("scrypt"),
  n: z.literal(SCRYPT.N),
  r: z.literal(SCRYPT.r),
  p: z.literal(SCRYPT.p),
  salt: base64Text(16, 16),
  nonce: base64Text(12, 12),
  ct: base64Text(16, 64 * 1024 * 1024),
}).strict();

/**
 * The key of one sealed state: derived once per open, then every seal draws a fresh nonce.
 * `where` names the holder in errors ("the end-to-end state FILE", "this browser's …").
 */
export class StateSeal {
  readonly #key: Uint8Array;
  readonly #salt: Uint8Array;

  private constructor(key: Uint8Array, salt: Uint8Array) {
    this.#key = key;
    this.#salt = salt;
  }

  /** A new key (a new salt) for a state that does not exist yet. */
  static fresh(secret: string): StateSeal {
    const salt = randomBytes(16);
    return new StateSeal(derive(secret, salt), salt);
  }

  /**
   * Opens a sealed state with `secret`.
   * @returns the key (to seal the next versions under) and the state
   * @throws DECRYPT_FAIL (wrong password, or damaged)
   */
  static open(text: string, secret: string, where: string): { seal: StateSeal; value: unknown } {
    let parsed: z.output<typeof SealedSchema>;
    try {
      parsed = SealedSchema.parse(JSON.parse(text));
    } catch (cause) {
      throw new SecureChatError("DECRYPT_FAIL", `${where} is damaged`, {
        cause,
        hint: "move it away to start new conversations (your contacts' keys are fetched again)",
      });
    }
    const salt = fromBase64(parsed.salt);
    const key = derive(secret, salt);
    let plaintext: Uint8Array;
    try {
      plaintext = openAesGcm(key, fromBase64(parsed.nonce), fromBase64(parsed.ct), AAD);
    } catch (cause) {
      throw new SecureChatError(
        "DECRYPT_FAIL",
        `cannot decrypt ${where}: wrong password, or damaged`,
        {
          cause,
          hint: "it is encrypted with the password you log in with; if that changed or the " +
            "state is lost, move it away to start new conversations",
        },
      );
    }
    try {
      return { seal: new StateSeal(key, salt), value: JSON.parse(fromUtf8(plaintext)) };
    } finally {
      wipe(plaintext); // best-effort in JS
    }
  }

  /** The sealed text of `value`. */
  seal(value: unknown): string {
    const plaintext = utf8(JSON.stringify(value));
    const nonce = randomBytes(12);
    try {
      return JSON.stringify({
        version: 1,
        kdf: "scrypt",
        n: SCRYPT.N,
        r: SCRYPT.r,
        p: SCRYPT.p,
        salt: toBase64(this.#salt),
        nonce: toBase64(nonce),
        ct: toBase64(sealAesGcm(this.#key, nonce, plaintext, AAD)),
      });
    } finally {
      wipe(plaintext); // best-effort in JS
    }
  }
}

function derive(secret: string, salt: Uint8Array): Uint8Array {
  return scrypt(secret.normalize("NFC"), salt, SCRYPT, 32);
}

/**
 * Where a sealed state is kept (PROTOCOL §12.7): `state`, and `next` — the same state under a
 * new password while a password change waits for the server. Each call is durable when it
 * resolves, and a crash during one leaves the slot as it was or as it is asked to be.
 */
export interface SealedSlots {
  /** The holder, in errors: "the end-to-end state FILE", "this browser's end-to-end state". */
  readonly where: string;
  /** @throws IO_ERROR for anything but an empty slot (undefined) */
  read(slot: "state" | "next"): Promise<string | undefined>;
  /** @throws IO_ERROR */
  write(slot: "state" | "next", text: string): Promise<void>;
  /** Empties `next` (already empty: nothing to do). @throws IO_ERROR */
  dropNext(): Promise<void>;
  /** `next` replaces `state`, in one atomic step. @throws IO_ERROR */
  promoteNext(): Promise<void>;
  /** A deferred save must not keep a command-line process alive (Deno.unrefTimer). */
  unrefTimer?(timer: ReturnType<typeof setTimeout>): void;
}

/**
 * A device's state in its {@link SealedSlots}, the {@link E2eStorage} of its E2eClient: its key
 * is derived once per open, every save draws a fresh nonce, and saves run one after another.
 */
export class SealedState implements E2eStorage {
  readonly #slots: SealedSlots;
  #seal: StateSeal;
  /** The new password's seal while a change waits for the server (saved to `next` too). */
  #next?: StateSeal;
  readonly #value: unknown;
  #writing: Promise<void> = Promise.resolve();
  readonly unrefTimer?: (timer: ReturnType<typeof setTimeout>) => void;

  private constructor(slots: SealedSlots, seal: StateSeal, value: unknown) {
    this.#slots = slots;
    this.#seal = seal;
    this.#value = value;
    if (slots.unrefTimer) this.unrefTimer = (timer) => slots.unrefTimer!(timer);
  }

  /**
   * Opens the state with `secret`, the password the server accepted at this login (none kept
   * yet: a new device's). A `next` beside it is a password change that did not finish: when
   * `secret` opens the state, the change never happened and `next` goes; when only `next`
   * opens, the server changed the password before the client could finish, and `next` becomes
   * the state.
   * @throws DECRYPT_FAIL (a wrong password, or damaged); IO_ERROR
   */
  static async open(slots: SealedSlots, secret: string): Promise<SealedState> {
    const text = await slots.read("state");
    const next = await slots.read("next");
    if (text === undefined && next === undefined) {
      return new SealedState(slots, StateSeal.fresh(secret), null);
    }
    let failure: unknown;
    if (text !== undefined) {
      try {
        const { seal, value } = StateSeal.open(text, secret, slots.where);
        if (next !== undefined) await slots.dropNext();
        return new SealedState(slots, seal, value);
      } catch (error) {
        if (next === undefined) throw error;
        failure = error;
      }
    }
    try {
      const { seal, value } = StateSeal.open(next!, secret, slots.where);
      await slots.promoteNext();
      return new SealedState(slots, seal, value);
    } catch (error) {
      throw failure ?? error;
    }
  }

  /**
   * Opens a state sealed under `previous`, the password before a change made from another
   * client of the user's (this device was not told, PROTOCOL §12.7), and seals it again under
   * `current`, the one the server has just accepted, by a password change's steps: the copy
   * under `current` is written to `next`, then moved over the state, so that a crash between
   * the two leaves a state that `current` opens. A state that `current` opens already is only
   * opened (the user gave the previous password needlessly).
   * @throws DECRYPT_FAIL (it opens with neither, or is damaged); IO_ERROR
   */
  static async reseal(slots: SealedSlots, previous: string, current: string): Promise<SealedState> {
    try {
      return await SealedState.open(slots, current);
    } catch (error) {
      if (codeOf(error) !== "DECRYPT_FAIL") throw error;
    }
    const state = await SealedState.open(slots, previous);
    state.beginRekey(current);
    await state.save(state.#value);
    await state.commitRekey();
    return state;
  }

  /** What the state held when opened (decrypted), or null when there was none. */
  load(): Promise<unknown> {
    return Promise.resolve(this.#value);
  }

  /**
   * Seals `value` now and writes it after the saves before it: during a password change to
   * `next` first (it is the state the change leads to), then to `state`.
   * @throws IO_ERROR
   */
  save(value: unknown): Promise<void> {
    const body = this.#seal.seal(value);
    const nextBody = this.#next?.seal(value);
    return this.#queue(async () => {
      if (nextBody !== undefined) await this.#slots.write("next", nextBody);
      await this.#slots.write("state", body);
    });
  }

  /**
   * A password change, before the server is asked (PROTOCOL §12.7): from now on every save
   * writes the state twice, under the current password and to `next` under `secret`, so that
   * whichever the server ends up with opens a current state after a crash. The caller saves
   * once now, so that `next` exists before the change is sent.
   */
  beginRekey(secret: string): void {
    this.#next = StateSeal.fresh(secret);
  }

  /** The server changed the password: `next`, written by every save since, becomes the state. */
  commitRekey(): Promise<void> {
    return this.#queue(async () => {
      const next = this.#next;
      if (!next) return;
      await this.#slots.promoteNext();
      this.#seal = next;
      this.#next = undefined;
    });
  }

  /** The server refused the change: the state stays under the current password alone. */
  abandonRekey(): Promise<void> {
    return this.#queue(async () => {
      if (!this.#next) return;
      this.#next = undefined;
      await this.#slots.dropNext();
    });
  }

  /** Runs `step` after the writes already queued, as the next one. */
  #queue(step: () => Promise<void>): Promise<void> {
    const next = this.#writing.then(step);
    this.#writing = next.catch(() => {});
    return next;
  }
}
