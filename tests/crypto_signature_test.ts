import assert from "node:assert/strict";
import { SecureChatError } from "../lib/errors.ts";
import { concat, fromBase64, fromHex, randomBytes, toHex, utf8 } from "../lib/bytes.ts";
import {
  ecdsaDerToP1363,
  importSigningKeyPkcs8,
  importVerifyingKeySpki,
  sign,
  type SignatureAlgorithm,
  signatureLength,
  verify,
} from "../lib/crypto/signature.ts";
import { skipUnless } from "./helpers/optional_suites.ts";

function isCode(code: string) {
  return (e: unknown) => e instanceof SecureChatError && e.code === code;
}

/** `openssl genpkey` arguments per key kind; the first three are ours. */
const KEY_KINDS = {
  "rsa-pkcs1-sha256": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  "ecdsa-p256-sha256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "ed25519": ["-algorithm", "ED25519"],
  "rsa-1024": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
  "ecdsa-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  "ed448": ["-algorithm", "ED448"],
  "x25519": ["-algorithm", "X25519"],
} as const;
type KeyKind = keyof typeof KEY_KINDS;
const ALGORITHMS: SignatureAlgorithm[] = ["rsa-pkcs1-sha256", "ecdsa-p256-sha256", "ed25519"];
const EXPECTED_LENGTH: Record<SignatureAlgorithm, number> = {
  "rsa-pkcs1-sha256": 256,
  "ecdsa-p256-sha256": 64,
  "ed25519": 64,
};

const hasOpenssl = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);
const skipOpenssl = skipUnless(
  "openssl",
  hasOpenssl ? undefined : "openssl is not on PATH",
  "the signature tests on openssl-made keys",
);

