/**
 * The client's end-to-end state on disk (PROTOCOL §12.7): private prekeys, ratchets,
 * sender chains. Encrypted at rest under a key derived from the user's password (or a
 * key file's contents) with scrypt, and written crash-safely: a temporary file, fsync,
 * rename over the old one, fsync of the directory. A crash leaves the old state or the
 * new one, never half of either.
 */
import { dirname } from "node:path";
import { utf8 } from "../bytes.ts";
import type { E2eStorage } from "../e2e/client.ts";
import { StateSeal } from "../e2e/sealed_state.ts";
import { SecureChatError } from "../errors.ts";

/**
 * An open state file, the client's {@link E2eStorage}: its key is derived once, every save
 * draws a fresh nonce. (lib/e2e itself does no file I/O: a browser injects its own storage.)
 */
export class StateFile implements E2eStorage {
  #value: unknown;

  readonly #seal: StateSeal;
  #writing: Promise<void> = Promise.resolve();

  private constructor(readonly path: string, seal: StateSeal, value: unknown) {
    this.#seal = seal;
    this.#value = value;
  }

  /** What the file held when opened (decrypted), or null when there was none. */
  load(): Promise<unknown> {
    return Promise.resolve(this.#value);
  }

  /**
   * Opens (or prepares to create) the state file and decrypts what it holds.
   * @throws DECRYPT_FAIL (wrong password or key file, or a damaged file); IO_ERROR
   */
  static async open(path: string, secret: string): Promise<StateFile> {
    let text: string | undefined;
    try {
      text = await Deno.readTextFile(path);
    } catch (cause) {
      if (!(cause instanceof Deno.errors.NotFound)) {
        throw new SecureChatError("IO_ERROR", `cannot read the end-to-end state ${path}`, {
          cause,
        });
      }
    }
    if (text === undefined) return new StateFile(path, StateSeal.fresh(secret), null);
    const { seal, value } = StateSeal.open(text, secret, `the end-to-end state ${path}`);
    return new StateFile(path, seal, value);
  }

  unrefTimer(timer: ReturnType<typeof setTimeout>): void {
    Deno.unrefTimer(timer);
  }

  /**
   * Encrypts and replaces the file durably; saves run one after another.
   * @throws IO_ERROR
   */
  save(value: unknown): Promise<void> {
    const body = this.#seal.seal(value);
    const next = this.#writing.then(() => this.#write(body));
    this.#writing = next.catch(() => {});
    return next;
  }

  async #write(body: string): Promise<void> {
    const tmp = `${this.path}.tmp`;
    try {
      await Deno.mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      try {
        const data = utf8(body);
        for (let off = 0; off < data.length;) off += await file.write(data.subarray(off));
        await file.sync();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, this.path);
      const dir = await Deno.open(dirname(this.path), { read: true });
      try {
        await dir.sync();
      } catch {
        // some file systems refuse fsync on a directory; the rename is still atomic
      } finally {
        dir.close();
      }
    } catch (cause) {
      throw new SecureChatError("IO_ERROR", `cannot write the end-to-end state ${this.path}`, {
        cause,
      });
    }
  }
}
