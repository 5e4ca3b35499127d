/**
 * The client's end-to-end state on disk (PROTOCOL §12.7): private prekeys, ratchets,
 * sender chains. Encrypted at rest under a key derived from the user's password (or a
 * key file's contents) with scrypt, and written crash-safely: a temporary file, fsync,
 * rename over the old one, fsync of the directory. A crash leaves the old state or the
 * new one, never half of either. A password change re-encrypts it (`beginRekey`, then
 * `commitRekey` or `abandonRekey`) so that a crash at any point leaves a state the password
 * the server ends up with opens.
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

  #seal: StateSeal;
  /** The new password's seal while a change waits for the server (written to `.next` too). */
  #next?: StateSeal;
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
   * Opens (or prepares to create) the state file and decrypts what it holds. A `<file>.next`
   * beside it is a password change that did not finish: when `secret` (the password the server
   * took at this login) opens the file, the change never happened and `.next` goes; when only
   * `.next` opens, the server changed the password before the client could finish, and `.next`
   * becomes the file.
   * @throws DECRYPT_FAIL (wrong password or key file, or a damaged file); IO_ERROR
   */
  static async open(path: string, secret: string): Promise<StateFile> {
    const text = await readIfThere(path);
    const next = await readIfThere(nextOf(path));
    if (text === undefined && next === undefined) {
      return new StateFile(path, StateSeal.fresh(secret), null);
    }
    let failure: unknown;
    if (text !== undefined) {
      try {
        const { seal, value } = StateSeal.open(text, secret, `the end-to-end state ${path}`);
        if (next !== undefined) await removeDurably(nextOf(path));
        return new StateFile(path, seal, value);
      } catch (error) {
        if (next === undefined) throw error;
        failure = error;
      }
    }
    try {
      const { seal, value } = StateSeal.open(next!, secret, `the end-to-end state ${path}`);
      await Deno.rename(nextOf(path), path);
      await syncDirectory(path);
      return new StateFile(path, seal, value);
    } catch (error) {
      throw failure ?? error;
    }
  }

  unrefTimer(timer: ReturnType<typeof setTimeout>): void {
    Deno.unrefTimer(timer);
  }

  /**
   * A password change, before the server is asked (PROTOCOL §12.7): from now on every save
   * writes the state twice, this file under the current password and `<file>.next` under
   * `secret`, so whichever the server ends up with opens a current state after a crash. The
   * caller saves once now, so that `.next` exists before the change is sent.
   */
  beginRekey(secret: string): void {
    this.#next = StateSeal.fresh(secret);
  }

  /** The server changed the password: `<file>.next`, written by every save since, becomes it. */
  commitRekey(): Promise<void> {
    return this.#queue(async () => {
      const next = this.#next;
      if (!next) return;
      try {
        await Deno.rename(nextOf(this.path), this.path);
        await syncDirectory(this.path);
      } catch (cause) {
        throw new SecureChatError("IO_ERROR", `cannot write the end-to-end state ${this.path}`, {
          cause,
        });
      }
      this.#seal = next;
      this.#next = undefined;
    });
  }

  /** The server refused the change: the file stays under the current password alone. */
  abandonRekey(): Promise<void> {
    return this.#queue(async () => {
      if (!this.#next) return;
      this.#next = undefined;
      await removeDurably(nextOf(this.path));
    });
  }

  /**
   * Encrypts and replaces the file durably; saves run one after another.
   * @throws IO_ERROR
   */
  save(value: unknown): Promise<void> {
    const body = this.#seal.seal(value);
    // During a password change, `.next` too (first: it is the state the change leads to).
    const nextBody = this.#next?.seal(value);
    return this.#queue(async () => {
      if (nextBody !== undefined) await this.#write(nextOf(this.path), nextBody);
      await this.#write(this.path, body);
    });
  }

  /** Runs `step` after the writes already queued, as the next one. */
  #queue(step: () => Promise<void>): Promise<void> {
    const next = this.#writing.then(step);
    this.#writing = next.catch(() => {});
    return next;
  }

  async #write(path: string, body: string): Promise<void> {
    const tmp = `${path}.tmp`;
    try {
      await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      try {
        const data = utf8(body);
        for (let off = 0; off < data.length;) off += await file.write(data.subarray(off));
        await file.sync();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, path);
      await syncDirectory(path);
    } catch (cause) {
      throw new SecureChatError("IO_ERROR", `cannot write the end-to-end state ${path}`, {
        cause,
      });
    }
  }
}

/** Where a password change keeps the state under the new password until the server answers. */
function nextOf(path: string): string {
  return `${path}.next`;
}

/** @throws IO_ERROR for anything but a missing file */
async function readIfThere(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) return undefined;
    throw new SecureChatError("IO_ERROR", `cannot read the end-to-end state ${path}`, { cause });
  }
}

async function removeDurably(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) return;
    throw new SecureChatError("IO_ERROR", `cannot remove ${path}`, { cause });
  }
  await syncDirectory(path);
}

/** Makes a rename or removal in `path`'s directory durable. */
async function syncDirectory(path: string): Promise<void> {
  const dir = await Deno.open(dirname(path), { read: true });
  try {
    await dir.sync();
  } catch {
    // some file systems refuse fsync on a directory; the rename is still atomic
  } finally {
    dir.close();
  }
}
