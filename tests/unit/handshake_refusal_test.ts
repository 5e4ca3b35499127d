/**
 * The refusal race (issue 19): the client pipelines certificate, certificate_verify, finished
 * and login. When the server refuses the certificate it sends its `error` and closes, and a
 * slow client then finds its next write failing before it reads anything. The user must see
 * the server's code (BAD_CERT), not "connection lost while writing".
 *
 * Deterministic: the two sides talk over an in-memory pipe whose writes fail once the other
 * end has closed (as a socket's do after the peer's reset) while what was already delivered
 * stays readable (as Linux keeps the receive queue); the client's certificate_verify
 * signature is held until the server has closed.
 */
import assert from "node:assert/strict";
import { codeOf, SecureChatError } from "../../lib/errors.ts";
import { clientHandshake } from "../../lib/handshake/client.ts";
import { serverHandshake } from "../../lib/handshake/server.ts";
import { FrameConnection } from "../../lib/wire/connection.ts";
import { makePki } from "../../testkit/pki.ts";
import { MemoryPipeEnd } from "../helpers/memory_pipe.ts";

/**
 * A client with a certificate the server does not trust, whose certificate_verify is signed
 * only after the server has refused and closed: its next writes fail before it reads.
 * `serverFramesDelivered` drops what the server sends after that many frames.
 */
async function refusedWhileWriting(serverFramesDelivered = Infinity) {
  const pki = await makePki(["alice"]);
  const rogue = await makePki(["alice"]); // a client certificate from a CA the server does not trust
  const rogueAlice = await rogue.identity("alice");
  // WebCrypto's form of the key only, so its signature goes through the hold below
  // (an Ed25519 key would otherwise sign synchronously through node:crypto).
  const { algorithm, key } = rogueAlice.signingKey;
  const alice = { ...rogueAlice, signingKey: { algorithm, key } };
  const [clientEnd, serverEnd] = MemoryPipeEnd.pair();
  serverEnd.deliverFrames = serverFramesDelivered;
  let held = 0;
  const realSign = crypto.subtle.sign;
  crypto.subtle.sign = async function (
    this: SubtleCrypto,
    ...args: Parameters<SubtleCrypto["sign"]>
  ) {
    if (args[1] === alice.signingKey.key) {
      held++;
      await serverEnd.closed;
    }
    return await realSign.apply(this, args);
  } as SubtleCrypto["sign"];
  const clientConn = new FrameConnection(clientEnd);
  try {
    const [server, client] = await Promise.allSettled([
      serverHandshake(new FrameConnection(serverEnd), {
        identity: await pki.identity("server"),
        trust: pki.trust,
        authenticate: () => Promise.resolve({ registered: false }),
      }),
      clientHandshake(clientConn, {
        identity: alice,
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: "alice", password: "a-long-password" },
      }),
    ]);
    // The race really happened: the client signed through the hold, and a write failed.
    assert.ok(held > 0, "the client's certificate_verify was not signed through the hold");
    assert.ok(clientConn.writeError, "no client write failed: the race was not reproduced");
    assert.equal(server.status, "rejected");
    assert.equal(codeOf(server.reason), "BAD_CERT");
    assert.equal(client.status, "rejected");
    assert.ok(client.reason instanceof SecureChatError);
    return client.reason;
  } finally {
    crypto.subtle.sign = realSign;
    await Deno.remove(pki.dir, { recursive: true });
    await Deno.remove(rogue.dir, { recursive: true });
  }
}

Deno.test("clientHandshake() reports the server's BAD_CERT when its own write fails first", async () => {
  const error = await refusedWhileWriting();
  assert.equal(error.code, "BAD_CERT", error.message);
  assert.match(error.message, /peer ended the session: BAD_CERT/);
});

Deno.test("clientHandshake() reports the lost connection when the server's error never arrives", async () => {
  // server_hello, certificate, certificate_verify, finished arrive; the error does not.
  const error = await refusedWhileWriting(4);
  assert.equal(error.code, "PROTOCOL_ERROR", error.message);
  assert.match(error.message, /connection lost while writing/);
});
