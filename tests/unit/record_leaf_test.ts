/**
 * A record's statement and leaf (PROTOCOL §6.1), laid out in a reused buffer since session 10:
 * the same bytes as the statement written out field by field from the text, for every kind of
 * `to` and call after call, and the signature cache (PROTOCOL §6.1 "A verifier MAY remember")
 * keyed on all three of certificate, batch statement and signature.
 */
import assert from "node:assert/strict";
import { sha256 } from "#sync-crypto";
import { concat, toHex, u32be, u64be, utf8 } from "../../lib/bytes.ts";
import {
  leafHash,
  type MessageRecord,
  RecordSignatures,
  sealContent,
  signBatch,
  statement,
} from "../../lib/message/record.ts";
import { importSigningKeyPkcs8, importVerifyingKeySpki } from "../../lib/crypto/signature.ts";

/** PROTOCOL §6.1's statement, written from the text. */
function statementFromText(r: MessageRecord): Uint8Array {
  const to = utf8(r.to);
  return concat(
    utf8("securechat/v2 message\0"),
    u32be(2),
    Uint8Array.from(r.sid.match(/../g)!.map((h) => parseInt(h, 16))),
    Uint8Array.of(r.dir === "c2s" ? 1 : 2),
    u32be(to.length),
    to,
    u64be(r.seqno),
    u64be(r.ts),
    r.c,
    sha256(r.ct),
  );
}

const TOS = ["lobby", "server", "user:bob", "user:" + "a".repeat(32), "é", "x".repeat(80), "😀 to"];

Deno.test("statement() and leafHash() are the statement of the text and SHA-256(0x00 || it), for every kind of to, call after call", () => {
  const records: MessageRecord[] = [];
  for (let j = 0; j < 40; j++) {
    const { ct, c } = sealContent({ kind: "text", text: "t".repeat(1 + j * 97) });
    records.push({
      sid: "0123456789abcdef0123456789abcde" + (j % 10),
      dir: j % 3 === 0 ? "s2c" : "c2s",
      to: TOS[j % TOS.length],
      seqno: 1 + j * 1_000_003,
      ts: 2 ** 40 + j,
      ct,
      c,
    });
  }
  for (const round of [0, 1]) {
    for (const r of records) {
      const want = statementFromText(r);
      assert.equal(toHex(statement(r)), toHex(want), `${r.to} (${round})`);
      assert.equal(toHex(leafHash(r)), toHex(sha256(Uint8Array.of(0), want)), `${r.to} (${round})`);
    }
  }
  assert.throws(() => leafHash({ ...records[0], sid: "abc" }), TypeError);
  assert.throws(() => leafHash({ ...records[0], sid: "00".repeat(17) }), RangeError);
});

Deno.test("RecordSignatures: a batch verified once passes its siblings, never one with another signature, certificate or statement", async () => {
  const pkcs8 = (await crypto.subtle.exportKey(
    "pkcs8",
    (await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair)
      .privateKey,
  )) as ArrayBuffer;
  const pair = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const signer = await importSigningKeyPkcs8(
    new Uint8Array(
      await crypto.subtle.exportKey("pkcs8", pair.privateKey) as ArrayBuffer,
    ),
  );
  const key = await importVerifyingKeySpki(
    new Uint8Array(
      await crypto.subtle.exportKey("spki", pair.publicKey) as ArrayBuffer,
    ),
  );
  const other = await importSigningKeyPkcs8(new Uint8Array(pkcs8));
  const batch = (first: number, n: number): MessageRecord[] =>
    Array.from({ length: n }, (_, j) => {
      const { ct, c } = sealContent({ kind: "text", text: `line ${first + j}` });
      return {
        sid: "ab".repeat(16),
        dir: "c2s",
        to: "lobby",
        seqno: first + j,
        ts: 1_767_225_600_000,
        ct,
        c,
      };
    });
  const good = batch(1, 8);
  await signBatch(signer, good);
  const forged = batch(1, 8);
  await signBatch(other, forged);
  const checks = new RecordSignatures();
  const bob = { fingerprint: "b".repeat(64), key };
  const code = (r: MessageRecord, who = bob) =>
    checks.check(who, r, "r").then(() => "valid", (e) => e.code as string);
  assert.equal(await code(good[0]), "valid");
  // The same batch statement and size under another key's signature: verified on its own.
  assert.equal(await code(forged[1]), "SIG_FAIL");
  // A sibling with a signature of the right length but other bytes: not the remembered one.
  const flipped = { ...good[2], sig: good[2].sig!.slice() };
  flipped.sig![0] ^= 1;
  assert.equal(await code(flipped), "SIG_FAIL");
  // The same records named as another certificate's: verified again, and that key fails.
  const mallory = {
    fingerprint: "c".repeat(64),
    key: await importVerifyingKeySpki(
      new Uint8Array(
        await crypto.subtle.exportKey(
          "spki",
          (await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair)
            .publicKey,
        ) as ArrayBuffer,
      ),
    ),
  };
  assert.equal(await code(good[3], mallory), "SIG_FAIL");
  for (const r of good) assert.equal(await code(r), "valid");
  // A record changed after signing: its statement, so its root, differs from the batch's.
  assert.equal(await code({ ...good[5], ts: good[5].ts + 1 }), "SIG_FAIL");
});
