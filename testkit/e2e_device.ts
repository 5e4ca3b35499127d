/**
 * A lib/ client with an end-to-end device of its own (PROTOCOL §12.6), wired the way the CLI
 * wires it (commands/connect.ts) and the browser page will: over any frame connection (TCP
 * or the WebSocket), its keys in an injected storage, everything it receives kept in order.
 */
import { E2eClient, type E2eStorage, MemoryStorage } from "../lib/e2e/client.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import type { E2eEnvelope } from "../lib/e2e/envelope.ts";
import { LOBBY, type MessageRecord, recipientUser } from "../lib/message/record.ts";
import type { ValidatedPeer } from "../lib/pki/validate.ts";
import { parseChatLine } from "../lib/session/chat_line.ts";
import { ChatSession, type ReceivedMessage, type SessionEnd } from "../lib/session/session.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import type { FrameConnection } from "../lib/wire/connection.ts";
import type { TestPki } from "./pki.ts";
import { pollUntil } from "./server_process.ts";

export interface DeviceClient {
  session: ChatSession;
  e2e: E2eClient;
  received: ReceivedMessage[];
  /**
   * Every end-to-end envelope relayed to this device, as it arrived (author's validated
   * certificate, record, envelope): what a test replays into another device's lib.
   */
  envelopes: { author: ValidatedPeer; record: MessageRecord; e2e: E2eEnvelope }[];
  running: Promise<SessionEnd>;
  /**
   * A line as the user types it, through the chat-line parser the CLI uses; a private line
   * first makes sure of the recipient's devices, as the CLI does.
   * @returns how many of the recipient's devices a private line was wrapped for
   */
  say(line: string): Promise<number | undefined>;
}

/** Logs `user` in over `conn` and runs the session with an end-to-end device. */
export async function deviceLogin(
  conn: FrameConnection,
  o: {
    pki: TestPki;
    user: string;
    password: string;
    transcriptDir: string;
    storage?: E2eStorage;
    /** false: the device does not publish its bundle at login (call `e2e.publish` later). */
    publish?: boolean;
  },
): Promise<DeviceClient> {
  const identity = await o.pki.identity(o.user);
  const established = await clientHandshake(conn, {
    identity,
    trust: o.pki.trust,
    serverName: "localhost",
    credentials: { mode: "login", username: o.user, password: o.password },
  });
  const e2e = await E2eClient.open(o.storage ?? new MemoryStorage(), {
    user: o.user,
    certDer: identity.certDer,
    signingKey: identity.signingKey,
  }, o.pki.trust);
  const envelopes: DeviceClient["envelopes"] = [];
  const session = await ChatSession.start(established, {
    transcripts: transcriptDirectory(o.transcriptDir),
    serverName: "localhost",
    relayTrust: o.pki.trust,
    keepKeys: true,
    e2e: {
      wrap: (record, k, body) => e2e.wrap(record, k, body),
      unwrap: (author, record, envelope) => {
        envelopes.push({ author, record, e2e: envelope });
        return e2e.unwrap(author, record, envelope);
      },
      save: () => e2e.save(),
      onSenderKey: (author, update) => e2e.onSenderKey(author, update),
    },
  });
  const received: ReceivedMessage[] = [];
  let published = false;
  const running = session.run({
    onMessage: async (m) => {
      if (m.type === "msg" && m.body.kind === "keys") {
        if (m.body.device === e2e.device && m.body.opks_left !== undefined) published = true;
        return await e2e.onKeys(m.body, session);
      }
      if (m.type === "msg" && m.body.kind === "members") return e2e.onMembers(m.body);
      if (m.type === "relay" && m.relayed.senderKey) return; // handled by the session, not a line
      received.push(m);
    },
  });
  // A fetch sent just before the session ended is never answered: it fails now, as in
  // commands/connect.ts, not at its timeout.
  const ended = () => e2e.sessionEnded(session);
  running.then(ended, ended);
  if (o.publish !== false) {
    // Logged in means findable, as `connect` (and LiveClient.login) have it: until the server
    // answers the publish, a contact's fetch may not list this device yet.
    await e2e.publish(session);
    await pollUntil(
      () => published || undefined,
      10_000,
      () => `${o.user}'s device ${e2e.device}: no answer to its keys_publish`,
    );
  }
  const say = async (line: string) => {
    const parsed = parseChatLine(line);
    if (parsed.action !== "send") throw new Error(`not a sending line: ${line}`);
    const privateTo = recipientUser(parsed.to);
    if (parsed.to === LOBBY) await e2e.prepareLobby(session);
    const devices = privateTo === null
      ? undefined
      : (await e2e.prepare(privateTo, session)).devices;
    await session.send(parsed.body, parsed.to);
    return devices;
  };
  return { session, e2e, received, envelopes, running, say };
}
