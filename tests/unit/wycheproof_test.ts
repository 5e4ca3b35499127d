/**
 * C2SP Wycheproof vectors (../shared/peer-suites/wycheproof) run through
 * securechat's own wrappers in lib/crypto, one Deno.test per file.
 *
 * `valid` must be accepted with the expected output, `invalid` must be
 * rejected (a throw or `false`), `acceptable` follows ACCEPTABLE_POLICY below.
 * Cases whose parameters the wrappers cannot express are skipped and counted
 * with the reason; every case of a file is accounted for (numberOfTests).
 * Two files have no securechat wrapper and run on raw WebCrypto, labelled so.
 * The ML-KEM-768 files run once per backend of lib/crypto/mlkem.ts, the RSA PKCS#1 verification
 * file once per path of lib/crypto/rsa_verify.ts (libcrypto, BigInt).
 */

import assert from "node:assert/strict";
import { concat, fromBase64, fromHex, timingSafeEqual } from "../../lib/bytes.ts";
import { AES_KEY_BYTES, openAesGcm, sealAesGcm } from "../../lib/crypto/aead.ts";
import { codeOf } from "../../lib/errors.ts";
import { hkdfExpand, hkdfExtract } from "../../lib/crypto/hkdf.ts";
import { agree, type EcdhCurve, keyShareFromPrivate } from "../../lib/crypto/ecdh.ts";
import { type MlKem768, nobleMlKem768, webCryptoMlKem768 } from "../../lib/crypto/mlkem.ts";
import { ml_kem768 as rawNoble } from "@noble/post-quantum/ml-kem.js";
import {
  ecdsaDerToP1363,
  importSigningKeyPkcs8,
  importVerifyingKeySpki,
  sign,
  verify,
} from "../../lib/crypto/signature.ts";
import { rsaPkcs1Sha256Verify } from "../../lib/crypto/rsa_verify.ts";
import * as nodeSync from "../../lib/crypto/sync_node.ts";
import * as browserSync from "../../lib/crypto/sync_browser.ts";
import { PEER_SUITES, peerSuiteMissing, skipUnless } from "../helpers/optional_suites.ts";
import { libcryptoMissing } from "../helpers/openssl.ts";

const SUITE = new URL("wycheproof/", PEER_SUITES);
/** Why RSA does not sign through libcrypto here (the openssl suite reports it), if it does not. */
const LIBCRYPTO_MISSING = libcryptoMissing();

type Expectation = "accepted" | "rejected";
/** What a wrapper did with one case; "wrong-output" always fails. */
type Verdict = Expectation | "wrong-output" | { skip: string };
type CaseRunner = (test: Case) => Promise<Verdict>;
// deno-lint-ignore no-explicit-any
type Json = any;

interface Case {
  tcId: number;
  comment: string;
  flags: string[];
  result: "valid" | "invalid" | "acceptable";
  [field: string]: Json;
}

interface SuiteFile {
  file: string;
  schema: string;
  /** Set when the file runs on raw WebCrypto rather than a securechat wrapper, or on one backend. */
  label?: string;
  /** Per flag, what we do with an `acceptable` case carrying it; any "rejected" flag wins. */
  policy?: Record<string, Expectation>;
  /** Prepares one test group (e.g. imports its key) and returns its case runner or a skip. */
  group: (group: Json) => Promise<CaseRunner | { skip: string }>;
}

// ---- the pinned policy for `acceptable` cases -------------------------------

/**
 * X25519 (RFC 7748): any 32-byte string is a public key; points on the twist
 * and non-canonical u ≥ p are processed as the RFC says. What we refuse is a
 * low-order point, which is exactly what gives the all-zero shared secret
 * (wireguard-go's isZero, RFC 7748 §6.1).
 */
const X25519_POLICY: Record<string, Expectation> = {
  ZeroSharedSecret: "rejected",
  LowOrderPublic: "rejected",
  Twist: "accepted",
  NonCanonicalPublic: "accepted",
  SmallPublicKey: "accepted",
  SpecialPublicKey: "accepted",
  EdgeCaseShared: "accepted",
  EdgeCaseMultiplication: "accepted",
};

