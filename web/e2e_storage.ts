/// <reference lib="dom" />
/**
 * The page's end-to-end state (PROTOCOL §12.7) in IndexedDB, one record per user, sealed
 * exactly as the CLI's state file (lib/e2e/sealed_state.ts): AES-256-GCM under a key derived
 * with scrypt from the login password. Not a non-extractable WebCrypto key kept beside it:
 * such a key sits in the same profile as the state, so whoever copies the profile (a backup,
 * another account on the machine, a stolen disk) holds both and reads every ratchet, which
 * would undo forward secrecy for the conversations on this device. Under the password, the
 * profile alone opens nothing; the cost is one scrypt per login (docs/SECURITY.md §3.6).
 */
import type { E2eStorage } from "../lib/e2e/client.ts";
import { StateSeal } from "../lib/e2e/sealed_state.ts";
import * as db from "./idb.ts";

export class BrowserStateStorage implements E2eStorage {
  readonly #username: string;
  readonly #seal: StateSeal;
  readonly #value: unknown;
  #writing: Promise<void> = Promise.resolve();

  private constructor(username: string, seal: StateSeal, value: unknown) {
    this.#username = username;
    this.#seal = seal;
    this.#value = value;
  }

  /**
   * Opens `username`'s state with the login password (none yet: a new device).
   * @throws DECRYPT_FAIL (the password changed since, or the record is damaged)
   */
  static async open(username: string, password: string): Promise<BrowserStateStorage> {
    const text = await db.get<string>("e2e", username);
    if (text === undefined) {
      return new BrowserStateStorage(username, StateSeal.fresh(password), null);
    }
    const { seal, value } = StateSeal.open(text, password, "this browser's end-to-end state");
    return new BrowserStateStorage(username, seal, value);
  }

  /** Whether this browser holds a state for `username`. */
  static async exists(username: string): Promise<boolean> {
    return (await db.get<string>("e2e", username)) !== undefined;
  }

  load(): Promise<unknown> {
    return Promise.resolve(this.#value);
  }

  /** Seals now, writes after the saves before it (one IndexedDB transaction each). */
  save(value: unknown): Promise<void> {
    const sealed = this.#seal.seal(value);
    const next = this.#writing.then(() => db.put("e2e", this.#username, sealed));
    this.#writing = next.catch(() => {});
    return next;
  }
}
