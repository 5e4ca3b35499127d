/**
 * Issue 11 item 7, pre-login exhaustion, through the real `serve` and `connect`: many
 * source addresses hold idle connections (more than the server has slots) while others
 * spam `hello` without ever reading an answer. v1 filled its slots and refused honest
 * users with TOO_MANY_CONNECTIONS, and signed for every hello. Now pending handshakes are
 * capped (slots are kept for sessions), the heaviest address's oldest pending connection
 * is shed for a newcomer, and under load a hello must echo a stateless cookie first, so a
 * source that does not read gets no key agreement and no signature.
 *
 * The figures printed here are the ones in docs/ROBUSTNESS.md ("Pre-login flood").
 */
import assert from "node:assert/strict";
import net from "node:net";
import { Buffer } from "node:buffer";
import { toBase64 } from "../lib/bytes.ts";
import { PROTOCOL_VERSION } from "../lib/wire/messages.ts";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, logIs, registerUser, ServerProcess } from "../testkit/server_process.ts";

const PASSWORD = "a-long-password";
const IDLE_ADDRESSES = 20;
const SPAM_ADDRESSES = 4;
const PER_ADDRESS = 16;

/** Sockets from chosen loopback addresses that reconnect whenever the server drops them. */
class Flood {
  readonly firstFrames: Record<string, number> = {};
  opened = 0;
  #sockets = new Set<net.Socket>();
  #stopping = false;

  constructor(readonly port: number, readonly hello?: Buffer) {}

  start(addresses: string[], perAddress: number): void {
    for (const address of addresses) {
      for (let i = 0; i < perAddress; i++) this.#open(address);
    }
  }

  #open(address: string): void {
    if (this.#stopping) return;
    const socket = net.connect({ host: "127.0.0.1", port: this.port, localAddress: address });
    this.#sockets.add(socket);
    this.opened++;
    let received = Buffer.alloc(0);
    let counted = false;
    socket.on("connect", () => this.hello && socket.write(this.hello));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (counted || received.length < 4 || received.length < 4 + received.readUInt32BE(0)) return;
      counted = true;
      const first = JSON.parse(received.subarray(4, 4 + received.readUInt32BE(0)).toString());
      const kind = first.type === "error" ? first.code : first.type;
      this.firstFrames[kind] = (this.firstFrames[kind] ?? 0) + 1;
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#sockets.delete(socket);
      // A determined attacker comes straight back (a short pause keeps the test machine usable).
      setTimeout(() => this.#open(address), 500);
    });
  }

  stop(): void {
    this.#stopping = true;
    for (const socket of this.#sockets) socket.destroy();
  }
}

/** A well-formed hello (random X25519 share) as one frame: what a hello spammer sends. */
function helloFrame(): Buffer {
  const body = Buffer.from(JSON.stringify({
    type: "hello",
    version: PROTOCOL_VERSION,
    nonce: toBase64(crypto.getRandomValues(new Uint8Array(32))),
    groups: ["x25519"],
    key_share: { group: "x25519", pub: toBase64(crypto.getRandomValues(new Uint8Array(32))) },
  }));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

Deno.test("pre-login flood: honest logins succeed while idle and hello-spamming sources hold more than every slot", async () => {
  const users = ["alice", "bob", "carol", "dave", "erin", "frank"];
  const pki = await makePki(users, "ed25519");
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    args: [
      ...["--max-connections", "256", "--max-per-address", String(PER_ADDRESS)],
      ...["--max-pending", "128", "--cookie-threshold", "32"],
    ],
  });
  const idle = new Flood(server.port);
  const spam = new Flood(server.port, helloFrame());
  const login = async (user: string) => {
    const started = performance.now();
    const client = await LiveClient.login({
      port: server.port,
      user,
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/${user}`,
    }, 30_000);
    const ms = performance.now() - started;
    assert.equal((await client.end()).code, 0, `${user} logged in but did not close cleanly`);
    return ms;
  };
  try {
    for (const user of users) await registerUser(server, pki.dir, user, PASSWORD);
    const quiet = [await login("alice"), await login("bob")];
    const mark = server.mark();
    const range = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => `127.0.0.${from + i}`);
    idle.start(range(2, IDLE_ADDRESSES), PER_ADDRESS);
    // The flood holds more connections than the server has slots before anyone honest comes.
    await server.waitFor(() => server.events(logIs("CONNECT"), mark).length >= 256, 60_000);
    spam.start(range(40, SPAM_ADDRESSES), PER_ADDRESS);
    const answered = () => Object.values(spam.firstFrames).reduce((a, b) => a + b, 0);
    await server.waitFor(() => answered() >= PER_ADDRESS, 60_000);
    const flood = (IDLE_ADDRESSES + SPAM_ADDRESSES) * PER_ADDRESS;
    const during: number[] = [];
    for (const user of users) during.push(await login(user));
    const shed = server.events(logIs("SHED"), mark).length;
    console.log(
      `flood of ${flood} connections from ${IDLE_ADDRESSES + SPAM_ADDRESSES} addresses ` +
        `(${
          SPAM_ADDRESSES * PER_ADDRESS
        } sending hello without reading), 256 slots, 128 pending:\n` +
        `  honest logins: ${during.length}/${users.length} succeeded; median ${
          Math.round(median(during))
        } ms (without the flood, same run: ${Math.round(median(quiet))} ms)\n` +
        `  connections opened by the flood: ${
          idle.opened + spam.opened
        }, shed by the server: ${shed}\n` +
        `  first answer to a spammed hello: ${JSON.stringify(spam.firstFrames)}`,
    );
    // v1: the flood took every slot and honest users got TOO_MANY_CONNECTIONS.
    assert.equal(during.length, users.length);
    assert.ok(shed > 0, "pending connections were shed for newcomers");
    // Under load a hello that does not echo a cookie gets a retry: no key agreement, no signature.
    assert.ok((spam.firstFrames.retry ?? 0) > 0, JSON.stringify(spam.firstFrames));
    assert.equal(spam.firstFrames.server_hello ?? 0, 0, JSON.stringify(spam.firstFrames));
    assert.ok(!server.logs.some((e) => e.event === "INTERNAL"));
  } finally {
    idle.stop();
    spam.stop();
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