/** P-256 key shares are the uncompressed point only (docs/CRYPTO.md). */
const P256_POLICY: Record<string, Expectation> = {
  CompressedPublic: "rejected",
  CompressedPoint: "rejected",
};

const ACCEPTABLE_POLICY_TABLE: Record<string, Record<string, Expectation>> = {
  // PKCS#1 v1.5 verification re-encodes DigestInfo and compares (RFC 8017 §8.2.2),
  // so the NULL-less encoding is refused.
  "rsa_signature_2048_sha256_test.json": { MissingNull: "rejected" },
  // e = 3 does not weaken the signer; the signature bytes must still match.
  "rsa_pkcs1_2048_sig_gen_test.json": { SmallPublicKey: "accepted" },
  "x25519_test.json": X25519_POLICY,
  "x25519_asn_test.json": X25519_POLICY,
  "x25519_jwk_test.json": X25519_POLICY,
  "ecdh_secp256r1_ecpoint_test.json": P256_POLICY,
  // Only the exact named-curve uncompressed SPKI reaches agree(); a damaged point in it is refused.
  "ecdh_secp256r1_test.json": { ...P256_POLICY, InvalidAsn: "rejected" },
};

// ---- adapters from the vector encodings to our wrappers' inputs ------------

function fromBase64Url(text: string): Uint8Array {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
}

/** Hex as a BufferSource, for the two files run on raw WebCrypto. */
function source(hex: string): BufferSource {
  return fromHex(hex) as BufferSource;
}

/** A 32-byte big-endian scalar from Wycheproof's hex, which may carry a sign byte or be short. */
function scalar32(hex: string): Uint8Array {
  const bytes = fromHex(hex);
  const trimmed = bytes.subarray(Math.max(0, bytes.length - 32));
  assert.ok(bytes.subarray(0, bytes.length - trimmed.length).every((b) => b === 0));
  return concat(new Uint8Array(32 - trimmed.length), trimmed);
}

/** The bytes after a fixed DER prefix, or undefined for any other encoding. */
function afterPrefix(hex: string, prefix: string, length: number): Uint8Array | undefined {
  return hex.startsWith(prefix) && hex.length === prefix.length + 2 * length
    ? fromHex(hex.slice(prefix.length))
    : undefined;
}

/** Runs agree() and compares with the expected shared secret. */
async function agreement(
  group: EcdhCurve,
  privateKey: Uint8Array,
  publicKey: Uint8Array,
  shared: string,
): Promise<Verdict> {
  let secret: Uint8Array;
  try {
    secret = await agree(await keyShareFromPrivate(group, privateKey), publicKey);
  } catch {
    return "rejected";
  }
  return timingSafeEqual(secret, fromHex(shared)) ? "accepted" : "wrong-output";
}

function verifyRunner(
  decode: (sig: Uint8Array) => Uint8Array = (sig) => sig,
): SuiteFile["group"] {
  return async (group) => {
    const key = await importVerifyingKeySpki(fromHex(group.publicKeyDer));
    return async (test) => {
      let signature: Uint8Array;
      try {
        signature = decode(fromHex(test.sig));
      } catch {
        return "rejected";
      }
      return await verify(key, fromHex(test.msg), signature) ? "accepted" : "rejected";
    };
  };
}

/** Verdict of an ML-KEM wrapper call: a throw is a refusal, else the outputs must match. */
async function mlkemOutcome(run: () => Promise<boolean>): Promise<Verdict> {
  let matches: boolean;
  try {
    matches = await run();
  } catch {
    return "rejected";
  }
  return matches ? "accepted" : "wrong-output";
}

/**
 * AES-GCM and X25519 through one synchronous backend (lib/crypto/sync_node.ts for the CLI,
 * sync_browser.ts for the page), X25519 under lib/crypto/x25519.ts's all-zero refusal. The
 * browser module is passed as the node module's type: `deno check` fails if their exports drift
 * (but for `portable` and `symmetricBackend`, the node backend's libcrypto choice: not the page's).
 */
