/**
 * A fetch's device list in parts (PROTOCOL §12.6 "A list in parts"): the server splits a list
 * one record cannot hold into `keys` bodies marked `more`, each of whose `msg` fits one record,
 * and lib/e2e/client.ts joins them, refusing a list of more than 8 devices or one that names a
 * device twice.
 */
import assert from "node:assert/strict";
import { toBase64 } from "../../lib/bytes.ts";
import { E2eClient, MemoryStorage } from "../../lib/e2e/client.ts";
import { MAX_DEVICES } from "../../lib/e2e/envelope.ts";
import { codeOf } from "../../lib/errors.ts";
import { MAX_CONTENT_BYTES } from "../../lib/handshake/record.ts";
import {
  BodyShape,
  keysBodies,
  type ListedDevice,
  MAX_SERVER_BODY_BYTES,
  prepareMsg,
  sealContent,
} from "../../lib/message/record.ts";
import { makePki } from "../../testkit/pki.ts";
import { publishedDevice } from "../helpers/published_device.ts";
import { SilentServer } from "../helpers/silent_server.ts";
import { pollUntil } from "../../testkit/server_process.ts";

const b64 = (n: number) => toBase64(new Uint8Array(n));

type KeysBody = ReturnType<typeof keysBodies>[number];

/** A part of a list of bob's devices, `more` or the last. */
function part(devices: ListedDevice[], more = false): KeysBody {
  return { kind: "keys", user: "bob", devices, ...(more ? { more } : {}) };
}

/** A device entry with every member at its schema's largest: a 16 KiB certificate. */
function largestEntry(i: number): ListedDevice {
  return {
    device: i.toString(16).padStart(16, "0"),
    cert: b64(16 * 1024),
    bundle: {
      user: "x".repeat(64),
      created: Number.MAX_SAFE_INTEGER,
      ik: b64(32),
      spk_id: 2 ** 32 - 1,
      spk: b64(32),
      pq_id: 2 ** 32 - 1,
      pq: b64(1184),
      ik_sig: b64(1024),
      sig: b64(1024),
    },
    opk: { id: 2 ** 32 - 1, pub: b64(32) },
    lobby: true,
  };
}

/** The server's `msg` of `body` at the longest `to`, `seqno` and `ts` (PROTOCOL §6.3). */
function serverMsgBytes(body: ReturnType<typeof keysBodies>[number]): number {
  const { k, ct, c } = sealContent(body);
  return prepareMsg({
    sid: "0".repeat(32),
    dir: "s2c",
    to: "user:" + "x".repeat(32),
    seqno: Number.MAX_SAFE_INTEGER,
    ts: Number.MAX_SAFE_INTEGER,
    ct,
    c,
  }, k).wire.length;
}

Deno.test("keysBodies(): a list no record holds goes in parts, each msg fitting one record, each but the last marked more", () => {
  const user = "x".repeat(32);
  const devices = Array.from({ length: MAX_DEVICES }, (_, i) => largestEntry(i));
  const parts = keysBodies(user, devices);
  // Two entries at their largest exceed a body: one device per part.
  assert.deepEqual(parts.map((p) => [p.devices!.length, p.more]), [
    ...Array(MAX_DEVICES - 1).fill([1, true]),
    [1, undefined],
  ]);
  assert.deepEqual(parts.flatMap((p) => p.devices), devices);
  for (const part of parts) {
    assert.equal(part.user, user);
    assert.ok(JSON.stringify(part).length <= MAX_SERVER_BODY_BYTES);
    assert.ok(serverMsgBytes(part) <= MAX_CONTENT_BYTES, "its msg fits one record");
    assert.deepEqual(BodyShape.safeParse(part), { success: true, data: part });
  }
  // The bound is exact: a body of MAX_SERVER_BODY_BYTES makes a msg that fits, one byte more
  // one that does not.
  const ofLength = (bytes: number) => {
    const entry = largestEntry(0);
    entry.bundle!.user = "x";
    const body = { kind: "keys" as const, user, devices: [entry] };
    const cert = Math.floor((bytes - JSON.stringify(body).length) / 4) * 3;
    entry.cert = b64(cert);
    entry.bundle!.user = "x".repeat(1 + bytes - JSON.stringify(body).length);
    assert.equal(JSON.stringify(body).length, bytes);
    return body;
  };
  assert.ok(serverMsgBytes(ofLength(MAX_SERVER_BODY_BYTES)) <= MAX_CONTENT_BYTES);
  assert.ok(serverMsgBytes(ofLength(MAX_SERVER_BODY_BYTES + 1)) > MAX_CONTENT_BYTES);
});

