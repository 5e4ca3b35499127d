/**
 * The raw cryptographic operations of one v2 handshake, counted from PROTOCOL §4–§5 and
 * lib/handshake/{client,server}.ts, each callable alone. Per side:
 *   1 signature (certificate_verify), 1 verification (the peer's),
 *   1 certificate validation (parse + path + CA signature check) and SPKI import,
 *   the 2 key exchanges of the default group x25519mlkem768: the hybrid in phase 1 and its
 *   X25519 half in phase 2 (PROTOCOL §4.2), each timed as one whole exchange (client generate
 *   + server respond + client complete) and counted as half of it per side, the phase 1,
 *   master and session HKDF schedules, 4 Finished MACs (own + peer's, both phases),
 *   8 transcript hashes, 6 sealed records out and 6 in (ChaCha20-Poly1305, synchronous
 *   node:crypto: PROTOCOL §3.2).
 */
import { randomBytes, sha256 } from "../lib/bytes.ts";
import { KEX_GROUPS, type KexGroup, keyAgreement, phase2Group } from "../lib/crypto/kex.ts";
import { importVerifyingKeySpki, sign, verify } from "../lib/crypto/signature.ts";
import {
  deriveMaster,
  derivePhase1,
  deriveSession,
  finishedMac,
  signatureInput,
} from "../lib/handshake/key_schedule.ts";
import { openRecord, sealRecord } from "../lib/handshake/record.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { validatePeerCertificate } from "../lib/pki/validate.ts";
import type { TestPki } from "./_pki.ts";

export interface CryptoOp {
  op: () => unknown;
  /** How many times one side of one handshake performs it (½: one op per handshake). */
  perSide: number;
}

/** `label`: the key type's name for the op names ("RSA-2048", "Ed25519"). */
export async function sessionCryptoOps(pki: TestPki, label: string, clientName = "user1") {
  const server = await pki.identity("server");
  const client = await pki.identity(clientName);
  const serverKey = await importVerifyingKeySpki(parseCertificate(server.certDer).spki);
  const signed = signatureInput("server", randomBytes(32));
  const sig = await sign(server.signingKey, signed);
  /** One whole exchange: what the client and the server of one phase compute together. */
  const exchange = async (group: KexGroup) => {
    const kex = keyAgreement(group);
    const client = await kex.generate();
    return await client.complete((await kex.respond(client.share)).share);
  };
  const [group1, group2] = [KEX_GROUPS[0], phase2Group(KEX_GROUPS[0])];
  const shared = await exchange(group1);
  const hash = randomBytes(32);
  const phase1 = derivePhase1(shared, hash);
  const master = deriveMaster(phase1.handshakeSecret, shared);
  // A sealed record the size of the certificate message (the largest one).
  const record = randomBytes(1400);
  // The transcript at the end of the handshake: two certificates and some small messages.
  const transcript = randomBytes(4000);

  const ops: Record<string, CryptoOp> = {
    [`${label} sign`]: { op: () => sign(server.signingKey, signed), perSide: 1 },
    [`${label} verify`]: { op: () => verify(serverKey, signed, sig), perSide: 1 },
    "certificate validation + key import": {
      // validatePeerCertificate imports the peer's key itself (once per validation).
      op: () => validatePeerCertificate(pki.trust, client.certDer, { role: "client" }),
      perSide: 1,
    },
    // Both sides' part of one exchange, once per handshake: half of it per side.
    [`${group1} exchange, phase 1 (both sides' part)`]: {
      op: () => exchange(group1),
      perSide: 0.5,
    },
    [`${group2} exchange, phase 2 (both sides' part)`]: {
      op: () => exchange(group2),
      perSide: 0.5,
    },
    "HKDF phase 1 schedule": { op: () => derivePhase1(shared, hash), perSide: 1 },
    "HKDF phase 2 schedule (master, session)": {
      op: () => (deriveMaster(phase1.handshakeSecret, shared), deriveSession(master.master, hash)),
      perSide: 1,
    },
    "Finished HMAC": { op: () => finishedMac(phase1.clientFinishedKey, hash), perSide: 4 },
    "transcript SHA-256 (4 KB)": { op: () => sha256(transcript), perSide: 8 },
    "record seal+open (1.5 KB, ChaCha20-Poly1305)": {
      // Counter 0 each time: nonce reuse is harmless in a timing loop.
      op: () => openRecord(phase1.c2s, 0, sealRecord(phase1.c2s, 0, record)),
      perSide: 6,
    },
  };

  /** Every operation of one handshake, both sides, in sequence. */
  const session = async () => {
    for (const { op, perSide } of Object.values(ops)) {
      for (let i = 0; i < 2 * perSide; i++) await op();
    }
  };
  return { ops, session };
}
