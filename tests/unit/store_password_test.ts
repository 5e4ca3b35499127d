import assert from "node:assert/strict";
import { createHash, pbkdf2Sync } from "node:crypto";
import { codeOf } from "../../lib/errors.ts";
import { fromHex, fromUtf8, toHex } from "../../lib/bytes.ts";
import {
  checkNewPassword,
  hashPassword,
  needsRehash,
  type PasswordHash,
  PBKDF2_ITERATIONS,
  verifyPassword,
} from "../../lib/crypto/password.ts";
import { PEER_SUITES, peerSuiteMissing, skipUnless } from "../helpers/optional_suites.ts";

const PASSWORD = "correct horse battery staple";

Deno.test("hashPassword() uses PBKDF2-SHA256 at 600,000 iterations with a fresh 16-byte salt", async () => {
  const [a, b] = await Promise.all([hashPassword(PASSWORD), hashPassword(PASSWORD)]);
  assert.equal(a.scheme, "pbkdf2-sha256");
  assert.equal(a.iterations, 600_000);
  assert.equal(PBKDF2_ITERATIONS, 600_000);
  assert.equal(a.salt.length, 16);
  assert.equal(a.hash.length, 32);
  assert.notEqual(toHex(a.salt), toHex(b.salt));
  assert.notEqual(toHex(a.hash), toHex(b.hash));
});

Deno.test("verifyPassword() accepts only the exact password", async () => {
  // Made by node:crypto at a low count: exactness does not depend on the count, and six
  // checks at 600,000 would cost seconds (hashPassword's own count is pinned above).
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const stored: PasswordHash = {
    scheme: "pbkdf2-sha256",
    iterations: 1000,
    salt,
    hash: new Uint8Array(pbkdf2Sync(PASSWORD, salt, 1000, 32, "sha256")),
  };
  const cases: [string, boolean][] = [
    [PASSWORD, true],
    [PASSWORD.toUpperCase(), false],
    [PASSWORD.slice(0, -1), false],
    [PASSWORD + "!", false],
    [" " + PASSWORD, false],
    ["", false],
  ];
  for (const [candidate, expected] of cases) {
    assert.equal(await verifyPassword(candidate, stored), expected, JSON.stringify(candidate));
  }
});

Deno.test("verifyPassword() treats NFC and NFD spellings of a password as one", async () => {
  const nfc = "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e";
  const nfd = nfc.normalize("NFD");
  assert.notEqual(nfc, nfd);
  assert.ok(await verifyPassword(nfd, await hashPassword(nfc)));
  assert.ok(await verifyPassword(nfc, await hashPassword(nfd)));
});

Deno.test("verifyPassword() checks seed-scheme rows as SHA-256(salt || password)", async () => {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const hex = createHash("sha256").update(salt).update("hunter2", "utf8").digest("hex");
  const stored: PasswordHash = { scheme: "seed-sha256", iterations: 1, salt, hash: fromHex(hex) };
  assert.equal(await verifyPassword("hunter2", stored), true);
  assert.equal(await verifyPassword("hunter3", stored), false);
  assert.equal(await verifyPassword("hunter2", { ...stored, salt: new Uint8Array(16) }), false);
});

const WYCHEPROOF_PBKDF2 = "wycheproof/pbkdf2_hmacsha256_test.json";

