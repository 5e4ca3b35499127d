/**
 * Authorship survives the relay (PROTOCOL §6.4), against a malicious server built
 * from the library and serving bob's real `connect`: a relayed record the server
 * altered or forged fails its signature (SIG_FAIL); alice's private record to carol
 * handed to bob fails its binding (TAMPERED); alice's record from before bob's session is
 * refused (REPLAY). Every refusal ends bob's session: nothing is shown, nothing recorded.
 * A record bob accepted in his previous session and the server re-delivers (issue 12) is
 * caught by his high-water marks that outlive the session: recorded, never shown again.
 */
import { authorCertOf } from "../lib/message/author_certs.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import assert from "node:assert/strict";
import { toHex } from "../lib/bytes.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { serverHandshake } from "../lib/handshake/server.ts";
import {
  encodeRecord,
  LOBBY,
  type MessageRecord,
  prepareRelay,
  RecordForms,
  sealContent,
  signBatch,
  userRecipient,
} from "../lib/message/record.ts";
import { ChatSession } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { runCli, spawnCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";

const pki = await makePki(["alice", "bob", "carol"], "ed25519");
const alice = await pki.identity("alice");
const server = await pki.identity("server");
const aliceSid = toHex(crypto.getRandomValues(new Uint8Array(16)));
let aliceSeqno = 0;

/** A record as alice's client makes it (or, with `signer`, as a forger would). */
async function aliceSays(
  text: string,
  o: { to?: string; ts?: number; signer?: Identity; sid?: string } = {},
) {
  const { k, ct, c } = sealContent({ kind: "text", text });
  const record: MessageRecord = {
    sid: o.sid ?? aliceSid,
    dir: "c2s",
    to: o.to ?? LOBBY,
    seqno: ++aliceSeqno,
    ts: o.ts ?? Date.now(),
    ct,
    c,
  };
  await signBatch((o.signer ?? alice).signingKey, [record]);
  return { record, k };
}

type Relay = Awaited<ReturnType<typeof aliceSays>>;

/**
 * One session of bob's `connect` against the malicious server, which relays `relays`
 * and then a notice; returns bob's exit code, stdout and stderr.
 */
async function bobSession(work: string, relays: Relay[]) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const bob = spawnCli([
      "connect",
      "--user",
      "bob",
      "--port",
      String(listener.addr.port),
      "--ca",
      `${pki.dir}/ca.pem`,
      "--cert",
      `${pki.dir}/bob.pem`,
      "--key",
      `${pki.dir}/bob.key`,
      "--transcripts",
      `${work}/bob`,
    ], { env: { SECURECHAT_PASSWORD: "bob-password-12" } });
    const conn = new FrameConnection(await listener.accept());
    const established = await serverHandshake(conn, {
      identity: server,
      trust: pki.trust,
      authenticate: () => Promise.resolve({ registered: false }),
    });
    const session = await ChatSession.start(established, {
      transcripts: transcriptDirectory(`${work}/server`),
    });
    const running = session.run({ onMessage: () => {} });
    for (const { record, k } of relays) {
      session.relay(
        prepareRelay(authorCertOf(alice.certDer), new RecordForms(record, encodeRecord(record)), k),
      );
    }
    await session.send({ kind: "notice", text: "still here" });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await bob.stdin.close();
    const [out] = await Promise.all([bob.output(), running]);
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    listener.close();
  }
}

Deno.test({
  name: "relay: bob refuses altered, forged, misaddressed and re-delivered records",
  sanitizeResources: false,
  fn: async (t) => {
    const work = await Deno.makeTempDir({ prefix: "securechat-forgery-" });
    try {
      const genuine = await aliceSays("the real alice");

      await t.step("a genuine relay is shown with alice's ✓ and attributed to her", async () => {
        const out = await bobSession(work, [genuine]);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stdout, /alice ✓ the real alice/);
        assert.match(out.stdout, /\* still here/);
        const log = [...Deno.readDirSync(`${work}/bob`)].find((e) => e.name.endsWith(".log"))!;
        const verified = await runCli([
          "verify",
          `${work}/bob/${log.name}`,
          "--ca",
          `${pki.dir}/ca.pem`,
          "--json",
        ]);
        assert.equal(verified.code, 0, verified.stdout + verified.stderr);
        const report = JSON.parse(verified.stdout);
        // bob's own signed line is his key bundle, published at login (PROTOCOL §12.6).
        assert.deepEqual(
          report.authors.map((a: { commonName: string }) => a.commonName).sort(),
          ["alice", "bob"],
        );
        assert.deepEqual(report.confirmedBy, ["client", "server"]);
      });

      const cases: [string, () => Promise<Relay>, string][] = [
        ["one bit of alice's ciphertext flipped by the server", async () => {
          const r = await aliceSays("pay bob 10");
          r.record.ct[3] ^= 0x01;
          return r;
        }, "SIG_FAIL"],
        [
          "a record in alice's name signed with the server's key",
          () => aliceSays("alice never said this", { signer: server }),
          "SIG_FAIL",
        ],
        [
          "alice's private record to carol handed to bob",
          () => aliceSays("for carol only", { to: userRecipient("carol") }),
          "TAMPERED",
        ],
        [
          "alice's record from a session an hour ago",
          () => aliceSays("old news", { ts: Date.now() - 60 * 60 * 1000, sid: "ab".repeat(16) }),
          "REPLAY",
        ],
      ];
      for (const [name, make, code] of cases) {
        await t.step(`${name} → ${code}, session ended, nothing shown`, async () => {
          const relay = await make();
          const out = await bobSession(work, [relay]);
          assert.equal(out.code, 1, out.stdout + out.stderr);
          assert.match(out.stderr, new RegExp(`error: ${code}\\b`));
          assert.doesNotMatch(out.stdout, /alice ✓|still here/);
        });
      }

      // issue 12: "re-delivered alice's old signed message in bob's *next* session, and bob's
      // client showed it as new". Now bob's high-water marks (his state file) know it: it is
      // recorded (the hop happened) but never shown again (PROTOCOL §6.4).
      await t.step(
        "the genuine record of bob's previous session, re-delivered: not shown",
        async () => {
          const out = await bobSession(work, [genuine]);
          assert.equal(out.code, 0, out.stderr);
          assert.doesNotMatch(out.stdout, /the real alice/);
          assert.match(out.stdout, /\* still here/);
        },
      );
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});

Deno.test("teardown: remove the PKI", async () => {
  await Deno.remove(pki.dir, { recursive: true });
});
