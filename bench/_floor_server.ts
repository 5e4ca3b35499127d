/**
 * Child process of the peer bench's floor rows (_floor.ts, issue 18): a relay as cheap as this
 * runtime allows with per-hop protection like TLS's, and above it, by `rung`, each layer of what
 * our server does per message, through lib's own functions. Bench only: no admission, no
 * handshake (keys from a fixed secret, floorKeys), no limits; one sender, the rest recipients.
 *
 *   deno run -A bench/_floor_server.ts <pkiDir> <author> floor|json|checks|transcript \
 *     signed <dir>
 *
 * Prints {"port":N}; exits when stdin closes. The author's certificate (`<pkiDir>/<author>.pem`)
 * is what the checks verify its batch signatures with and what its relays carry.
 */
import { toBase64 } from "../lib/bytes.ts";
import { importVerifyingKeySpki } from "../lib/crypto/signature.ts";
import type { E2eEnvelope } from "../lib/e2e/envelope.ts";
import { MAX_CONTENT_BYTES, RecordLayer, RecordOutbox } from "../lib/handshake/record.ts";
import { loadIdentity } from "../lib/identity.ts";
import {
  type AuthorCert,
  decodeRecord,
  envelopeFits,
  msgLine,
  type MsgMessage,
  MsgMessageShape,
  type PreparedLine,
  type PreparedRelay,
  prepareRelay,
  RecipientRelayGroup,
  RecordForms,
  RecordSignatures,
} from "../lib/message/record.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { TranscriptWriter } from "../lib/transcript/writer.ts";
import { atTurnEnd, endTurn, spendTurn, TURN_UNIT_BYTES } from "../lib/turn.ts";
import { FRAME_HEADER_BYTES, FrameConnection } from "../lib/wire/connection.ts";
import { parseMessage } from "../lib/wire/messages.ts";
import { byType } from "../lib/wire/shape.ts";
import { FLOOR_READY, type FloorHello, floorKeys, type Rung, RUNGS } from "./_floor.ts";
import { commands, reply } from "./_util.ts";

const [pkiDir, authorName, rungArg, records, dir] = Deno.args;
if (records !== "signed") {
  throw new Error(
    `floor server: records ${records}: only signed records are relayed (PROTOCOL §6.4)`,
  );
}
if (!(RUNGS as readonly string[]).includes(rungArg)) {
  throw new Error(`floor server: rung ${rungArg} is not one of ${RUNGS.join(", ")}`);
}
const rung = RUNGS.indexOf(rungArg as Rung);
const JSON_RUNG = RUNGS.indexOf("json");
const CHECKS_RUNG = RUNGS.indexOf("checks");
const TRANSCRIPT_RUNG = RUNGS.indexOf("transcript");

const author = await loadIdentity(`${pkiDir}/${authorName}.pem`, `${pkiDir}/${authorName}.key`);
const serverCertDer = (await loadIdentity(`${pkiDir}/server.pem`, `${pkiDir}/server.key`)).certDer;
const authorFingerprint = fingerprintOf(author.certDer);
const authorKey = {
  fingerprint: authorFingerprint,
  key: await importVerifyingKeySpki(parseCertificate(author.certDer).spki),
};
/** What each relay carries of its author (introduced once per recipient, §6.4.1). */
const authorCert: AuthorCert = {
  fingerprint: authorFingerprint,
  cert: { base64: toBase64(author.certDer), der: author.certDer },
};
/** What a server reads from a client, narrowed to the one type this bench sends. */
const MSG = byType<MsgMessage>({ msg: MsgMessageShape });
const signatures = new RecordSignatures();

interface Peer {
  conn: FrameConnection;
  records: RecordLayer;
  /** What this turn made for the peer, sealed at its end (as ChatSession's #emit). */
  outbox?: RecordOutbox;
  /** This turn's last relay to the peer, still taking records of its batch (ChatSession.relay). */
  open?: RecipientRelayGroup;
  /** The last relay's seqno to this peer. */
  seqno: number;
  /** Whether it has been sent the author's certificate. */
  introduced: boolean;
  transcript?: TranscriptWriter;
}

const recipients: Peer[] = [];

/** Queues a message for `peer`, sealed with the rest of this turn's at its end. */
function emit(peer: Peer, content: Uint8Array | RecipientRelayGroup, line?: PreparedLine): void {
  outboxOf(peer).add(content);
  if (line) peer.transcript!.append(line);
}

