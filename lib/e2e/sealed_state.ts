/**
 * The end-to-end state at rest (PROTOCOL §12.7), whatever holds it: one JSON text, the state
 * encrypted with AES-256-GCM under a key derived from the user's login password with scrypt.
 * The CLI keeps the text in a file (lib/store/e2e_state_file.ts), the page in IndexedDB
 * (web/e2e_storage.ts); both seal and open it here, so the two cannot drift.
 */
import { scrypt } from "#sync-crypto";
import { z } from "zod";
import { fromBase64, fromUtf8, randomBytes, toBase64, utf8, wipe } from "../bytes.ts";
import { openSync, sealSync } from "../crypto/aead.ts";
import { SecureChatError } from "../errors.ts";
import { base64Text } from "../wire/schema.ts";

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
      plaintext = openSync(key, fromBase64(parsed.nonce), fromBase64(parsed.ct), AAD);
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
        ct: toBase64(sealSync(this.#key, nonce, plaintext, AAD)),
      });
    } finally {
      wipe(plaintext); // best-effort in JS
    }
  }
}

function derive(secret: string, salt: Uint8Array): Uint8Array {
  return scrypt(secret.normalize("NFC"), salt, SCRYPT, 32);
}
