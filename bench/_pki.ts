/**
 * Bench PKI, made through lib/pki like `ca init` / `cert issue`: RSA-2048 throughout
 * (the project's default key type) or Ed25519 throughout (`--key-type ed25519`); the
 * openssl references use the same files.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { importSigningKeyPkcs8 } from "../lib/crypto/signature.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { OID } from "../lib/pki/certificate.ts";
import { signingAlgorithmOf } from "../lib/pki/keys.ts";
import { randomSerialHex, validityWindow } from "../lib/ca/serial.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";

export type { TestPki };

export function rsaPki(users: string[], dir?: string): Promise<TestPki> {
  return makePki(users, "rsa2048", dir);
}

export function ed25519Pki(users: string[], dir?: string): Promise<TestPki> {
  return makePki(users, "ed25519", dir);
}

/** The key types the setup and message benches compare, with their display names. */
export const BENCH_KEY_TYPES = [
  { type: "rsa2048", label: "RSA-2048", sign: "RSA-2048 PKCS#1 v1.5 sign" },
  { type: "ed25519", label: "Ed25519", sign: "Ed25519 sign" },
] as const;
export type BenchKeyType = typeof BENCH_KEY_TYPES[number]["type"];

/** One PKI per key type, same user names in each. */
export type Pkis = Record<BenchKeyType, TestPki>;

export async function benchPkis(users: string[]): Promise<Pkis> {
  const [rsa2048, ed25519] = await Promise.all([rsaPki(users), ed25519Pki(users)]);
  return { rsa2048, ed25519 };
}

export async function removePkis(pkis: Pkis): Promise<void> {
  for (const pki of Object.values(pkis)) await Deno.remove(pki.dir, { recursive: true });
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