function syncFiles(
  backend: Omit<typeof nodeSync, "portable" | "symmetricBackend">,
  label: string,
): SuiteFile[] {
  return [
    {
      file: "aes_gcm_test.json",
      schema: "aead_test_schema_v1.json",
      label,
      group: (group) => {
        if (group.ivSize !== 96) return Promise.resolve({ skip: "IV ≠ 96 bits" });
        if (group.tagSize !== 128) return Promise.resolve({ skip: "tag ≠ 128 bits" });
        if (group.keySize === 192 && backend === nodeSync) {
          return Promise.resolve({
            skip: "AES-192: Deno's node:crypto has no AES-192-GCM",
          });
        }
        return Promise.resolve((test) => {
          const [key, iv, aad, msg] = [test.key, test.iv, test.aad, test.msg].map(fromHex);
          const sealed = concat(fromHex(test.ct), fromHex(test.tag));
          let opened: Uint8Array;
          try {
            opened = backend.aesGcmOpen(key, iv, sealed, aad);
          } catch {
            return Promise.resolve("rejected");
          }
          const resealed = backend.aesGcmSeal(key, iv, msg, aad);
          return Promise.resolve(
            timingSafeEqual(opened, msg) && timingSafeEqual(resealed, sealed)
              ? "accepted"
              : "wrong-output",
          );
        });
      },
    },
    {
      file: "x25519_test.json",
      schema: "xdh_comp_schema_v1.json",
      label,
      group: () =>
        Promise.resolve((test) => {
          let secret: Uint8Array;
          try {
            secret = backend.x25519SharedSecret(fromHex(test.private), fromHex(test.public));
          } catch {
            return Promise.resolve("rejected");
          }
          if (secret.every((byte) => byte === 0)) return Promise.resolve("rejected");
          return Promise.resolve(
            timingSafeEqual(secret, fromHex(test.shared)) ? "accepted" : "wrong-output",
          );
        }),
    },
  ];
}

const NO_WEBCRYPTO_MLKEM = "this runtime's WebCrypto has no ML-KEM-768";
const ENCAPS_M_SKIP = "key accepted, but (c, K) depend on the randomness m, which WebCrypto's " +
  "encapsulateBits cannot take: compared on the noble run";

/** The three ML-KEM-768 files, run through one backend of lib/crypto/mlkem.ts. */
function mlkemFiles(kem: MlKem768 | undefined, backend: string): SuiteFile[] {
  const unavailable = () => Promise.resolve({ skip: NO_WEBCRYPTO_MLKEM });
  return [
    {
      file: "mlkem_768_test.json",
      schema: "mlkem_test_schema.json",
      label: `${backend} backend`,
      // Decapsulation from the 64-byte seed d‖z; `ek`, where given, must be the seed's key.
      group: () =>
        !kem ? unavailable() : Promise.resolve((test) =>
          mlkemOutcome(async () => {
            const pair = await kem.generateKeyPair(fromHex(test.seed));
            const secret = await pair.decapsulate(fromHex(test.c));
            const ekMatches = test.ek === undefined ||
              timingSafeEqual(pair.encapsulationKey, fromHex(test.ek));
            return ekMatches && timingSafeEqual(secret, fromHex(test.K));
          })
        ),
    },
    {
      file: "mlkem_768_encaps_test.json",
      schema: "mlkem_encaps_test_schema.json",
      label: `${backend} backend`,
      group: () =>
        !kem ? unavailable() : Promise.resolve(async (test) => {
          const ek = fromHex(test.ek);
          if (kem.takesEncapsulationRandomness) {
            return await mlkemOutcome(async () => {
              const { ciphertext, sharedSecret } = await kem.encapsulate(ek, fromHex(test.m));
              return timingSafeEqual(ciphertext, fromHex(test.c)) &&
                timingSafeEqual(sharedSecret, fromHex(test.K));
            });
          }
          // WebCrypto draws m itself. The key decision is still ours to test: a refused key
          // is "rejected" (and fails a valid case); an accepted one with expected outputs
          // (c, K) is skipped for the output comparison, which the noble run makes. Invalid
          // cases carry no outputs, so an accepted invalid key is never skipped: it fails.
          const verdict = await mlkemOutcome(async () => {
            const { ciphertext, sharedSecret } = await kem.encapsulate(ek);
            return ciphertext.length === 1088 && sharedSecret.length === 32;
          });
          return verdict === "accepted" && test.c !== "" ? { skip: ENCAPS_M_SKIP } : verdict;
        }),
    },
    {
      file: "mlkem_768_keygen_seed_test.json",
      schema: "mlkem_keygen_seed_test_schema.json",
      label: `${backend} backend; the expanded dk (which no backend exports) is compared ` +
        "by behaviour: raw noble decapsulating with the vector's dk must agree with our key " +
        "on a real and on a corrupted ciphertext (the latter exercises z)",
      group: () =>
        !kem ? unavailable() : Promise.resolve((test) =>
          mlkemOutcome(async () => {
            const pair = await kem.generateKeyPair(fromHex(test.seed));
            if (!timingSafeEqual(pair.encapsulationKey, fromHex(test.ek))) return false;
            const dk = fromHex(test.dk);
            const { ciphertext, sharedSecret } = await kem.encapsulate(pair.encapsulationKey);
            const corrupted = ciphertext.slice();
            corrupted[0] ^= 1;
            return timingSafeEqual(await pair.decapsulate(ciphertext), sharedSecret) &&
              timingSafeEqual(rawNoble.decapsulate(ciphertext, dk), sharedSecret) &&
              timingSafeEqual(
                await pair.decapsulate(corrupted),
                rawNoble.decapsulate(corrupted, dk),
              );
          })
        ),
    },
  ];
}

