/** Loads a party's certificate and signing key from the files `cert issue` wrote. */
import { importSigningKeyPkcs8 } from "./crypto/signature.ts";
import { wipe } from "./bytes.ts";
import type { Identity } from "./handshake/common.ts";
import { readCertificateDer, readPrivateKeyPkcs8 } from "./pki/key_files.ts";

/**
 * @throws IO_ERROR for unreadable files, UNSUPPORTED for a key type the protocol
 *   cannot sign with, and the key reader's code for a wrong key password
 */
export async function loadIdentity(
  certPath: string,
  keyPath: string,
  password?: string,
): Promise<Identity> {
  const certDer = await readCertificateDer(certPath);
  const pkcs8 = await readPrivateKeyPkcs8(keyPath, password);
  try {
    return { certDer, signingKey: await importSigningKeyPkcs8(pkcs8) };
  } finally {
    wipe(pkcs8);
  }
}
