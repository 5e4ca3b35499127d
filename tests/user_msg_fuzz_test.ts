/**
 * Random mutations of a valid user's msg of several records (PROTOCOL §6.3) against a
 * real server in this process. Each mutated msg ends mallory's session with one of the protocol's
 * codes (never INTERNAL, never a crash), and when it does, no lobby line of that msg reaches bob:
 * nothing of a msg is acted on unless every record passes. Seeded like tests/fuzz_test.ts: the
 * seed is printed, and `SECURECHAT_FUZZ_SEED=<seed>` replays a run.
 */
import assert from "node:assert/strict";
import { fromBase64, toBase64 } from "../lib/bytes.ts";
import { type Body, LOBBY, TO_SERVER } from "../lib/message/record.ts";
import { json, signedUserMsgJson, textsUntil } from "../testkit/hostile.ts";
import { makePki } from "../testkit/pki.ts";
import { fuzzSeed, seededInts } from "../testkit/fuzz.ts";
import { unownedPublish } from "./helpers/records.ts";
import { type InProcessServer, startInProcessServer } from "./helpers/in_process_server.ts";

const PASSWORDS = { mallory: "mallory-password-1", bob: "bob-password-1", carol: "carol-pw-123" };
const CODES = new Set([
  "PROTOCOL_ERROR",
  "TAMPERED",
  "REPLAY",
  "STALE",
  "SIG_FAIL",
  "DECRYPT_FAIL",
]);

async function login(srv: InProcessServer, username: keyof typeof PASSWORDS) {
  const h = await srv.client({ username, password: PASSWORDS[username] });
  await h.handshake();
  return h;
}

type Json = Record<string, unknown>;

/** One random change to a msg's JSON (its members, its items, a record's members). */
function mutate(rand: (below: number) => number, msg: Json): string {
  const items = msg.records as Json[];
  const j = rand(items.length);
  const record = items[j].record as Json;
  const flip = (b64: string) => {
    const bytes = fromBase64(b64);
    bytes[rand(bytes.length)] ^= 1 << rand(8);
    return toBase64(bytes);
  };
  const choices: [string, () => void][] = [
    ["record seqno +1", () => (record.seqno = (record.seqno as number) + 1)],
    ["record seqno -1", () => (record.seqno = (record.seqno as number) - 1)],
    ["record ts back", () => (record.ts = (record.ts as number) - 1)],
    ["record ts far", () => (record.ts = (record.ts as number) + 3_600_000)],
    ["record to", () => (record.to = rand(2) ? "user:Bob" : "server")],
    ["record sid", () => (record.sid = "00".repeat(16))],
    ["record dir", () => (record.dir = "s2c")],
    ["record ct", () => (record.ct = flip(record.ct as string))],
    ["record c", () => (record.c = flip(record.c as string))],
    ["record sig", () => (record.sig = msg.sig)],
    ["item k", () => (items[j].k = toBase64(crypto.getRandomValues(new Uint8Array(32))))],
    ["item no k", () => delete items[j].k],
    ["item extra", () => (items[j].x = 1)],
    ["sig", () => (msg.sig = flip(msg.sig as string))],
    ["first +1", () => (msg.first = (msg.first as number) + 1)],
    ["first -1", () => (msg.first = (msg.first as number) - 1)],
    ["n +1", () => (msg.n = (msg.n as number) + 1)],
    ["n -1", () => (msg.n = (msg.n as number) - 1)],
    ["proof extra", () => (msg.proof as string[]).push(toBase64(new Uint8Array(32)))],
    ["proof short", () => (msg.proof as string[]).pop() ?? (msg.proof = ["AA=="])],
    ["items swapped", () => items.splice(0, 2, items[1], items[0])],
    ["item dropped", () => items.splice(j, 1)],
    ["item repeated", () => items.splice(j, 0, structuredClone(items[j]))],
    ["records empty", () => (msg.records = [])],
    ["extra member", () => (msg.seqno = 1)],
  ];
  const [name, apply] = choices[rand(choices.length)];
  apply();
  return name;
}

Deno.test({
  name:
    "mutated msgs of several records end the session with a protocol code and relay nothing (120 random cases)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const seed = fuzzSeed();
    console.log(`user msg fuzz seed ${seed} (replay: SECURECHAT_FUZZ_SEED=${seed})`);
    const rand = seededInts(seed);
    const pki = await makePki(Object.keys(PASSWORDS));
    const srv = await startInProcessServer(pki, PASSWORDS, {
      lobby: { messageBurst: 1_000_000, messagesPerSecond: 1_000_000 },
    });
    try {
      const bob = await login(srv, "bob");
      const carol = await login(srv, "carol");
      let carolSeqno = 0;
      let ended = 0;
      for (let t = 0; t < 120; t++) {
        const mallory = await login(srv, "mallory");
        const count = 2 + rand(5);
        const parts: { body: Body; to: string }[] = Array.from({ length: count }, (_, j) => {
          const kind = rand(4);
          if (kind === 0) return { body: { kind: "who" } as Body, to: TO_SERVER };
          if (kind === 1) {
            return { body: { kind: "text", text: `leak-${t}-${j}` }, to: "user:carol" };
          }
          return { body: { kind: "text", text: `leak-${t}-${j}` }, to: LOBBY };
        });
        // One case in six: every record well made and signed, the last one a keys_publish of
        // another user's bundle (§12.6), refused only by what the body says.
        const publishCase = rand(6) === 0;
        if (publishCase) parts.push({ body: unownedPublish("bob"), to: TO_SERVER });
        const msg = await signedUserMsgJson(mallory, 1, parts);
        const what = `seed ${seed}, case ${t}: ` +
          (publishCase ? "another user's bundle" : mutate(rand, msg));
        await mallory.sendSealed(json(msg));
        const end = await mallory.expectEnd(3_000);
        mallory.close();
        const marker = `marker ${t}`;
        await carol.sendSealed(
          json(
            await signedUserMsgJson(carol, ++carolSeqno, [{
              body: { kind: "text", text: marker },
              to: LOBBY,
            }]),
          ),
        );
        const seen = await textsUntil(bob, marker);
        if (end.code === undefined) continue; // the change kept the msg valid (rare)
        ended++;
        assert.ok(CODES.has(end.code), `${what}: ${end.code}`);
        assert.deepEqual(seen.filter((x) => x.startsWith(`leak-${t}-`)), [], what);
      }
      assert.ok(ended >= 100, `seed ${seed}: only ${ended} of 120 mutated msgs were refused`);
      assert.deepEqual(
        srv.logs.filter((e) => e.event === "INTERNAL"),
        [],
        `seed ${seed}: the server logged INTERNAL`,
      );
      bob.close();
      carol.close();
    } finally {
      await srv.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
