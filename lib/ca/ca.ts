/**
 * The root CA (docs/PKI.md "Profiles"): creating it in a directory, and loading it to
 * sign leaves and CRLs.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { SecureChatError } from "../errors.ts";
import { readCertificateDer, readPrivateKeyPkcs8 } from "../pki/key_files.ts";
import {
  generateKeyPair,
  importSigningKey,
  isEncryptedPrivateKeyPem,
  type KeyType,
  privateKeyToPem,
  signingAlgorithmOf,
} from "../pki/keys.ts";
import { pemEncode } from "../pki/pem.ts";
import { fingerprintOf } from "../pki/describe.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import { pathExists, readTextFile, writeFileAtomic } from "../files.ts";
import { randomSerialHex, validityWindow } from "./serial.ts";

export function caPaths(dir: string): { caCert: string; caKey: string; crl: string } {
  return { caCert: `${dir}/ca.pem`, caKey: `${dir}/ca.key`, crl: `${dir}/ca.crl` };
}

export interface CaInitOptions {
  name: string;
  days: number;
  keyType: KeyType;
  /** Encrypts ca.key with PBES2 when set. */
  password?: string;
}

/**
 * Creates `ca.pem` and `ca.key` in `dir`. Without `force`, an existing CA is left
 * byte-for-byte untouched.
 * @returns the CA certificate's SHA-256 fingerprint (hex)
 * @throws USAGE when a CA exists and `force` is false; IO_ERROR
 */
export async function initCa(dir: string, opts: CaInitOptions, force: boolean): Promise<string> {
  const paths = caPaths(dir);
  if (!force && ((await pathExists(paths.caCert)) || (await pathExists(paths.caKey)))) {
    throw new SecureChatError("USAGE", `a CA already exists in ${dir}`, {
      hint: "pass --force to replace it (certificates it issued will stop validating)",
    });
  }
  if (opts.name.trim() === "") throw new SecureChatError("USAGE", "--name must not be empty");
  const keys = await generateKeyPair(opts.keyType);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: [{ CN: [opts.name] }],
    issuer: [{ CN: [opts.name] }],
    ...validityWindow(opts.days),
    signingAlgorithm: signingAlgorithmOf(keys.privateKey),
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions: [
      // pathLen 0: this CA signs leaves only; no intermediate can chain through it.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  await ensurePrivateDir(dir);
  await writeFileAtomic(paths.caKey, await privateKeyToPem(keys.privateKey, opts.password));
  const der = new Uint8Array(cert.rawData);
  await writeFileAtomic(paths.caCert, pemEncode("CERTIFICATE", der), 0o644);
  return fingerprintOf(der);
}

export interface CaSigner {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

/**
 * Whether the CA key in `dir` is encrypted (so the command must find a password).
 * @throws IO_ERROR
 */
export async function isCaKeyEncrypted(dir: string): Promise<boolean> {
  return isEncryptedPrivateKeyPem(await readTextFile(caPaths(dir).caKey));
}

/**
 * Loads the CA certificate and private key for signing.
 * @throws IO_ERROR when missing or unreadable; USAGE when encrypted and no password;
 *   AUTH_FAIL for a wrong password
 */
export async function loadCaSigner(dir: string, password?: string): Promise<CaSigner> {
  const paths = caPaths(dir);
  if (!(await pathExists(paths.caCert))) {
    throw new SecureChatError("IO_ERROR", `no CA in ${dir}`, {
      hint: "run `securechat ca init` first",
    });
  }
  const cert = new x509.X509Certificate(await readCertificateDer(paths.caCert) as BufferSource);
  const pkcs8 = await readPrivateKeyPkcs8(paths.caKey, password);
  try {
    return { cert, key: await importSigningKey(pkcs8) };
  } finally {
    pkcs8.fill(0); // best-effort wipe
  }
}
