/**
 * Private key, certificate and password files of the CLI (the file side of ./keys.ts, which
 * the browser page shares and which therefore reads no files).
 */
import { SecureChatError } from "../errors.ts";
import { readTextFile } from "../files.ts";
import { decryptPkcs8, isEncryptedPrivateKeyPem } from "./keys.ts";
import { pemDecode } from "./pem.ts";

/**
 * Reads a PKCS#8 private key file, decrypting it if it is encrypted.
 * @returns the PrivateKeyInfo DER
 * @throws IO_ERROR when the file cannot be read or holds no PKCS#8 key; USAGE when it is
 *   encrypted and no password was given; AUTH_FAIL for a wrong password
 */
export async function readPrivateKeyPkcs8(path: string, password?: string): Promise<Uint8Array> {
  const pem = await readTextFile(path);
  if (!isEncryptedPrivateKeyPem(pem)) return pemDecode(pem, "PRIVATE KEY", "IO_ERROR");
  if (password === undefined) {
    throw new SecureChatError("USAGE", `${path} is encrypted and no password was given`, {
      hint: "pass --password-file FILE, or run on a terminal to be prompted",
    });
  }
  const encrypted = pemDecode(pem, "ENCRYPTED PRIVATE KEY", "IO_ERROR");
  try {
    return await decryptPkcs8(encrypted, password);
  } catch (error) {
    if (error instanceof SecureChatError && error.code === "BAD_CERT") {
      throw new SecureChatError("IO_ERROR", `${path} is not a readable encrypted key`, {
        cause: error,
      });
    }
    throw error;
  }
}

/**
 * Reads the first certificate of a PEM file.
 * @throws IO_ERROR when the file cannot be read or holds no certificate
 */
export async function readCertificateDer(path: string): Promise<Uint8Array> {
  return pemDecode(await readTextFile(path), "CERTIFICATE", "IO_ERROR");
}

/**
 * Reads a password file the way `openssl -passin file:` does: its first line.
 * @throws IO_ERROR when unreadable; USAGE when the first line is empty
 */
export async function readPasswordFile(path: string): Promise<string> {
  const password = (await readTextFile(path)).split(/\r?\n/, 1)[0];
  if (!password) throw new SecureChatError("USAGE", `password file ${path} is empty`);
  return password;
}
