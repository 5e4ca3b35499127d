/** Unit tables for the PKI helpers: names, host matching, IP text, PKCS#8 encryption. */
import assert from "node:assert/strict";
import { SecureChatError } from "../lib/errors.ts";
import { isValidUserName } from "../lib/pki/names.ts";
import { dnsNameMatches, formatIp, parseIp } from "../lib/pki/hostname.ts";
import { readPrivateKeyPkcs8 } from "../lib/pki/key_files.ts";
import { decryptPkcs8, encryptPkcs8 } from "../lib/pki/keys.ts";
import { opensslOk } from "./helpers/openssl.ts";

Deno.test("isValidUserName() follows the 3-32 [A-Za-z0-9_.-] rule", () => {
  const cases: [string, boolean][] = [
    ["alice", true],
    ["a.b-c_d", true],
    ["9lives", true],
    ["x".repeat(32), true],
    ["x".repeat(33), false],
    ["ab", false],
    [".hidden", false],
    ["-dash", false],
    ["a/b", false],
    ["..\\x", false],
    ["al ice", false],
    ["ålice", false],
  ];
  for (const [name, ok] of cases) assert.equal(isValidUserName(name), ok, name);
});

Deno.test("dnsNameMatches() applies RFC 9525 wildcard rules", () => {
  const cases: [string, string, boolean][] = [
    ["example.com", "example.com", true],
    ["Example.COM", "example.com", true],
    ["*.example.com", "foo.example.com", true],
    ["*.example.com", "example.com", false],
    ["*.example.com", "a.b.example.com", false],
    ["f*.example.com", "foo.example.com", false],
    ["example.com", "www.example.com", false],
  ];
  for (const [presented, reference, ok] of cases) {
    assert.equal(dnsNameMatches(presented, reference), ok, `${presented} vs ${reference}`);
  }
});

Deno.test("parseIp() and formatIp() round-trip canonical text (RFC 5952)", () => {
  const cases: [string, string | null][] = [
    ["127.0.0.1", "127.0.0.1"],
    ["2001:DB8:0:0:0:8A2E:370:7334", "2001:db8::8a2e:370:7334"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["::1", "::1"],
    ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ["192.168.001.001", null],
    ["256.1.1.1", null],
    ["1::2::3", null],
    ["localhost", null],
  ];
  for (const [text, canonical] of cases) {
    const octets = parseIp(text);
    assert.equal(octets && formatIp(octets), canonical, text);
  }
});

Deno.test("decryptPkcs8() reverses encryptPkcs8() and refuses a wrong password", async () => {
  const plain = Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00);
  const sealed = await encryptPkcs8(plain, "secret");
  assert.deepEqual(await decryptPkcs8(sealed, "secret"), plain);
  await assert.rejects(
    decryptPkcs8(sealed, "Secret"),
    (e: unknown) => e instanceof SecureChatError && e.code === "AUTH_FAIL",
  );
});

Deno.test("readPrivateKeyPkcs8() decrypts a key encrypted by openssl", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/pw`, "hunter2\n");
  await opensslOk(dir, "genpkey", "-algorithm", "ed25519", "-out", "plain.key");
  await opensslOk(
    dir,
    "pkcs8",
    "-topk8",
    "-in",
    "plain.key",
    "-out",
    "enc.key",
    "-v2",
    "aes-256-cbc",
    "-v2prf",
    "hmacWithSHA256",
    "-passout",
    "file:pw",
  );
  const expected = await readPrivateKeyPkcs8(`${dir}/plain.key`);
  assert.deepEqual(await readPrivateKeyPkcs8(`${dir}/enc.key`, "hunter2"), expected);
  await assert.rejects(
    readPrivateKeyPkcs8(`${dir}/enc.key`),
    (e: unknown) => e instanceof SecureChatError && e.code === "USAGE",
  );
  await assert.rejects(
    readPrivateKeyPkcs8(`${dir}/missing.key`),
    (e: unknown) => e instanceof SecureChatError && e.code === "IO_ERROR",
  );
});
