/**
 * Authorship survives the relay (PROTOCOL §6.4): a server that alters a relayed
 * message, or invents one in alice's name, is caught by bob's `connect` (SIG_FAIL),
 * and bob's transcript still attributes only alice's genuine message to her.
 */
import assert from "node:assert/strict";
import { toBase64 } from "../lib/bytes.ts";
import { serverHandshake } from "../lib/handshake/server.ts";
import { ChatSender, messageKeyFor } from "../lib/session/chat_channel.ts";
import { ChatSession } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import type { MsgBodyJson } from "../lib/wire/messages.ts";
import { runCli, spawnCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";

Deno.test("relay: bob rejects a relayed message the server altered or forged, with SIG_FAIL", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const work = await Deno.makeTempDir({ prefix: "securechat-forgery-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    // alice's genuine messages, made with her own key as her client would.
    const alice = await pki.identity("alice");
    const aliceSecret = crypto.getRandomValues(new Uint8Array(32));
    const aliceSender = await ChatSender.create(aliceSecret, alice.signingKey);
    const relayOf = async (text: string) => {
      const [m] = await aliceSender.seal({ kind: "text", text });
      const key = await messageKeyFor(aliceSecret, m.seqno);
      return { m, key };
    };
    const genuine = await relayOf("the real alice");
    const altered = await relayOf("pay bob 10");
    altered.m.ct[3] ^= 0x01; // the server flips one bit of alice's ciphertext
    const relay = ({ m, key }: Awaited<ReturnType<typeof relayOf>>): MsgBodyJson => ({
      kind: "relay",
      cert: toBase64(alice.certDer),
      seqno: m.seqno,
      ts: m.ts,
      ct: toBase64(m.ct),
      sig: toBase64(m.sig),
      key: toBase64(key),
    });
    // A message in alice's name the server signs itself: it has no alice key.
    const server = await pki.identity("server");
    const forgerSecret = crypto.getRandomValues(new Uint8Array(32));
    const [forged] = await (await ChatSender.create(forgerSecret, server.signingKey))
      .seal({ kind: "text", text: "alice never said this" });
    const forgedRelay: MsgBodyJson = {
      kind: "relay",
      cert: toBase64(alice.certDer),
      seqno: 99,
      ts: forged.ts,
      ct: toBase64(forged.ct),
      sig: toBase64(forged.sig),
      key: toBase64(await messageKeyFor(forgerSecret, forged.seqno)),
    };

    // The malicious server, built from the library, serving bob's real `connect`.
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
    const session = await ChatSession.start(established, { transcriptDir: `${work}/server` });
    const running = session.run({ onMessage: () => {} });
    await session.send(relay(genuine), { cert: alice.certDer, ...genuine.m });
    await session.send(relay(altered));
    await session.send(forgedRelay);
    await session.send({ kind: "notice", text: "still here" });
    // No pause before bob's end of input: bob's close may cross these on the wire, and
    // bob still reads and records everything sent before the server's close (PROTOCOL §7).
    await bob.stdin.close();
    const [out] = await Promise.all([bob.output(), running]);
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stdout, /alice ✓ the real alice/);
    assert.match(stdout, /\* still here/);
    assert.doesNotMatch(stdout, /pay bob|never said/);
    assert.equal(stderr.match(/rejected message \d+: SIG_FAIL/g)?.length, 2, stderr);

    // bob's record: every hop line is there, only the genuine one attributed to alice.
    const log = [...Deno.readDirSync(`${work}/bob`)].find((e) => e.name.endsWith(".log"))!.name;
    const verified = await runCli([
      "verify",
      `${work}/bob/${log}`,
      "--ca",
      `${pki.dir}/ca.pem`,
      "--json",
    ]);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    const report = JSON.parse(verified.stdout);
    assert.deepEqual(
      report.authors.map((
        a: { commonName: string; messages: number },
      ) => [a.commonName, a.messages]),
      [["alice", 1]],
    );
    assert.equal(report.messages.s2c, 4);

    // Editing the author record afterwards is caught by verify, at that line.
    const path = `${work}/bob/${log}`;
    const lines = (await Deno.readTextFile(path)).split("\n");
    const index = lines.findIndex((l) => l.includes('"author"'));
    const line = JSON.parse(lines[index]);
    line.author.ts += 1;
    lines[index] = JSON.stringify(line);
    await Deno.writeTextFile(path, lines.join("\n"));
    await Deno.remove(path.replace(/\.log$/, ".receipt.json"));
    await Deno.remove(path.replace(/\.log$/, ".peer-receipt.json"));
    const tampered = await runCli(["verify", path, "--ca", `${pki.dir}/ca.pem`, "--json"]);
    assert.equal(tampered.code, 1);
    const bad = JSON.parse(tampered.stdout);
    assert.equal(bad.code, "SIG_FAIL");
    assert.equal(bad.firstBadLine, index + 1);
  } finally {
    listener.close();
    await Deno.remove(work, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
