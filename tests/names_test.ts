/**
 * Issue 11 item 3: one name per account. One canonical form (NFC, case-folded) and one
 * confusable skeleton (lib/pki/names.ts, docs/PKI.md "Names") used by `cert issue`, the
 * handshake, the store and `cert revoke`; `server` is reserved.
 */
import assert from "node:assert/strict";
import { copyFile } from "node:fs/promises";
import { codeOf } from "../lib/errors.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { issueCertificate } from "../lib/ca/issue.ts";
import { loadIdentity } from "../lib/identity.ts";
import { canonicalName, isReservedUserName, nameSkeleton } from "../lib/pki/names.ts";
import { openUserStore } from "../lib/store/open.ts";
import { runCli } from "../testkit/cli.ts";
import { answerTo, startInProcessServer } from "./helpers/in_process_server.ts";
import { makePki } from "../testkit/pki.ts";

const PASSWORD = "the-right-password";

Deno.test("canonicalName() folds case; nameSkeleton() folds lookalikes; server is reserved", () => {
  assert.equal(canonicalName("ALICE"), "alice");
  const same = [
    ["alice", "ALICE"],
    ["alice", "a1ice"],
    ["alice", "aIice"],
    ["bob_smith", "bob.smith"],
    ["bob_smith", "bob-smith"],
    ["mallory", "rnallory"],
    ["owen", "ovven"],
    ["olga", "0lga"],
  ];
  for (const [a, b] of same) assert.equal(nameSkeleton(a), nameSkeleton(b), `${a} ~ ${b}`);
  for (const [a, b] of [["alice", "alicia"], ["bob", "rob"], ["ann", "anna"]]) {
    assert.notEqual(nameSkeleton(a), nameSkeleton(b), `${a} ≁ ${b}`);
  }
  for (const name of ["server", "Server", "SERVER"]) assert.ok(isReservedUserName(name), name);
  assert.ok(!isReservedUserName("servers"));
});

Deno.test("cert issue refuses another spelling or a lookalike of a user, and `server`; re-issue is deliberate and revoke covers all", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-names-" });
  const cli = (...args: string[]) => runCli([...args, "--dir", dir]);
  try {
    assert.equal((await cli("ca", "init", "--key-type", "ed25519")).code, 0);
    const first = await cli("cert", "issue", "alice", "--key-type", "ed25519");
    assert.equal(first.code, 0, first.stderr);
    // v1 issued ALICE beside alice: that certificate opened alice's account.
    for (
      const [name, says] of [
        ["ALICE", /existing user "alice"/],
        ["a1ice", /mistaken for the existing user "alice"/],
        ["alice", /already has a certificate .*\n.*--reissue/],
        ["server", /reserved/],
        ["Server", /reserved/],
      ] as const
    ) {
      const refused = await cli("cert", "issue", name, "--key-type", "ed25519");
      assert.equal(refused.code, 2, `cert issue ${name}: ${refused.stderr}`);
      assert.match(refused.stderr, says);
    }
    const again = await cli("cert", "issue", "alice", "--reissue", "--key-type", "ed25519");
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /alice also still has serial [0-9a-f]+ \(valid until revoked\)/);
    // Revoking the name in any spelling revokes every certificate of it.
    const revoked = await cli("cert", "revoke", "ALICE");
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stderr.match(/revoked alice/g)?.length, 2);
    const list = await cli("cert", "list");
    assert.equal(list.stdout.split("\n").filter((l) => /^alice .*revoked/.test(l)).length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a certificate spelt ALICE (from a CA before the fix) does not open alice's account", async () => {
  const pki = await makePki(["alice"]);
  // The same CA in a directory whose inventory has no alice: what v1's `cert issue` did.
  const other = await Deno.makeTempDir({ prefix: "securechat-names-ca-" });
  for (const file of ["ca.pem", "ca.key"]) await copyFile(`${pki.dir}/${file}`, `${other}/${file}`);
  await issueCertificate(other, await loadCaSigner(other), {
    name: "ALICE",
    profile: "client",
    dns: [],
    ip: [],
    days: 30,
    keyType: "ed25519",
  }, false);
  const srv = await startInProcessServer(pki, { alice: PASSWORD });
  try {
    const h = await srv.client({
      username: "ALICE",
      password: PASSWORD,
      identity: await loadIdentity(`${other}/ALICE.pem`, `${other}/ALICE.key`),
    });
    await h.upTo("credentials");
    await h.step("credentials");
    assert.equal(await answerTo(h), "AUTH_FAIL");
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

Deno.test("the store refuses to register the reserved name in any case", async () => {
  const store = await openUserStore({ url: "sqlite::memory:" });
  try {
    for (const username of ["server", "SERVER"]) {
      const error = await store.register({ email: "op@example.com", username, password: PASSWORD })
        .then(() => undefined, (e) => e);
      assert.equal(codeOf(error), "INVALID_INPUT", username);
    }
  } finally {
    await store.close();
  }
});
