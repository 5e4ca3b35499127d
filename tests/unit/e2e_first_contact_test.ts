/**
 * lib/e2e/client.ts when two first contacts cross (PROTOCOL §12.3): after a failover every
 * lobby member rekeys at once, so a contact's first message to us arrives while we are
 * fetching that contact's devices for our own line. The session their message starts must
 * survive our fetch: their next messages carry the same first-contact header until we answer.
 */
import assert from "node:assert/strict";
import { toHex } from "../../lib/bytes.ts";
import { type MessageRecord, sealContent, userRecipient } from "../../lib/message/record.ts";
import { validatePeerCertificate } from "../../lib/pki/validate.ts";
import { makePki } from "../../testkit/pki.ts";
import { publishedDevice } from "../helpers/published_device.ts";
import { SilentServer } from "../helpers/silent_server.ts";

const pki = await makePki(["alice", "bob"]);
globalThis.addEventListener("unload", () => Deno.removeSync(pki.dir, { recursive: true }));

async function device(user: string) {
  const { e2e, identity, listed } = await publishedDevice(pki, user);
  // What the key directory holds for it, as a fetch of its devices returns it.
  const keys = { kind: "keys" as const, user, devices: [{ ...listed, lobby: true as const }] };
  const peer = await validatePeerCertificate(pki.trust, identity.certDer, { role: "client" });
  return { e2e, keys, peer };
}

let seqno = 0;
/** A record from bob to alice with its content key (the signature is not checked here). */
function recordToAlice(): { record: MessageRecord; k: Uint8Array } {
  const { k, ct, c } = sealContent({ kind: "text", text: `line ${++seqno}` });
  const record: MessageRecord = {
    sid: toHex(new Uint8Array(16).fill(1)),
    dir: "c2s",
    to: userRecipient("alice"),
    seqno,
    ts: Date.now(),
    ct,
    c,
    sig: new Uint8Array(64),
  };
  return { record, k };
}

Deno.test("e2e: a contact's first message answered while we fetch their devices keeps its session; their next message opens", async () => {
  const alice = await device("alice");
  const bob = await device("bob");

  // bob's first contact with alice: two messages, both with his first-contact header.
  const bobServer = new SilentServer();
  const preparing = bob.e2e.prepare("alice", bobServer);
  await bobServer.fetched();
  await bob.e2e.onKeys(alice.keys, bobServer);
  await preparing;
  const first = recordToAlice();
  const firstEnvelope = await bob.e2e.wrap(first.record, first.k);
  const second = recordToAlice();
  const secondEnvelope = await bob.e2e.wrap(second.record, second.k);

  // alice is fetching bob's devices for a line of her own when his first message comes.
  const aliceServer = new SilentServer();
  const fetching = alice.e2e.prepare("bob", aliceServer);
  await aliceServer.fetched();
  const [, opened] = await Promise.all([
    alice.e2e.onKeys(bob.keys, aliceServer).then(() => fetching),
    alice.e2e.unwrap(bob.peer, first.record, firstEnvelope!),
  ]);
  assert.deepEqual(opened, first.k);
  assert.deepEqual(await alice.e2e.unwrap(bob.peer, second.record, secondEnvelope!), second.k);
});