async function openssl(dir: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

function pemToDer(pem: string, label: string): Uint8Array {
  const match = pem.match(new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`));
  assert.ok(match, `no ${label} PEM block`);
  return fromBase64(match[1].replace(/\s+/g, ""));
}

interface KeyFiles {
  dir: string;
  pkcs8: Uint8Array;
  spki: Uint8Array;
}

const tempDirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const dir of tempDirs) Deno.removeSync(dir, { recursive: true });
});

/** Keys made once per run by `openssl genpkey`, as PKCS#8 and SPKI PEM files in a temp dir. */
const keys = new Map<KeyKind, Promise<KeyFiles>>();
function keyFiles(kind: KeyKind): Promise<KeyFiles> {
  if (!keys.has(kind)) {
    keys.set(
      kind,
      (async () => {
        const dir = await Deno.makeTempDir({ prefix: `securechat-${kind}-` });
        tempDirs.push(dir);
        await openssl(dir, "genpkey", ...KEY_KINDS[kind], "-out", "key.pem");
        await openssl(dir, "pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem");
        const pem = (name: string) => Deno.readTextFile(`${dir}/${name}`);
        return {
          dir,
          pkcs8: pemToDer(await pem("key.pem"), "PRIVATE KEY"),
          spki: pemToDer(await pem("pub.pem"), "PUBLIC KEY"),
        };
      })(),
    );
  }
  return keys.get(kind)!;
}

async function keyPair(algorithm: SignatureAlgorithm) {
  const files = await keyFiles(algorithm);
  return {
    files,
    signer: await importSigningKeyPkcs8(files.pkcs8),
    verifier: await importVerifyingKeySpki(files.spki),
  };
}

function keyTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: skipOpenssl, fn });
}

keyTest(
  "importSigningKeyPkcs8() and importVerifyingKeySpki() read the algorithm from the key",
  async () => {
    for (const algorithm of ALGORITHMS) {
      const { signer, verifier } = await keyPair(algorithm);
      assert.equal(signer.algorithm, algorithm);
      assert.equal(verifier.algorithm, algorithm);
      assert.equal(signer.key.extractable, false, `${algorithm} private key`);
      assert.equal(signer.key.type, "private");
      assert.equal(verifier.key.type, "public");
      assert.equal(signatureLength(verifier), EXPECTED_LENGTH[algorithm]);
    }
  },
);

keyTest("sign() output verifies, has signatureLength() bytes and binds the message", async () => {
  const message = utf8("securechat/v1 test message");
  for (const algorithm of ALGORITHMS) {
    const { signer, verifier } = await keyPair(algorithm);
    const signature = await sign(signer, message);
    assert.equal(signature.length, signatureLength(verifier), algorithm);
    assert.equal(await verify(verifier, message, signature), true, algorithm);
    assert.equal(await verify(verifier, utf8("securechat/v1 test messagE"), signature), false);
    assert.equal(await verify(verifier, new Uint8Array(), signature), false);
  }
});

keyTest("sign() is deterministic for RSA PKCS#1 v1.5 and Ed25519", async () => {
  const message = utf8("same input");
  for (const algorithm of ["rsa-pkcs1-sha256", "ed25519"] as const) {
    const { signer } = await keyPair(algorithm);
    assert.deepEqual(await sign(signer, message), await sign(signer, message), algorithm);
  }
});

keyTest("verify() accepts signatures made by openssl (ECDSA via ecdsaDerToP1363())", async () => {
  const message = utf8("signed by openssl");
  for (const algorithm of ALGORITHMS) {
    const { files, verifier } = await keyPair(algorithm);
    await Deno.writeFile(`${files.dir}/msg`, message);
    if (algorithm === "ed25519") {
      await openssl(
        files.dir,
        "pkeyutl",
        "-sign",
        "-rawin",
        "-inkey",
        "key.pem",
        "-in",
        "msg",
        "-out",
        "sig",
      );
    } else {
      await openssl(files.dir, "dgst", "-sha256", "-sign", "key.pem", "-out", "sig", "msg");
    }
    const raw = await Deno.readFile(`${files.dir}/sig`);
    const signature = algorithm === "ecdsa-p256-sha256" ? ecdsaDerToP1363(raw) : raw;
    assert.equal(await verify(verifier, message, signature), true, algorithm);
  }
});

keyTest(
  "verify() returns false, never throws, for wrong-length, garbage or altered signatures",
  async () => {
    const message = utf8("message");
    for (const algorithm of ALGORITHMS) {
      const { signer, verifier } = await keyPair(algorithm);
      const good = await sign(signer, message);
      const flip = (i: number) => good.map((b, j) => (j === i ? b ^ 0x01 : b));
      const n = good.length;
      const cases: [string, Uint8Array][] = [
        ["empty", new Uint8Array()],
        ["one byte short", good.subarray(0, n - 1)],
        ["one byte long", concat(good, new Uint8Array(1))],
        ["leading zero added", concat(new Uint8Array(1), good)],
        ["double length", concat(good, good)],
        ["all zero", new Uint8Array(n)],
        ["all 0xff", new Uint8Array(n).fill(0xff)],
        ["random", randomBytes(n)],
        ["first bit flipped", flip(0)],
        ["middle bit flipped", flip(n >> 1)],
        ["last bit flipped", flip(n - 1)],
      ];
      for (const [name, signature] of cases) {
        assert.equal(await verify(verifier, message, signature), false, `${algorithm}: ${name}`);
      }
      assert.equal(await verify(verifier, message, good), true, `${algorithm}: the original`);
    }
  },
);

keyTest(
  "import functions refuse other algorithms, curves and RSA < 2048 bits with UNSUPPORTED",
  async () => {
    for (const kind of ["rsa-1024", "ecdsa-p384", "ed448", "x25519"] as const) {
      const { pkcs8, spki } = await keyFiles(kind);
      await assert.rejects(importSigningKeyPkcs8(pkcs8), isCode("UNSUPPORTED"), `${kind} pkcs8`);
      await assert.rejects(importVerifyingKeySpki(spki), isCode("UNSUPPORTED"), `${kind} spki`);
    }
  },
);

keyTest(
  "import functions refuse malformed DER and swapped formats with INVALID_INPUT",
  async () => {
    const { pkcs8, spki } = await keyFiles("ecdsa-p256-sha256");
    const cases: [string, () => Promise<unknown>][] = [
      ["empty pkcs8", () => importSigningKeyPkcs8(new Uint8Array())],
      ["truncated pkcs8", () => importSigningKeyPkcs8(pkcs8.subarray(0, pkcs8.length - 1))],
      ["pkcs8 with trailing byte", () => importSigningKeyPkcs8(concat(pkcs8, new Uint8Array(1)))],
      ["spki given as pkcs8", () => importSigningKeyPkcs8(spki)],
      ["empty spki", () => importVerifyingKeySpki(new Uint8Array())],
      ["truncated spki", () => importVerifyingKeySpki(spki.subarray(0, spki.length - 1))],
      ["pkcs8 given as spki", () => importVerifyingKeySpki(pkcs8)],
      ["PEM text instead of DER", () => importVerifyingKeySpki(utf8("-----BEGIN PUBLIC KEY-----"))],
    ];
    for (const [name, run] of cases) await assert.rejects(run(), isCode("INVALID_INPUT"), name);
  },
);

const PAD31 = "00".repeat(31);
const BIG = "80" + "00".repeat(31); // a 32-byte magnitude with its top bit set

Deno.test("ecdsaDerToP1363() converts canonical DER to left-padded r||s", () => {
  const cases: [string, string, string][] = [
    ["r = 1, s = 2", "3006020101020102", `${PAD31}01${PAD31}02`],
    ["r = 0 (DER-valid; verify refuses it)", "3006020100020101", `${PAD31}00${PAD31}01`],
    ["r needs its 0x00 sign byte", `3026022100${BIG}020101`, `${BIG}${PAD31}01`],
    ["r and s both need sign bytes", `3046022100${BIG}022100${BIG}`, `${BIG}${BIG}`],
  ];
  for (const [name, der, p1363] of cases) {
    assert.equal(toHex(ecdsaDerToP1363(fromHex(der))), p1363, name);
  }
  assert.equal(ecdsaDerToP1363(fromHex("3006020101020102"), 48).length, 96, "size 48 (P-384)");
});

Deno.test("ecdsaDerToP1363() throws SIG_FAIL for anything but canonical DER", () => {
  const cases: [string, string][] = [
    ["empty", ""],
    ["truncated", "30060201010201"],
    ["length beyond the data", "3007020101020102"],
    ["trailing byte", "300602010102010200"],
    ["long-form length for a short value", "308106020101020102"],
    ["indefinite length (BER)", "30800201010201020000"],
    ["superfluous leading zero", "300702020001020102"],
    ["negative integer", "3006020181020101"],
    ["empty integer", "30050201010200"],
    ["one integer", "3003020101"],
    ["three integers", "3009020101020102020103"],
    ["SET instead of SEQUENCE", "3106020101020102"],
    ["OCTET STRING instead of INTEGER", "3006040101020102"],
    ["r of 33 significant bytes", `302602210100${"00".repeat(31)}020101`],
    ["r missing its sign byte", `3025022080${"00".repeat(31)}020101`],
  ];
  for (const [name, der] of cases) {
    assert.throws(() => ecdsaDerToP1363(fromHex(der)), isCode("SIG_FAIL"), name);
  }
});

keyTest(
  "Ed25519 takes the synchronous node:crypto path and agrees with WebCrypto both ways",
  async () => {
    const { signer, verifier } = await keyPair("ed25519");
    // The hot path: without the node:crypto KeyObject every message would hop to the thread pool.
    assert.ok(signer.native && verifier.native, "Ed25519 keys must carry their node:crypto form");
    const webSigner = { algorithm: signer.algorithm, key: signer.key };
    const webVerifier = { algorithm: verifier.algorithm, key: verifier.key };
    for (const message of [new Uint8Array(), utf8("chat line"), randomBytes(4096)]) {
      const native = await sign(signer, message);
      assert.deepEqual(native, await sign(webSigner, message), "Ed25519 is deterministic");
      assert.equal(await verify(webVerifier, message, native), true);
      assert.equal(await verify(verifier, message, native), true);
      const forged = native.slice();
      forged[63] ^= 0x40; // S outside the group order's range, or just wrong
      assert.equal(await verify(verifier, message, forged), false);
      assert.equal(await verify(webVerifier, message, forged), false);
    }
    for (const [rsaOrEc] of [["rsa-pkcs1-sha256"], ["ecdsa-p256-sha256"]] as const) {
      assert.equal((await keyPair(rsaOrEc)).signer.native, undefined, `${rsaOrEc} stays WebCrypto`);
    }
  },
);