const NOT_A_SHARE = "key given in an encoding securechat never parses for a key share";
const X25519_SPKI_PREFIX = "302a300506032b656e032100";
const X25519_PKCS8_PREFIX = "302e020100300506032b656e04220420";
const P256_SPKI_PREFIX = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

const FILES: SuiteFile[] = [
  {
    file: "rsa_signature_2048_sha256_test.json",
    schema: "rsassa_pkcs1_verify_schema_v1.json",
    label: LIBCRYPTO_MISSING === undefined
      ? "libcrypto: verify() through lib/crypto/openssl_rsa.ts"
      : `BigInt: verify(), libcrypto not loadable (${LIBCRYPTO_MISSING})`,
    group: async (group) => {
      const key = await importVerifyingKeySpki(fromHex(group.publicKeyDer));
      assert.equal(key.rsa?.native !== undefined, LIBCRYPTO_MISSING === undefined, "native key");
      return await verifyRunner()(group);
    },
  },
  {
    file: "rsa_signature_2048_sha256_test.json",
    schema: "rsassa_pkcs1_verify_schema_v1.json",
    label: "BigInt: lib/crypto/rsa_verify.ts without a native key, as in the page",
    group: async (group) => {
      const { rsa } = await importVerifyingKeySpki(fromHex(group.publicKeyDer));
      const bigint = { n: rsa!.n, e: rsa!.e, k: rsa!.k };
      return (test) =>
        Promise.resolve(
          rsaPkcs1Sha256Verify(bigint, fromHex(test.msg), fromHex(test.sig))
            ? "accepted"
            : "rejected",
        );
    },
  },
  {
    file: "rsa_pkcs1_2048_sig_gen_test.json",
    schema: "rsassa_pkcs1_generate_schema_v1.json",
    group: async (group) => {
      if (group.sha !== "SHA-256") return { skip: `${group.sha}: securechat signs with SHA-256` };
      const signer = await importSigningKeyPkcs8(fromHex(group.privateKeyPkcs8));
      // sign() goes through OpenSSL's libcrypto wherever it loads (lib/crypto/openssl_rsa.ts);
      // WebCrypto, the fallback, is held to the same vectors below.
      assert.equal(signer.rsa !== undefined, LIBCRYPTO_MISSING === undefined, "libcrypto signs");
      const verifier = await importVerifyingKeySpki(fromHex(group.keyDer));
      return async (test) => {
        const msg = fromHex(test.msg);
        const signature = await sign(signer, msg);
        const webCrypto = await crypto.subtle.sign(
          "RSASSA-PKCS1-v1_5",
          signer.key,
          source(test.msg),
        );
        if (!timingSafeEqual(signature, fromHex(test.sig))) return "wrong-output";
        if (!timingSafeEqual(new Uint8Array(webCrypto), fromHex(test.sig))) return "wrong-output";
        return await verify(verifier, msg, signature) ? "accepted" : "rejected";
      };
    },
  },
  ...["rsa_pss_2048_sha256_mgf1_0_test.json", "rsa_pss_2048_sha256_mgf1_32_test.json"].map(
    (file): SuiteFile => ({
      file,
      schema: "rsassa_pss_verify_schema_v1.json",
      label: "raw WebCrypto RSA-PSS: the protocol signs no PSS, so there is no wrapper; " +
        "run as evidence for the X.509 validator",
      group: async (group) => {
        assert.equal(group.mgfSha, group.sha);
        const params = { name: "RSA-PSS", hash: group.sha };
        const key = await crypto.subtle.importKey(
          "spki",
          source(group.publicKeyDer),
          params,
          false,
          ["verify"],
        );
        const algorithm = { name: "RSA-PSS", saltLength: Number(group.sLen) };
        return async (test) => {
          const ok = await crypto.subtle.verify(
            algorithm,
            key,
            source(test.sig),
            source(test.msg),
          ).catch(() => false);
          return ok ? "accepted" : "rejected";
        };
      },
    }),
  ),
  {
    file: "ecdsa_secp256r1_sha256_p1363_test.json",
    schema: "ecdsa_p1363_verify_schema_v1.json",
    group: verifyRunner(),
  },
  {
    file: "ecdsa_secp256r1_sha256_test.json",
    schema: "ecdsa_verify_schema_v1.json",
    group: verifyRunner((der) => ecdsaDerToP1363(der)),
  },
  { file: "ed25519_test.json", schema: "eddsa_verify_schema_v1.json", group: verifyRunner() },
  {
    file: "x25519_test.json",
    schema: "xdh_comp_schema_v1.json",
    group: () =>
      Promise.resolve((test) =>
        agreement("x25519", fromHex(test.private), fromHex(test.public), test.shared)
      ),
  },
  {
    file: "x25519_asn_test.json",
    schema: "xdh_asn_comp_schema_v1.json",
    group: () =>
      Promise.resolve((test) => {
        const priv = afterPrefix(test.private, X25519_PKCS8_PREFIX, 32);
        const pub = afterPrefix(test.public, X25519_SPKI_PREFIX, 32);
        if (!priv || !pub) return Promise.resolve({ skip: `${NOT_A_SHARE} (non-X25519 ASN.1)` });
        return agreement("x25519", priv, pub, test.shared);
      }),
  },
  {
    file: "x25519_jwk_test.json",
    schema: "xdh_jwk_comp_schema_v1.json",
    group: () =>
      Promise.resolve((test) => {
        const isX25519 = (jwk: Json) => jwk.kty === "OKP" && jwk.crv === "X25519";
        if (!isX25519(test.public) || !isX25519(test.private) || !test.public.x) {
          return Promise.resolve({ skip: `${NOT_A_SHARE} (JWK kty/crv/x fields)` });
        }
        const priv = fromBase64Url(test.private.d);
        return agreement("x25519", priv, fromBase64Url(test.public.x), test.shared);
      }),
  },
  {
    file: "ecdh_secp256r1_ecpoint_test.json",
    schema: "ecdh_ecpoint_test_schema_v1.json",
    group: () =>
      Promise.resolve((test) =>
        agreement("p256", scalar32(test.private), fromHex(test.public), test.shared)
      ),
  },
  {
    file: "ecdh_secp256r1_webcrypto_test.json",
    schema: "ecdh_webcrypto_test_schema_v1.json",
    group: () =>
      Promise.resolve((test) => {
        // Our share has no curve label: a point labelled P-256K or P-384 is not ours to judge.
        if (test.public.kty !== "EC" || test.public.crv !== "P-256") {
          return Promise.resolve({ skip: `${NOT_A_SHARE} (JWK kty/crv labels)` });
        }
        const point = concat(
          Uint8Array.of(0x04),
          fromBase64Url(test.public.x),
          fromBase64Url(test.public.y),
        );
        return agreement("p256", fromBase64Url(test.private.d), point, test.shared);
      }),
  },
  {
    file: "ecdh_secp256r1_test.json",
    schema: "ecdh_test_schema_v1.json",
    group: () =>
      Promise.resolve((test) => {
        const point = afterPrefix(test.public, P256_SPKI_PREFIX, 65);
        if (!point) return Promise.resolve({ skip: `${NOT_A_SHARE} (SPKI variants)` });
        return agreement("p256", scalar32(test.private), point, test.shared);
      }),
  },
  {
    file: "aes_gcm_test.json",
    schema: "aead_test_schema_v1.json",
    label: "lib/crypto/aead.ts over #sync-crypto node",
    group: (group) => {
      if (group.ivSize !== 96) {
        return Promise.resolve({ skip: "IV ≠ 96 bits: the wrapper takes RFC 8446 nonces only" });
      }
      if (group.tagSize !== 128) return Promise.resolve({ skip: "tag ≠ 128 bits" });
      if (group.keySize !== 8 * AES_KEY_BYTES) {
        return Promise.resolve({
          skip: "key ≠ 256 bits: the wrapper takes AES-256 only (PROTOCOL §12); the " +
            "#sync-crypto runs below cover the other sizes",
        });
      }
      return Promise.resolve((test) => {
        const [key, iv, aad, msg] = [test.key, test.iv, test.aad, test.msg].map(fromHex);
        const sealed = concat(fromHex(test.ct), fromHex(test.tag));
        let opened: Uint8Array;
        try {
          opened = openAesGcm(key, iv, sealed, aad);
        } catch (error) {
          // Only the wrapper's one code counts as a refusal: anything else is a bug in it.
          return Promise.resolve(codeOf(error) === "DECRYPT_FAIL" ? "rejected" : "wrong-output");
        }
        const resealed = sealAesGcm(key, iv, msg, aad);
        return Promise.resolve(
          timingSafeEqual(opened, msg) && timingSafeEqual(resealed, sealed)
            ? "accepted"
            : "wrong-output",
        );
      });
    },
  },
  {
    file: "hkdf_sha256_test.json",
    schema: "hkdf_test_schema_v1.json",
    group: () =>
      Promise.resolve(async (test) => {
        let okm: Uint8Array;
        try {
          const prk = await hkdfExtract(fromHex(test.salt), fromHex(test.ikm));
          okm = await hkdfExpand(prk, fromHex(test.info), test.size);
        } catch {
          return "rejected";
        }
        return timingSafeEqual(okm, fromHex(test.okm)) ? "accepted" : "wrong-output";
      }),
  },
  {
    file: "pbkdf2_hmacsha256_test.json",
    schema: "pbkdf_test_schema.json",
    label: "raw WebCrypto PBKDF2: lib/crypto/password.ts (another owner) wraps it",
    group: () =>
      Promise.resolve(async (test) => {
        const password = await crypto.subtle.importKey(
          "raw",
          source(test.password),
          "PBKDF2",
          false,
          ["deriveBits"],
        );
        const params = {
          name: "PBKDF2",
          hash: "SHA-256",
          salt: source(test.salt),
          iterations: test.iterationCount,
        };
        const dk = new Uint8Array(await crypto.subtle.deriveBits(params, password, 8 * test.dkLen));
        return timingSafeEqual(dk, fromHex(test.dk)) ? "accepted" : "wrong-output";
      }),
  },
  ...mlkemFiles(webCryptoMlKem768, "webcrypto"),
  ...mlkemFiles(nobleMlKem768, "noble"),
  ...syncFiles(nodeSync, "#sync-crypto node"),
  ...syncFiles(browserSync, "#sync-crypto browser"),
];

