/**
 * Bench PKI: RSA-2048 throughout (the project's default key type, and the key type of
 * the openssl reference), made through lib/pki like `ca init` / `cert issue`.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { importSigningKeyPkcs8 } from "../lib/crypto/signature.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { loadCaSigner } from "../lib/pki/ca.ts";
import { OID } from "../lib/pki/certificate.ts";
import { signingAlgorithmOf } from "../lib/pki/keys.ts";
import { randomSerialHex, validityWindow } from "../lib/pki/serial.ts";
import { makePki, type TestPki } from "../tests/helpers/pki.ts";

export type { TestPki };

export function rsaPki(users: string[], dir?: string): Promise<TestPki> {
  return makePki(users, "rsa2048", dir);
}

/**
 * Client identities for many users at once, for the scale bench: every certificate
 * is a real clientAuth leaf signed by the CA (same extensions as `cert issue`), but
 * they share one RSA-2048 key pair so that 10,000 users do not need 10,000 key
 * generations. The server does not know they share a key and imports each one.
 */
export async function mintClientIdentities(pkiDir: string, names: string[]): Promise<Identity[]> {
  const ca = await loadCaSigner(pkiDir);
  const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (!caSki) throw new Error("CA certificate has no subjectKeyIdentifier");
  const pair = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const signingKey = await importSigningKeyPkcs8(
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
  );
  const ski = await x509.SubjectKeyIdentifierExtension.create(pair.publicKey);
  const out: Identity[] = new Array(names.length);
  let next = 0;
  // Two workers: the CA signatures run off the JS thread, so both cores help.
  await Promise.all([0, 1, 2, 3].map(async () => {
    while (next < names.length) {
      const i = next++;
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerialHex(),
        subject: [{ CN: [names[i]] }],
        issuer: ca.cert.subjectName,
        ...validityWindow(30),
        signingAlgorithm: signingAlgorithmOf(ca.key),
        publicKey: pair.publicKey,
        signingKey: ca.key,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([OID.clientAuth]),
          ski,
          new x509.AuthorityKeyIdentifierExtension(caSki.keyId),
        ],
      });
      out[i] = { certDer: new Uint8Array(cert.rawData), signingKey };
    }
  }));
  return out;
}
