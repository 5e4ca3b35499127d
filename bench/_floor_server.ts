/**
 * Child process of the peer bench's floor rows (_floor.ts, issue 18): a relay as cheap as this
 * runtime allows with per-hop protection like TLS's, and above it, by `rung`, each layer of what
 * our server does per message, through lib's own functions. Bench only: no admission, no
 * handshake (keys from a fixed secret, floorKeys), no limits; one sender, the rest recipients.
 *
 *   deno run -A bench/_floor_server.ts <pkiDir> <author> floor|json|checks|transcript|inplace|binary <dir>
 *
 * Prints {"port":N}; exits when stdin closes. The author's certificate (`<pkiDir>/<author>.pem`)
 * is what the checks verify its batch signatures with and what its relays carry.
 */
import { fromBase64Each, fromHex, toBase64 } from "../lib/bytes.ts";
import { importVerifyingKeySpki } from "../lib/crypto/signature.ts";
import {
  type Content,
  MAX_CONTENT_BYTES,
  RecordLayer,
  RecordOutbox,
  sealedLength,
} from "../lib/handshake/record.ts";
import { loadIdentity } from "../lib/identity.ts";
import {
  type AuthorCert,
  type C2sMsgMessage,
  C2sMsgShape,
  canonicalUserMsg,
  envelopeFits,
  leafHash,
  type MessageRecord,
  type PreparedLine,
  type PreparedRelay,
  prepareRelay,
  ReceivedGroup,
  RecipientRelayGroup,
  RecordSignatures,
  UserMsg,
  type UserMsgRead,
  userMsgRead,
} from "../lib/message/record.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { TranscriptWriter } from "../lib/transcript/writer.ts";
import { atTurnEnd, endTurn, spendTurn, TURN_UNIT_BYTES } from "../lib/turn.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { parseMessageAndText } from "../lib/wire/messages.ts";
import { byType } from "../lib/wire/shape.ts";
import { FLOOR_READY, type FloorHello, floorKeys, type Rung, RUNGS } from "./_floor.ts";
import { commands, reply } from "./_util.ts";
import {
  inPlaceCheck,
  inPlaceRelay,
  sketchCheck,
  type SketchChecked,
  sketchRelay,
  sketchSid,
  SketchTranscript,
} from "./_layout_sketch.ts";

const [pkiDir, authorName, rungArg, dir] = Deno.args;
if (!(RUNGS as readonly string[]).includes(rungArg)) {
  throw new Error(`floor server: rung ${rungArg} is not one of ${RUNGS.join(", ")}`);
}
/** The transcript rung's work done otherwise (bench/_layout_sketch.ts): its own path below. */
const BINARY = rungArg === "binary";
const IN_PLACE = rungArg === "inplace";
const SKETCH = BINARY || IN_PLACE;
/** The sketches have none of the JSON rungs' layers: they take the floor's place among them. */
const rung = SKETCH ? 0 : RUNGS.indexOf(rungArg as Rung);
const JSON_RUNG = RUNGS.indexOf("json");
const CHECKS_RUNG = RUNGS.indexOf("checks");
const TRANSCRIPT_RUNG = RUNGS.indexOf("transcript");

const author = await loadIdentity(`${pkiDir}/${authorName}.pem`, `${pkiDir}/${authorName}.key`);
const serverCertDer = (await loadIdentity(`${pkiDir}/server.pem`, `${pkiDir}/server.key`)).certDer;
const authorFingerprint = fingerprintOf(author.certDer);
const authorFingerprintBytes = fromHex(authorFingerprint);
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
const MSG = byType<C2sMsgMessage>({ msg: C2sMsgShape });
const signatures = new RecordSignatures();

interface Peer {
  conn: FrameConnection;
  records: RecordLayer;
  /** What this turn made for the peer, sealed at its end (as ChatSession's #emit). */
  outbox?: RecordOutbox;
  /** sendOutbox for this peer, made once. */
  sendOutbox: () => void;
  /** This turn's last relay to the peer, still taking records of its batch (ChatSession.relay). */
  open?: RecipientRelayGroup;
  /** The last relay's seqno to this peer. */
  seqno: number;
  /** Whether it has been sent the author's certificate. */
  introduced: boolean;
  transcript?: TranscriptWriter;
  /** A sketch rung's transcript, and what its sender's next msg must carry. */
  sketch?: {
    transcript: SketchTranscript;
    sid?: Uint8Array;
    sidText?: string;
    next: number;
    lastTs: number;
  };
}

const recipients: Peer[] = [];

/** Queues a message for `peer`, sealed with the rest of this turn's at its end. */
function emit(peer: Peer, content: Content | RecipientRelayGroup, line?: PreparedLine): void {
  outboxOf(peer).add(content);
  if (line) peer.transcript!.append(line);
}

/** The peer's outbox for this turn: its open relay closed, then all sealed, at the turn's end. */
function outboxOf(peer: Peer): RecordOutbox {
  if (!peer.outbox) {
    peer.outbox = new RecordOutbox();
    atTurnEnd(peer.sendOutbox);
  }
  return peer.outbox;
}

/**
 * A peer's turn's end (atTurnEnd): one closure per peer, as ChatSession has one per session, not
 * one per turn holding that turn's outbox. With one per turn every rung from json up promoted
 * ~3.7 MB of relays per scavenge (V8's --trace-gc-nvp), which ours does not: the rungs measured a
 * growing old generation as well as their layer (docs/PERFORMANCE.md, session 20). What kept such
 * a closure past its turn was not pinned down; atTurnEnd's set, cleared every turn, is likeliest.
 */