// ---- the loop --------------------------------------------------------------

function expectationOf(file: string, test: Case): Expectation | string {
  if (test.result === "valid") return "accepted";
  if (test.result === "invalid") return "rejected";
  const policy = ACCEPTABLE_POLICY_TABLE[file] ?? {};
  const pinned = test.flags.filter((flag) => flag in policy).map((flag) => policy[flag]);
  if (pinned.length === 0) return `no pinned policy for acceptable flags [${test.flags}]`;
  return pinned.includes("rejected") ? "rejected" : "accepted";
}

async function runFile(entry: SuiteFile): Promise<void> {
  const suite = JSON.parse(await Deno.readTextFile(new URL(entry.file, SUITE)));
  assert.equal(suite.schema, entry.schema, `${entry.file}: schema changed`);
  const counts = { valid: 0, invalid: 0, acceptedAcceptable: 0, rejectedAcceptable: 0 };
  const skipped = new Map<string, number>();
  const failures: string[] = [];
  let seen = 0;
  for (const group of suite.testGroups) {
    const prepared = await entry.group(group);
    for (const test of group.tests as Case[]) {
      seen++;
      const verdict = typeof prepared === "function" ? await prepared(test) : prepared;
      if (typeof verdict === "object") {
        skipped.set(verdict.skip, (skipped.get(verdict.skip) ?? 0) + 1);
        continue;
      }
      const expected = expectationOf(entry.file, test);
      if (verdict !== expected) {
        failures.push(
          `tcId ${test.tcId} (${test.result} [${test.flags}] ${test.comment}): ` +
            `expected ${expected}, got ${verdict}`,
        );
      } else if (test.result === "valid") counts.valid++;
      else if (test.result === "invalid") counts.invalid++;
      else if (verdict === "accepted") counts.acceptedAcceptable++;
      else counts.rejectedAcceptable++;
    }
  }
  const skipText = [...skipped].map(([reason, n]) => `${n} × ${reason}`).join("; ");
  console.log(
    `wycheproof ${entry.file}${entry.label ? ` [${entry.label}]` : ""}: ` +
      `${counts.valid} valid passed, ${counts.invalid} invalid rejected, ` +
      `acceptable ${counts.acceptedAcceptable} accepted / ${counts.rejectedAcceptable} rejected ` +
      `per policy, ${[...skipped.values()].reduce((a, b) => a + b, 0)} skipped` +
      (skipText ? ` (${skipText})` : "") + `, ${failures.length} failed`,
  );
  assert.equal(seen, suite.numberOfTests, `${entry.file}: not every case was visited`);
  assert.deepEqual(failures, []);
}