Deno.test({
  name: "verifyPassword() agrees with Wycheproof's PBKDF2-HMAC-SHA256 vectors",
  ignore: skipUnless(
    "wycheproof",
    peerSuiteMissing(WYCHEPROOF_PBKDF2),
    "Wycheproof's PBKDF2 vectors",
  ),
  async fn() {
    const suite: { testGroups: { tests: Record<string, unknown>[] }[] } = JSON.parse(
      await Deno.readTextFile(new URL(WYCHEPROOF_PBKDF2, PEER_SUITES)),
    );
    let used = 0;
    for (const test of suite.testGroups.flatMap((g) => g.tests)) {
      const { password, salt, iterationCount, dkLen, dk, result } = test as {
        password: string;
        salt: string;
        iterationCount: number;
        dkLen: number;
        dk: string;
        result: string;
      };
      // Our hashes are the first 32 bytes (PBKDF2's first block), from NFC text passwords, with
      // iteration counts small enough for a unit test.
      let text: string;
      try {
        text = fromUtf8(fromHex(password));
      } catch {
        continue;
      }
      if (dkLen < 32 || text !== text.normalize("NFC") || iterationCount > 20_000) continue;
      const hash = fromHex(dk).subarray(0, 32);
      const stored: PasswordHash = {
        scheme: "pbkdf2-sha256",
        iterations: iterationCount,
        salt: fromHex(salt),
        hash,
      };
      assert.equal(await verifyPassword(text, stored), result === "valid", `tcId ${test.tcId}`);
      const flipped = hash.slice();
      flipped[31] ^= 1;
      assert.equal(await verifyPassword(text, { ...stored, hash: flipped }), false);
      used++;
    }
    assert.ok(used >= 20, `only ${used} vectors usable`);
  },
});

Deno.test("verifyPassword() throws INTERNAL for a stored hash it cannot use", async () => {
  const good = await hashPassword(PASSWORD);
  for (
    const bad of [
      { ...good, iterations: 0 },
      { ...good, iterations: Number.NaN },
      { ...good, scheme: "md5" as PasswordHash["scheme"] },
    ]
  ) {
    assert.equal(await verifyPassword(PASSWORD, bad).then(() => "resolved", codeOf), "INTERNAL");
  }
});

Deno.test("needsRehash() flags the seed scheme and weaker iteration counts only", () => {
  const base = { salt: new Uint8Array(16), hash: new Uint8Array(32) };
  const cases: [PasswordHash, boolean][] = [
    [{ ...base, scheme: "seed-sha256", iterations: 1 }, true],
    [{ ...base, scheme: "pbkdf2-sha256", iterations: 100_000 }, true],
    [{ ...base, scheme: "pbkdf2-sha256", iterations: PBKDF2_ITERATIONS - 1 }, true],
    [{ ...base, scheme: "pbkdf2-sha256", iterations: PBKDF2_ITERATIONS }, false],
    [{ ...base, scheme: "pbkdf2-sha256", iterations: 1_000_000 }, false],
  ];
  for (const [stored, expected] of cases) {
    assert.equal(needsRehash(stored), expected, `${stored.scheme} ${stored.iterations}`);
  }
});

Deno.test("checkNewPassword() allows 8 to 1024 UTF-8 bytes after NFC", () => {
  const nfdE = "e\u0301"; // 3 bytes as NFD, 2 as NFC "é"
  const cases: [string, string, boolean][] = [
    ["7 bytes", "1234567", false],
    ["8 bytes", "12345678", true],
    ["1024 bytes", "x".repeat(1024), true],
    ["1025 bytes", "x".repeat(1025), false],
    ["4 two-byte characters", "\u00e9".repeat(4), true],
    ["3 NFD é: 9 bytes, but 6 after NFC", nfdE.repeat(3), false],
    ["4 NFD é: 8 bytes after NFC", nfdE.repeat(4), true],
    ["512 é: 1024 bytes", "\u00e9".repeat(512), true],
    ["513 é: 1026 bytes though 513 characters", "\u00e9".repeat(513), false],
  ];
  for (const [label, password, ok] of cases) {
    let code = "ok";
    try {
      checkNewPassword(password);
    } catch (error) {
      code = codeOf(error);
      assert.ok(!(error as Error).message.includes(password), "the message holds the password");
    }
    assert.equal(code, ok ? "ok" : "INVALID_INPUT", label);
  }
});

Deno.test("hashPassword() leaves the event loop free while it runs", async () => {
  // WebCrypto's deriveBits runs on a worker thread in Deno; if it ran on this one, no timer
  // could fire until it finished and `ticks` would stay 0.
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const start = performance.now();
  try {
    await hashPassword(PASSWORD);
  } finally {
    clearInterval(timer);
  }
  const elapsed = performance.now() - start;
  assert.ok(elapsed > 20, `a hash took only ${elapsed} ms: too fast to show anything`);
  assert.ok(ticks >= 3, `${ticks} timer ticks during a ${elapsed.toFixed(0)} ms hash`);
});
