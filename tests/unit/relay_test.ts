/**
 * lib/session/relay.ts directly: RelayVerifier accepts an author's genuine message as the
 * server forwards it (PROTOCOL §6.4) and refuses every way a server could alter, forge or
 * replay one, each with its own code; a refused relay changes nothing it remembers.
 */
import assert from "node:assert/strict";
import { sign } from "../../lib/crypto/signature.ts";
import { codeOf } from "../../lib/errors.ts";
import type { Identity } from "../../lib/handshake/common.ts";
import { msgDigest, sealBody } from "../../lib/session/chat_channel.ts";
import { RelayVerifier } from "../../lib/session/relay.ts";
import type { MsgBodyJson, RelayBody } from "../../lib/wire/messages.ts";
import { makePki } from "../../testkit/pki.ts";

const pki = await makePki(["alice", "bob"]);
const rogue = await makePki(["alice"]); // same name, a CA nobody trusts
const alice = await pki.identity("alice");
const bob = await pki.identity("bob");
globalThis.addEventListener("unload", () => {
  for (const dir of [pki.dir, rogue.dir]) Deno.removeSync(dir, { recursive: true });
});

/** What `author` would send, as the server relays it: the signed msg and its one key. */
async function authored(
  author: Identity,
  seqno: number,
  ts: number,
  body: MsgBodyJson = { kind: "text", text: `message ${seqno}` },
): Promise<RelayBody> {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const ct = await sealBody(key, seqno, ts, body);
  const sig = await sign(author.signingKey, await msgDigest(seqno, ts, ct));
  return { kind: "relay", cert: author.certDer, seqno, ts, ct, sig, key };
}

async function refusal(verifier: RelayVerifier, relay: RelayBody): Promise<string> {
  return await verifier.open(relay).then(() => "accepted", codeOf);
}

Deno.test("RelayVerifier.open() returns the author, the text and a record without the key", async () => {
  const verifier = new RelayVerifier(pki.trust);
  const relay = await authored(alice, 1, 1000, { kind: "text", text: "hi bob", to: "bob" });
  const opened = await verifier.open(relay);
  assert.equal(opened.author, "alice");
  assert.deepEqual(opened.body, { kind: "text", text: "hi bob", to: "bob" });
  const { cert, seqno, ts, ct, sig } = relay;
  assert.deepEqual(opened.record, { cert, seqno, ts, ct, sig });
});

Deno.test("RelayVerifier.open() refuses what the server altered or forged, each with its code", async () => {
  const cases: [string, (r: RelayBody) => Promise<RelayBody> | RelayBody, string][] = [
    ["a bit of ct flipped", (r) => ({ ...r, ct: flip(r.ct) }), "SIG_FAIL"],
    ["a bit of sig flipped", (r) => ({ ...r, sig: flip(r.sig) }), "SIG_FAIL"],
    ["seqno changed", (r) => ({ ...r, seqno: r.seqno + 1 }), "SIG_FAIL"],
    ["ts changed", (r) => ({ ...r, ts: r.ts + 1 }), "SIG_FAIL"],
    ["bob's signed message under alice's certificate", async (r) => ({
      ...await authored(bob, r.seqno, r.ts),
      cert: alice.certDer,
    }), "SIG_FAIL"],
    ["the wrong message key", (r) => ({ ...r, key: flip(r.key) }), "DECRYPT_FAIL"],
    ["an author certificate from another CA", async (r) => ({
      ...await authored(await rogue.identity("alice"), r.seqno, r.ts),
    }), "BAD_CERT"],
    ["the server's own certificate as author", async (r) => ({
      ...await authored(await pki.identity("server"), r.seqno, r.ts),
    }), "BAD_CERT"],
    ["a certificate that is not DER", (r) => ({ ...r, cert: new Uint8Array(40) }), "BAD_CERT"],
    [
      "a signed notice instead of a text",
      (r) => authored(alice, r.seqno, r.ts, { kind: "notice", text: "from alice?" }),
      "PROTOCOL_ERROR",
    ],
  ];
  for (const [what, tamper, code] of cases) {
    const verifier = new RelayVerifier(pki.trust);
    const genuine = await authored(alice, 5, 5000);
    assert.equal(await refusal(verifier, await tamper(genuine)), code, what);
    // Refused, it left no trace: the genuine message still opens.
    assert.equal(await refusal(verifier, genuine), "accepted", `${what}: genuine after`);
  }
});

Deno.test("RelayVerifier.open() refuses a replay: an author's messages must move forward", async () => {
  const verifier = new RelayVerifier(pki.trust);
  const first = await authored(alice, 1, 1000);
  const second = await authored(alice, 2, 1000);
  assert.equal(await refusal(verifier, first), "accepted");
  assert.equal(await refusal(verifier, second), "accepted", "same ts, next seqno");
  assert.equal(await refusal(verifier, second), "REPLAY", "the same relay again");
  assert.equal(await refusal(verifier, first), "REPLAY", "an older one");
  assert.equal(await refusal(verifier, await authored(alice, 9, 999)), "REPLAY", "an older ts");
  // A new session of alice's starts again at seqno 1, later.
  assert.equal(await refusal(verifier, await authored(alice, 1, 2000)), "accepted");
  // Each author has their own order.
  assert.equal(await refusal(verifier, await authored(bob, 1, 500)), "accepted");
});

function flip(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  out[out.length >> 1] ^= 0x01;
  return out;
}