Deno.test("keysBodies(): a list that fits one record is one body without more, an empty one too", () => {
  const small = Array.from({ length: MAX_DEVICES }, (_, i) => ({
    device: i.toString(16).padStart(16, "0"),
    lobby: true as const,
  }));
  assert.deepEqual(keysBodies("bob", small), [{ kind: "keys", user: "bob", devices: small }]);
  assert.deepEqual(keysBodies("bob", []), [{ kind: "keys", user: "bob", devices: [] }]);
  // Greedy: the small entries join the large one before them, the next large one goes alone.
  const mixed = [largestEntry(1), ...small.slice(0, 3), largestEntry(2)];
  assert.deepEqual(keysBodies("bob", mixed).map((p) => p.devices!.length), [4, 1]);
});

Deno.test("a keys body's more: only true, only beside one or more devices", () => {
  const device = "0123456789abcdef";
  const refused = [
    { kind: "keys", user: "bob", devices: [], more: true },
    { kind: "keys", user: "bob", devices: [{ device }], more: false },
    { kind: "keys", user: "bob", device, opks_left: 3, more: true },
    { kind: "keys", user: "bob", more: true },
  ];
  for (const body of refused) {
    assert.equal(BodyShape.safeParse(body).success, false, JSON.stringify(body));
  }
  const part = { kind: "keys", user: "bob", devices: [{ device }], more: true };
  assert.deepEqual(BodyShape.safeParse(part), { success: true, data: part });
});

