/**
 * lib/crypto/openssl_rsa.ts: RSA PKCS#1 v1.5 / SHA-256 signing through OpenSSL's libcrypto,
 * held to WebCrypto's output byte for byte (the scheme is deterministic), to our own verifier,
 * and to its refusals. The Wycheproof signing vectors run in ./wycheproof_test.ts.
 */
import assert from "node:assert/strict";
import { type Libcrypto, LIBCRYPTO_PATHS, openLibcrypto } from "../../lib/crypto/libcrypto.ts";
import { importRsaKey } from "../../lib/crypto/openssl_rsa.ts";
import {
  importSigningKeyPkcs8,
  importVerifyingKeySpki,
  rsaSignerOf,
  sign,
  verify,
} from "../../lib/crypto/signature.ts";
import * as nodeSync from "../../lib/crypto/sync_node.ts";
import * as browserSync from "../../lib/crypto/sync_browser.ts";
import { timingSafeEqual } from "../../lib/bytes.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { libcryptoMissing } from "../helpers/openssl.ts";
import { skipUnless } from "../helpers/optional_suites.ts";
import { parseStartTask } from "../../testkit/start_task.ts";

const ignore = skipUnless("openssl", libcryptoMissing(), "RSA signing through libcrypto");

function isCode(code: string) {
  return (error: unknown) => error instanceof SecureChatError && error.code === code;
}

async function rsaKeyPair(bits: number): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: bits,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
}

async function exported(pair: CryptoKeyPair) {
  return {
    pkcs8: new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    spki: new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey)),
  };
}

function libcrypto(): Libcrypto {
  const opened = openLibcrypto();
  if ("reason" in opened) throw new Error(opened.reason);
  return opened;
}

Deno.test("LIBCRYPTO_PATHS is exactly what the start, compile and test:unit tasks' --allow-ffi grant", async () => {
  const tasks = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  ).tasks as Record<string, string>;
  const grant = `--allow-ffi=${LIBCRYPTO_PATHS.join(",")}`;
  assert.ok(parseStartTask(tasks.start).includes(grant), "start");
  for (const task of ["compile", "test:unit"]) {
    assert.ok(tasks[task].split(/\s+/).includes(grant), task);
  }
  for (const path of LIBCRYPTO_PATHS) assert.ok(path.startsWith("/"), `${path} is absolute`);
});

Deno.test({
  name:
    "openSslRsaKey.signDigest() gives WebCrypto's signature byte for byte, over random keys and messages",
  ignore,
  fn: async () => {
    const openssl = libcrypto();
    for (const bits of [2048, 2048, 3072]) {
      const pair = await rsaKeyPair(bits);
      const { pkcs8, spki } = await exported(pair);
      const verifier = await importVerifyingKeySpki(spki);
      const key = importRsaKey(openssl, pkcs8, bits);
      for (let i = 0; i < 16; i++) {
        const message = crypto.getRandomValues(new Uint8Array(i * 97));
        const native = key.signDigest(nodeSync.sha256(message));
        const webCrypto = new Uint8Array(
          await crypto.subtle.sign("RSASSA-PKCS1-v1_5", pair.privateKey, message),
        );
        assert.equal(native.length, bits / 8);
        assert.ok(timingSafeEqual(native, webCrypto), `${bits}-bit key, message ${i}`);
        assert.ok(await verify(verifier, message, native));
      }
      key.dispose();
    }
  },
});

Deno.test({
  name: "importSigningKeyPkcs8() gives an RSA key to libcrypto, and sign() uses it",
  ignore,
  fn: async () => {
    const pair = await rsaKeyPair(2048);
    const { pkcs8 } = await exported(pair);
    const key = await importSigningKeyPkcs8(pkcs8);
    assert.ok(key.rsa, "the key went to libcrypto");
    const signer = rsaSignerOf(key);
    assert.equal(signer?.native, true);
    assert.match(signer!.detail, /^OpenSSL 3\.\S+ .*libcrypto \(\/.*libcrypto/);
    const message = new TextEncoder().encode("signed by libcrypto");
    const expected = new Uint8Array(
      await crypto.subtle.sign("RSASSA-PKCS1-v1_5", pair.privateKey, message),
    );
    assert.ok(timingSafeEqual(await sign(key, message), expected));
  },
});

Deno.test("importSigningKeyPkcs8() leaves Ed25519 and ECDSA keys off libcrypto", async () => {
  const ed25519 = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
  ]) as CryptoKeyPair;
  const edKey = await importSigningKeyPkcs8(
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", ed25519.privateKey)),
  );
  assert.equal(edKey.rsa, undefined);
  assert.ok(edKey.native, "Ed25519 keeps node:crypto");
  assert.equal(rsaSignerOf(edKey), undefined);
  const p256 = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
  ]) as CryptoKeyPair;
  const ecKey = await importSigningKeyPkcs8(
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", p256.privateKey)),
  );
  assert.equal(ecKey.rsa, undefined);
  assert.equal(rsaSignerOf(ecKey), undefined);
});

Deno.test({
  name: "importRsaKey() refuses malformed and foreign DER with INVALID_INPUT",
  ignore,
  fn: async () => {
    const openssl = libcrypto();
    const { pkcs8 } = await exported(await rsaKeyPair(2048));
    const ed25519 = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
      "sign",
    ]) as CryptoKeyPair;
    const edPkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", ed25519.privateKey));
    const cases: [string, Uint8Array, number][] = [
      ["empty", new Uint8Array(), 2048],
      ["garbage", crypto.getRandomValues(new Uint8Array(1200)), 2048],
      ["truncated", pkcs8.subarray(0, pkcs8.length - 40), 2048],
      ["an Ed25519 key", edPkcs8, 2048],
      ["a 2048-bit key said to be 3072", pkcs8, 3072],
    ];
    for (const [what, der, bits] of cases) {
      assert.throws(() => importRsaKey(openssl, der, bits), isCode("INVALID_INPUT"), what);
    }
  },
});

Deno.test({
  name: "openSslRsaKey.signDigest() refuses a digest of the wrong length and a disposed key",
  ignore,
  fn: async () => {
    const key = importRsaKey(libcrypto(), (await exported(await rsaKeyPair(2048))).pkcs8, 2048);
    assert.throws(() => key.signDigest(new Uint8Array(31)), isCode("INTERNAL"));
    assert.equal(key.signDigest(new Uint8Array(32)).length, 256);
    key.dispose();
    key.dispose(); // idempotent: nothing freed twice
    assert.throws(() => key.signDigest(new Uint8Array(32)), isCode("INTERNAL"));
  },
});

Deno.test("openLibcrypto() says why when no path loads, and never prompts", () => {
  const absent = "/nonexistent/securechat/libcrypto.so.3";
  const opened = openLibcrypto([absent]);
  assert.ok("reason" in opened, "a library that does not exist was opened");
  const granted = Deno.permissions.querySync({ name: "ffi", path: absent }).state === "granted";
  // test:unit grants --allow-ffi for LIBCRYPTO_PATHS only; `deno task test` grants all.
  assert.match(
    opened.reason,
    granted ? /not loadable from \/nonexistent\/.*install libssl3/ : /no --allow-ffi for libcrypto/,
  );
});

Deno.test("the browser backend has no synchronous RSA key and says WebCrypto signs", () => {
  assert.equal(browserSync.rsaSyncKey(new Uint8Array(1), 2048), undefined);
  assert.deepEqual(browserSync.rsaSigner(), { native: false, detail: "the browser's WebCrypto" });
});
