/**
 * Child process of the messages bench's per-party measurement (issue 12): `n` recipients as
 * `connect` runs them — handshake, login, a ChatSession that checks every relayed record's
 * author signature, content and marks (PROTOCOL §6.4) and writes its transcript — in a
 * process of their own, so the bench reads their CPU from /proc apart from the sender's
 * and the server's.
 *
 *   deno run -A bench/_recipients.ts <pkiDir> <port> <transcriptDir> <name>...
 *
 * Prints {"ready":true} once every recipient is logged in; answers {"cmd":"wait","n":N}
 * with {"relayed":N} once every recipient has received N relays (counted from its login);
 * exits when stdin closes.
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { loadIdentity } from "../lib/identity.ts";
import { ChatSession, type ReceivedMessage } from "../lib/session/session.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { commands, loginLikeClient, reply, sleep } from "./_util.ts";

const [pkiDir, portText, transcriptDir, ...names] = Deno.args;
const trust = await loadTrustStore(`${pkiDir}/ca.pem`);
const counts: number[] = [];
for (const name of names) {
  const identity = await loadIdentity(`${pkiDir}/${name}.pem`, `${pkiDir}/${name}.key`);
  const est = await loginLikeClient(Number(portText), trust, identity, name);
  const session = await ChatSession.start(est, {
    transcripts: transcriptDirectory(transcriptDir),
    serverName: "localhost",
    relayTrust: trust,
  });
  const index = counts.push(0) - 1;
  void session.run({
    onMessage: (m: ReceivedMessage) => {
      if (m.type === "relay") counts[index]++;
    },
  });
}
reply({ ready: true });

for await (const cmd of commands()) {
  if (cmd.cmd !== "wait") throw new Error(`recipients: unknown command ${JSON.stringify(cmd)}`);
  const n = Number(cmd.n);
  // A 1 ms poll: its CPU is charged to the recipients, which only makes their figure larger.
  while (counts.some((c) => c < n)) await sleep(1);
  reply({ relayed: n });
}
Deno.exit(0);