const skip = skipUnless("wycheproof", peerSuiteMissing("wycheproof/"), "every Wycheproof vector");

for (const entry of FILES) {
  Deno.test({
    name: `wycheproof ${entry.file}${
      entry.file.startsWith("mlkem") || entry.file.startsWith("rsa_signature")
        ? ` (${entry.label?.split(/[ :]/)[0]})`
        : ""
    } matches our wrappers on every vector`,
    ignore: skip,
    fn: () => runFile(entry),
  });
}

Deno.test({
  name: "wycheproof suite: every relevant file in MANIFEST.json is run",
  ignore: skip,
  fn: async () => {
    const manifest = JSON.parse(await Deno.readTextFile(new URL("MANIFEST.json", SUITE)));
    const run = [...new Set(FILES.map((f) => f.file))].sort();
    assert.deepEqual(Object.keys(manifest.files).sort(), run);
  },
});

Deno.test("#sync-crypto scrypt(): the node and browser backends agree (RFC 7914 §12 vector 2)", () => {
  // RFC 7914 §12: P = "password", S = "NaCl", N = 1024, r = 8, p = 16, dkLen = 64.
  const expected = "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162" +
    "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640";
  const params = { N: 1024, r: 8, p: 16, maxmem: 64 * 1024 * 1024 };
  for (const backend of [nodeSync, browserSync]) {
    const out = backend.scrypt("password", new TextEncoder().encode("NaCl"), params, 64);
    assert.equal(
      [...out].map((b) => b.toString(16).padStart(2, "0")).join(""),
      expected,
    );
  }
});