Deno.test("e2e: a device list in parts is whole at its part without more; more than 8 devices in all, or one twice, refuses the fetch, as a store failure ends it", async () => {
  const pki = await makePki(["alice", "bob"]);
  try {
    const bobs = await Promise.all([0, 1, 2].map(() => publishedDevice(pki, "bob")));
    const [first, second, third] = bobs.map((d) => d.listed);
    const aliceId = await pki.identity("alice");
    const alice = () =>
      E2eClient.open(new MemoryStorage(), {
        user: "alice",
        certDer: aliceId.certDer,
        signingKey: aliceId.signingKey,
      }, pki.trust);

    // Three parts: the fetch waits for the last, and wraps for every device listed.
    const joined = await alice();
    const server = new SilentServer();
    const preparing = joined.prepare("bob", server);
    await server.fetched();
    await joined.onKeys({ kind: "keys", user: "bob", devices: [first], more: true }, server);
    // What comes between leaves the list open: another user's list, a prekey count.
    await joined.onKeys({ kind: "keys", user: "carol", devices: [third] }, server);
    await joined.onKeys(
      { kind: "keys", user: "alice", device: "0".repeat(16), opks_left: 15 },
      server,
    );
    await joined.onKeys({ kind: "keys", user: "bob", devices: [second], more: true }, server);
    let settled = false;
    void preparing.finally(() => settled = true);
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(settled, false, "not whole before its part without more");
    await joined.onKeys({ kind: "keys", user: "bob", devices: [third] }, server);
    assert.equal((await preparing).devices, 3);
    assert.deepEqual(
      new Set(joined.devicesOf("bob")),
      new Set([first, second, third].map((d) => d.device)),
    );

    // A server that lists nine devices in all, or one device twice (in parts or in one body),
    // is refused for the fetch; a store failure for bob ends his open list.
    const nine = Array.from({ length: MAX_DEVICES }, (_, i) => ({
      device: (i + 16).toString(16).padStart(16, "0"),
    }));
    const cases: [string, KeysBody[], string][] = [
      ["nine devices", [part(nine, true), part([first])], "PROTOCOL_ERROR"],
      ["a device twice", [part([first, second], true), part([first])], "PROTOCOL_ERROR"],
      ["a device twice in one body", [part([first, second, first])], "PROTOCOL_ERROR"],
      ["a store failure", [part([first], true), { kind: "keys", user: "bob" }], "DB_UNAVAILABLE"],
    ];
    for (const [name, bodies, code] of cases) {
      const refusing = await alice();
      const to = new SilentServer();
      const fetching = refusing.prepare("bob", to);
      await to.fetched();
      for (const body of bodies) await refusing.onKeys(body, to);
      const error = await fetching.then(() => assert.fail(`${name}: accepted`), (e) => e);
      assert.equal(codeOf(error), code, name);
      assert.deepEqual(refusing.devicesOf("bob"), [], `${name}: no session made`);
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

// interop17: a fetch's answer paired with the fetch by user alone, so the answer to one that
// had given up was taken by the next fetch for that user: a stale list, built for another
// `known` (the devices it lists without keys). The server answers each fetch once, in order.
Deno.test("e2e: the rest of a list refused mid-way, or the late answer of a fetch that timed out, is dropped, not taken by the next fetch for that user; a refused fetch fails with its code", async () => {
  const pki = await makePki(["alice", "bob"]);
  try {
    const [first, second, third] = (await Promise.all(
      [0, 1, 2].map(() => publishedDevice(pki, "bob")),
    )).map((d) => d.listed);
    const aliceId = await pki.identity("alice");
    const alice = () =>
      E2eClient.open(new MemoryStorage(), {
        user: "alice",
        certDer: aliceId.certDer,
        signingKey: aliceId.signingKey,
      }, pki.trust);
    const fetchedTimes = (server: SilentServer, n: number) =>
      pollUntil(() => server.fetches().length >= n || undefined, 15_000, () => `not ${n} fetches`);

    // A list that names a device twice in its first part is refused there; its later parts
    // come after the next fetch was sent.
    const refusing = await alice();
    const server = new SilentServer();
    const refused = refusing.prepare("bob", server);
    await fetchedTimes(server, 1);
    await refusing.onKeys(part([first, first], true), server);
    assert.equal(codeOf(await refused.then(() => "accepted", (e) => e)), "PROTOCOL_ERROR");
    const again = refusing.prepare("bob", server);
    await fetchedTimes(server, 2);
    await refusing.onKeys(part([second], true), server);
    await refusing.onKeys(part([third]), server); // the refused list's end
    await refusing.onKeys(part([first]), server); // the answer to the second fetch
    assert.equal((await again).devices, 1);
    assert.deepEqual(refusing.devicesOf("bob"), [first.device]);

    // A fetch the server refuses (its rate, §6.5) gets no list: it fails with the refusal's
    // code, and the next answer is the next fetch's.
    const limited = await alice();
    const busy = new SilentServer();
    const refusedFetch = limited.prepare("bob", busy);
    await fetchedTimes(busy, 1);
    const seqno = busy.sent.findIndex((b) => b.kind === "keys_fetch") + 1;
    assert.equal(limited.onNotDelivered(seqno, "RATE_LIMITED", busy), true);
    assert.equal(codeOf(await refusedFetch.then(() => "accepted", (e) => e)), "RATE_LIMITED");
    const after = limited.prepare("bob", busy);
    await fetchedTimes(busy, 2);
    await limited.onKeys(part([third]), busy);
    assert.equal((await after).devices, 1);
    assert.deepEqual(limited.devicesOf("bob"), [third.device]);

    // A fetch the server answers only after it timed out (10 s): the answer is that fetch's.
    const late = await alice();
    const slow = new SilentServer();
    const timedOut = late.prepare("bob", slow);
    await fetchedTimes(slow, 1);
    assert.equal(codeOf(await timedOut.then(() => "accepted", (e) => e)), "TIMEOUT");
    const next = late.prepare("bob", slow);
    await fetchedTimes(slow, 2);
    await late.onKeys(part([first]), slow); // the first fetch's, late
    await late.onKeys(part([second]), slow);
    assert.equal((await next).devices, 1);
    assert.deepEqual(late.devicesOf("bob"), [second.device]);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