function sendOutbox(peer: Peer): void {
  closeRelay(peer);
  peer.sketch?.transcript.flush();
  const outbox = peer.outbox!;
  peer.outbox = undefined;
  outbox.seal((inner) =>
    peer.conn.sendSealed(
      sealedLength(inner.length),
      (into) => peer.records.sealInner(inner, into),
    )
  );
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

/**
 * One msg from the sender (records of one batch, PROTOCOL §6.3), relayed to every recipient at
 * this rung, as the server's session checks it (lib/session/session.ts #checkUserMsg) and the
 * lobby hands its records on, one by one.
 */
function relay(from: Peer, content: Uint8Array): Promise<void> | undefined {
  if (SKETCH) return relaySketch(from, content);
  if (rung < JSON_RUNG) {
    for (const peer of recipients) emit(peer, content);
    return undefined;
  }
  // As the server's session reads it: in one pass when canonical, else by the parse chokepoint.
  const { message, records, received: items } = canonicalUserMsg(content) ?? readByParse(content);
  const [sig, ...proof] = fromBase64Each([message.sig, ...message.proof]);
  const group = { sig, first: message.first, n: message.n, proof };
  // What the received msg keeps (ReceivedGroup): a relay that does not carry all of the msg's
  // records derives their paths from these, so the json rung hashes them too.
  const leaves = records.map(leafHash);
  const received = () => new ReceivedGroup(message, group, records, leaves, items);
  if (rung >= CHECKS_RUNG) {
    message.records.forEach((item, j) => {
      if (!("e2e" in item) || !envelopeFits(item.e2e, records[j].to)) {
        throw new Error("floor server: a line without its envelope, or one that does not fit");
      }
    });
    const whose = `message ${records[0].seqno}`;
    const signing = signatures.checkGroupNow(authorKey, records, group, whose, leaves);
    if (signing) return signing.then(() => forward(from, message, records, received()));
  }
  return forward(from, message, records, received());
}

function readByParse(content: Uint8Array): UserMsgRead {
  const { message, text } = parseMessageAndText(content, MSG);
  return userMsgRead(message, content, text);
}

function forward(
  from: Peer,
  message: C2sMsgMessage,
  records: readonly MessageRecord[],
  group: ReceivedGroup,
): undefined {
  const prepared = message.records.map((item, j) => {
    if (!("e2e" in item)) throw new Error(`floor server: line ${records[j].seqno} without e2e`);
    const forms = group.whole(j, item.record);
    return prepareRelay(authorCert, forms, undefined, item.e2e, "INTERNAL", group.carrier(j));
  });
  if (rung >= TRANSCRIPT_RUNG) {
    const line = new UserMsg(prepared[0]);
    for (const item of prepared.slice(1)) line.add(item);
    from.transcript!.append(line);
  }
  for (const item of prepared) for (const peer of recipients) relayTo(peer, item);
  return undefined;
}

/**
 * One msg of the sketches (bench/_layout_sketch.ts): checked in place, its author's line written
 * before anything is relayed (as ChatSession's commit), one relay per recipient.
 */
function relaySketch(from: Peer, content: Uint8Array): Promise<void> | undefined {
  const session = from.sketch!;
  const checking = BINARY
    ? sketchCheck(
      content,
      session.sid ??= sketchSid(content),
      session.next,
      session.lastTs,
      authorKey,
    )
    : inPlaceCheck(
      content,
      session.sidText ??= inPlaceSid(content),
      session.next,
      session.lastTs,
      authorKey,
    );
  const forward = (checked: SketchChecked) => {
    session.next += checked.count;
    session.lastTs = checked.lastTs;
    session.transcript.append(checked.line);
    session.transcript.flush();
    for (const peer of recipients) {
      const introduce = !peer.introduced;
      peer.introduced = true;
      const seqno = ++peer.seqno;
      const relay = BINARY
        ? sketchRelay(
          checked,
          seqno,
          Date.now(),
          authorFingerprintBytes,
          introduce ? author.certDer : undefined,
        )
        : inPlaceRelay(
          checked,
          seqno,
          Date.now(),
          authorFingerprint,
          introduce ? authorCert.cert!.base64 : undefined,
        );
      emit(peer, relay.content);
      peer.sketch!.transcript.append(relay.line);
    }
  };
  if (checking instanceof Promise) return checking.then(forward);
  forward(checking);
  return undefined;
}

/** The sender's session id, as a handshake would have fixed it: its first msg's first record's. */
function inPlaceSid(content: Uint8Array): string {
  const text = new TextDecoder().decode(content);
  const at = text.indexOf('"sid":"') + '"sid":"'.length;
  return text.slice(at, at + 32);
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
    sendOutbox: () => sendOutbox(peer),
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
  if (SKETCH) {
    const path = `${dir}/sketch-${hello.id}.log`;
    const file = await Deno.open(path, { write: true, append: true, create: true, mode: 0o600 });
    peer.sketch = { transcript: new SketchTranscript(file), next: 1, lastTs: 0 };
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
    for (const content of peer.records.openContentsInPlace(payload)) {
      const relaying = relay(peer, content);
      if (relaying) await relaying;
    }
    // From the json rung up, what is relayed was copied out of the frame (receivedItems), as in
    // ChatSession.run: its buffer takes the next frame. The floor relays the contents themselves,
    // views of the frame until its turn's end.
    if (rung >= JSON_RUNG || SKETCH) conn.reuse(payload);
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
