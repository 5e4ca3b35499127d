/** Signing our CRL (`cert revoke`, `cert crl`); parsing and checking one is crl.ts. */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { encodeSmallInt } from "../der.ts";
import { OID } from "../pki/certificate.ts";

export interface CrlParams {
  caCert: x509.X509Certificate;
  caKey: CryptoKey;
  signingAlgorithm: Algorithm | EcdsaParams;
  crlNumber: number;
  /** Serial numbers (hex) and when each was revoked. */
  entries: { serial: string; revokedAt: Date }[];
  thisUpdate: Date;
  nextUpdate: Date;
}

/** Signs a v2 CRL with a cRLNumber and an authorityKeyIdentifier. */
export async function createCrl(params: CrlParams): Promise<Uint8Array> {
  const ski = params.caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const extensions: x509.Extension[] = [
    new x509.Extension(OID.crlNumber, false, encodeSmallInt(params.crlNumber) as BufferSource),
  ];
  if (ski) extensions.push(new x509.AuthorityKeyIdentifierExtension(ski.keyId));
  const crl = await x509.X509CrlGenerator.create({
    issuer: params.caCert.subjectName,
    thisUpdate: params.thisUpdate,
    nextUpdate: params.nextUpdate,
    signingAlgorithm: params.signingAlgorithm,
    signingKey: params.caKey,
    extensions,
    entries: params.entries.map((e) => ({ serialNumber: e.serial, revocationDate: e.revokedAt })),
  });
  return new Uint8Array(crl.rawData);
}
