/**
 * The export bundle (`securechat cert export NAME`, docs/PKI.md "Export bundle"): what a user
 * carries to another client, such as the browser page. It is one PEM text file with exactly
 * three or four blocks, in this order:
 *
 *   ENCRYPTED PRIVATE KEY  the user's PKCS#8 key as an EncryptedPrivateKeyInfo, PBES2 with
 *                          PBKDF2-HMAC-SHA256 (600 000 iterations) and AES-256-CBC under the
 *                          bundle password (./keys.ts; `openssl pkey -in FILE` reads it)
 *   CERTIFICATE            the user's certificate
 *   CERTIFICATE            the root CA the user trusts (ca.pem)
 *   X509 CRL               optional: the CA's CRL at export time (ca.crl), CA-signed
 *
 * Opening checks that the key signs for the certificate and that the certificate is a client
 * certificate under that CA today. The CA certificate itself is protected only as the file is:
 * a client shows its fingerprint so the user can compare it with the one `cert export` printed.
 */
import { concat, fromBase64, randomBytes, utf8, wipe } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { importSigningKeyPkcs8, sign, type SigningKey, verify } from "../crypto/signature.ts";
import { decryptPkcs8, encryptPkcs8 } from "./keys.ts";
import { pemEncode } from "./pem.ts";
import { TrustStore, validatePeerCertificate } from "./validate.ts";

/** A bundle is a few KB (RSA-2048: about 5 KB); anything much larger is not one. */
export const MAX_BUNDLE_BYTES = 64 * 1024;
const BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
const LABELS = ["ENCRYPTED PRIVATE KEY", "CERTIFICATE", "CERTIFICATE", "X509 CRL"] as const;
/** The CRL block is optional: a CA that never revoked anything may have no ca.crl. */
const REQUIRED_BLOCKS = 3;
/** Signed and verified at opening: proves the key belongs to the certificate. */
const KEY_CHECK_LABEL = "securechat/v2 export bundle key check";

export interface ExportBundleParts {
  /** The PrivateKeyInfo DER (secret: the caller wipes it). */
  pkcs8: Uint8Array;
  certDer: Uint8Array;
  caDer: Uint8Array;
  /** The CA's CRL (DER), when the PKI directory has one. */
  crlDer?: Uint8Array;
}

/** The bundle text of `parts`, the key encrypted under `password`. */
export async function encodeExportBundle(
  parts: ExportBundleParts,
  password: string,
): Promise<string> {
  if (password === "") throw new SecureChatError("USAGE", "the bundle password is empty");
  return pemEncode("ENCRYPTED PRIVATE KEY", await encryptPkcs8(parts.pkcs8, password)) +
    pemEncode("CERTIFICATE", parts.certDer) + pemEncode("CERTIFICATE", parts.caDer) +
    (parts.crlDer ? pemEncode("X509 CRL", parts.crlDer) : "");
}

function malformed(why: string): never {
  throw new SecureChatError("INVALID_INPUT", `not a securechat export bundle: ${why}`, {
    hint: "make one with `securechat cert export NAME`",
  });
}

/**
 * The three blocks of a bundle, the key decrypted.
 * @throws INVALID_INPUT for anything but the three blocks in order; AUTH_FAIL for a wrong
 *   password
 */
export async function decodeExportBundle(
  text: string,
  password: string,
): Promise<ExportBundleParts> {
  if (text.length > MAX_BUNDLE_BYTES) malformed("larger than 64 KiB");
  const blocks = [...text.matchAll(BLOCK_RE)];
  if (
    blocks.length < REQUIRED_BLOCKS || blocks.length > LABELS.length ||
    blocks.some(([, label], i) => label !== LABELS[i])
  ) {
    malformed("it must hold an ENCRYPTED PRIVATE KEY, then two CERTIFICATEs, then maybe a CRL");
  }
  const ders = blocks.map(([, , body]) => {
    try {
      return fromBase64(body.replace(/\s+/g, ""));
    } catch {
      return malformed("corrupt base64");
    }
  });
  let pkcs8: Uint8Array;
  try {
    pkcs8 = await decryptPkcs8(ders[0], password);
  } catch (error) {
    if (error instanceof SecureChatError && error.code === "AUTH_FAIL") {
      throw new SecureChatError("AUTH_FAIL", "wrong password for the export bundle", {
        cause: error,
      });
    }
    return malformed("the private key block is not an encrypted PKCS#8 key");
  }
  return { pkcs8, certDer: ders[1], caDer: ders[2], crlDer: ders[3] };
}

export interface OpenedBundle {
  /** The certificate's CN: the user name. */
  username: string;
  certDer: Uint8Array;
  /** Imported non-extractable: it can sign, never be read back. */
  signingKey: SigningKey;
  trust: TrustStore;
  caPem: string;
  /** SHA-256 of the CA certificate, hex: for the user to compare. */
  caFingerprint: string;
  /** The bundle's CRL, verified under its CA (and in `trust`), if it carried one. */
  crlDer?: Uint8Array;
}

/**
 * Decodes a bundle, imports the key non-extractable (the decrypted bytes are wiped, best
 * effort in JS) and checks it: the key signs for the certificate, which is a client
 * certificate under the bundle's CA at `now`, not revoked by the bundle's CRL.
 * @throws INVALID_INPUT, AUTH_FAIL as {@link decodeExportBundle}; BAD_CERT when the
 *   certificate does not validate (revoked, or the CRL is not the CA's or has lapsed) or the
 *   key is not its key; UNSUPPORTED for a key type
 */
export async function openExportBundle(
  text: string,
  password: string,
  now = new Date(),
): Promise<OpenedBundle> {
  const parts = await decodeExportBundle(text, password);
  let signingKey: SigningKey;
  try {
    signingKey = await importSigningKeyPkcs8(parts.pkcs8);
  } finally {
    wipe(parts.pkcs8);
  }
  const caPem = pemEncode("CERTIFICATE", parts.caDer);
  const trust = await TrustStore.fromPem(
    caPem,
    parts.crlDer && pemEncode("X509 CRL", parts.crlDer),
  );
  const peer = await validatePeerCertificate(trust, parts.certDer, { role: "client", now });
  const message = concat(utf8(KEY_CHECK_LABEL), new Uint8Array([0]), randomBytes(32));
  if (
    peer.key.algorithm !== signingKey.algorithm ||
    !await verify(peer.key, message, await sign(signingKey, message))
  ) {
    throw new SecureChatError("BAD_CERT", "the bundle's key is not the certificate's key");
  }
  return {
    username: peer.commonName,
    certDer: parts.certDer,
    signingKey,
    trust,
    caPem,
    caFingerprint: trust.caFingerprint,
    crlDer: parts.crlDer,
  };
}