/** The peer's outbox for this turn: its open relay closed, then all sealed, at the turn's end. */
function outboxOf(peer: Peer): RecordOutbox {
  if (!peer.outbox) {
    const outbox = peer.outbox = new RecordOutbox();
    atTurnEnd(() => {
      closeRelay(peer);
      peer.outbox = undefined;
      outbox.seal((inner) =>
        peer.conn.sendFramed(peer.records.sealInner(inner, FRAME_HEADER_BYTES))
      );
    });
  }
  return peer.outbox;
}

/** The peer's open relay, complete: into its outbox and (logged) its transcript. */
function closeRelay(peer: Peer): void {
  const open = peer.open;
  if (!open) return;
  peer.open = undefined;
  emit(peer, open, rung >= TRANSCRIPT_RUNG ? open : undefined);
}

/**
 * A record relayed to `peer` as ChatSession.relay does it (PROTOCOL §6.4): into this turn's open
 * relay when it is of the same batch and fits one record, else a relay of its own.
 */
function relayTo(peer: Peer, prepared: PreparedRelay): void {
  const open = peer.open;
  if (open?.takes(prepared) && open.lengthWith(prepared) <= MAX_CONTENT_BYTES) {
    open.add(prepared);
    return;
  }
  closeRelay(peer);
  outboxOf(peer);
  peer.open = new RecipientRelayGroup(prepared, ++peer.seqno, Date.now(), !peer.introduced);
  peer.introduced = true;
}

/** One message from the sender, relayed to every recipient at this rung. */
function relay(from: Peer, content: Uint8Array): Promise<void> | undefined {
  if (rung < JSON_RUNG) {
    for (const peer of recipients) emit(peer, content);
    return undefined;
  }
  const message = parseMessage(content, MSG);
  if (!("e2e" in message)) throw new Error("floor server: a line without its envelope");
  const record = decodeRecord(message.record);
  if (rung >= CHECKS_RUNG) {
    if (!envelopeFits(message.e2e, record.to)) throw new Error("floor server: envelope misfit");
    const signing = signatures.checkNow(authorKey, record, `message ${record.seqno}`);
    if (signing) return signing.then(() => forward(from, message.record, record, message.e2e));
  }
  return forward(from, message.record, record, message.e2e);
}

function forward(
  from: Peer,
  json: MsgMessage["record"],
  record: ReturnType<typeof decodeRecord>,
  e2e: E2eEnvelope,
): undefined {
  const forms = new RecordForms(record, json);
  const logged = rung >= TRANSCRIPT_RUNG;
  if (logged) {
    from.transcript!.append(msgLine("c2s", record, forms.bytes, undefined, forms.encoding));
  }
  const prepared = prepareRelay(authorCert, forms, undefined, e2e);
  for (const peer of recipients) relayTo(peer, prepared);
  return undefined;
}

async function serve(tcp: Deno.TcpConn): Promise<void> {
  tcp.setNoDelay(true);
  const conn = new FrameConnection(tcp);
  const first = await conn.read(10_000);
  if (first === null) return;
  const hello = JSON.parse(new TextDecoder().decode(first)) as FloorHello;
  const peer: Peer = {
    conn,
    records: new RecordLayer(floorKeys(hello.id, "s2c"), floorKeys(hello.id, "c2s")),
    seqno: 0,
    introduced: false,
  };
  if (rung >= TRANSCRIPT_RUNG) {
    const now = Date.now();
    peer.transcript = await TranscriptWriter.create(transcriptDirectory(`${dir}/transcripts`), {
      sessionId: hello.id.toString(16).padStart(32, "0"),
      role: "server",
      clientCertDer: author.certDer,
      serverCertDer,
      sessionTime: now,
      startedAt: now,
    });
  }
  conn.send(peer.records.seal(FLOOR_READY));
  if (hello.role === "recipient") {
    recipients.push(peer);
    while (await conn.read().catch(() => null) !== null) {
      // nothing is read from a recipient; its end ends it
    }
    return;
  }
  for (;;) {
    const payload = await conn.read().catch(() => null);
    if (payload === null) return;
    for (const content of peer.records.openContents(payload)) {
      const relaying = relay(peer, content);
      if (relaying) await relaying;
    }
    // A backlog is handled a bounded amount per turn, as ChatSession.run does (lib/turn.ts).
    if (spendTurn(Math.ceil(payload.length / TURN_UNIT_BYTES))) await endTurn();
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
reply({ port: (listener.addr as Deno.NetAddr).port });
void (async () => {
  for await (const tcp of listener) {
    serve(tcp).catch((error) => {
      console.error(`floor server: ${error instanceof Error ? error.stack : error}`);
      Deno.exit(1);
    });
  }
})();
for await (const _ of commands()) {
  // none: stdin's end is the end
}
Deno.exit(0);
