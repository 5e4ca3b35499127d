/**
 * The client's end-to-end state on disk (PROTOCOL §12.7): private prekeys, ratchets,
 * sender chains. Encrypted at rest under a key derived from the user's password (or a
 * key file's contents) with scrypt, and written crash-safely: a temporary file, fsync,
 * rename over the old one, fsync of the directory. A crash leaves the old state or the
 * new one, never half of either.
 */
import { scrypt } from "#sync-crypto";
import { dirname } from "node:path";
import { z } from "zod";
import { fromBase64, fromUtf8, randomBytes, toBase64, utf8, wipe } from "../bytes.ts";
import { openSync, sealSync } from "../crypto/aead.ts";
import type { E2eStorage } from "../e2e/client.ts";
import { SecureChatError } from "../errors.ts";
import { base64Text } from "../wire/schema.ts";

const AAD = utf8("securechat/e2e state");
/** scrypt cost: ~50 ms once per client start on a laptop; the file is worth a real guess cost. */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;

const FileSchema = z.object({
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
 * An open state file, the client's {@link E2eStorage}: its key is derived once, every save
 * draws a fresh nonce. (lib/e2e itself does no file I/O: a browser injects its own storage.)
 */
export class StateFile implements E2eStorage {
  #value: unknown;

  readonly #key: Uint8Array;
  readonly #salt: Uint8Array;
  #writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    key: Uint8Array,
    salt: Uint8Array,
    value: unknown,
  ) {
    this.#key = key;
    this.#salt = salt;
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
    if (text === undefined) {
      const salt = randomBytes(16);
      return new StateFile(path, derive(secret, salt), salt, null);
    }
    let parsed: z.output<typeof FileSchema>;
    try {
      parsed = FileSchema.parse(JSON.parse(text));
    } catch (cause) {
      throw new SecureChatError("DECRYPT_FAIL", `the end-to-end state ${path} is damaged`, {
        cause,
        hint: "move it away to start new conversations (your contacts' keys are fetched again)",
      });
    }
    const salt = fromBase64(parsed.salt);
    const key = derive(secret, salt);
    let plaintext: Uint8Array;
    try {
      plaintext = openSync(key, fromBase64(parsed.nonce), fromBase64(parsed.ct), AAD);
    } catch (cause) {
      throw new SecureChatError(
        "DECRYPT_FAIL",
        `cannot decrypt the end-to-end state ${path}: wrong password or key file, or damaged`,
        {
          cause,
          hint: "it is encrypted with the password you log in with; if that changed or the " +
            "file is lost, move it away to start new conversations",
        },
      );
    }
    return new StateFile(path, key, salt, JSON.parse(fromUtf8(plaintext)));
  }

  /**
   * Encrypts and replaces the file durably; saves run one after another.
   * @throws IO_ERROR
   */
  save(value: unknown): Promise<void> {
    const plaintext = utf8(JSON.stringify(value));
    const next = this.#writing.then(() => this.#write(plaintext));
    this.#writing = next.catch(() => {});
    return next;
  }

  async #write(plaintext: Uint8Array): Promise<void> {
    const nonce = randomBytes(12);
    const body = JSON.stringify({
      version: 1,
      kdf: "scrypt",
      n: SCRYPT.N,
      r: SCRYPT.r,
      p: SCRYPT.p,
      salt: toBase64(this.#salt),
      nonce: toBase64(nonce),
      ct: toBase64(sealSync(this.#key, nonce, plaintext, AAD)),
    });
    wipe(plaintext); // best-effort in JS
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

function derive(secret: string, salt: Uint8Array): Uint8Array {
  return scrypt(secret.normalize("NFC"), salt, SCRYPT, 32);
}
