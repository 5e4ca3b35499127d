/**
 * The relay's floor in this runtime, and a ladder of our relay's layers on it (issue 18): what
 * the peer bench's `floor` rows measure, driven as our end-to-end relay burst is (1 sender → N
 * recipients, lobby lines of our size, written in parts, all delivered) against a bench-only
 * server child (_floor_server.ts), its CPU read from /proc as every other row's.
 *
 * Every connection has its own record keys (lib/handshake/record.ts RecordLayer,
 * ChaCha20-Poly1305 each way as ours after the handshake), derived from a fixed test secret and
 * the connection's number: this measures the relay, not the handshake. Each rung is one layer of
 * what our server does per message more than the one below it, each through lib's own functions
 * (none re-implemented, so none cheaper than what ships):
 *  - "floor": each inbound record opened once, each msg in it (a batch's records, PROTOCOL §6.3)
 *    queued for every recipient as the bytes it came as, a turn's relays sealed into one record
 *    and written once per recipient (RecordOutbox at the turn's end, lib/turn.ts): no JSON, no
 *    signature, no transcript;
 *  - "json": + the msg read as the server reads it (lib/message canonicalUserMsg: in one pass
 *    when its text is its canonical form, since session 21; else lib/wire parseMessageAndText with
 *    C2sMsgShape, its text matched against its canonical form by receivedItems), each record's
 *    relayed JSON and carrier then taken as they came (as the server takes them since session
 *    17), its records decoded and made whole as the server makes them (ReceivedGroup.whole,
 *    RecordForms),
 *    each recipient's relay made as our session makes it (prepareRelay once per record; per
 *    recipient and turn one relay of a msg's records, RecipientRelayGroup, the msg's proof as it
 *    came when the relay carries all its records: §6.4);
 *  - "checks": + the msg's checks (§6.3): every record's envelope fits, the leaves hashed and the
 *    batch's root made from them and the msg's proof, the batch signature verified once
 *    (RecordSignatures.checkGroupNow);
 *  - "transcript": + a transcript line per recipient relay and per author msg (TranscriptWriter,
 *    files beside the child's other files, as `serve` writes them).
 * Since session 16 an author's msg carries a batch's records (§6.3); until then it carried one
 * record with its own `sig` and `batch` path, and the floor forwarded one msg per line.
 * What the top rung still lacks of our server: the handshake and login (before the clock), the
 * session's hop checks (a seqno window and a clock comparison), holding and releasing a
 * turn's messages to the lobby (presence, the member list, rate limits lifted), key updates.
 */
import { createHash } from "node:crypto";
import { ByteBuilder, randomBytes, toBase64, toHex, utf8 } from "../lib/bytes.ts";
import { type DirectionKeys, trafficKeys } from "../lib/handshake/key_schedule.ts";
import { RecordLayer } from "../lib/handshake/record.ts";
import {
  LOBBY,
  MAX_BATCH,
  type MessageRecord,
  RELAY_TAG,
  sealContent,
  signBatch,
  userMsgItem,
  userMsgsOf,
} from "../lib/message/record.ts";
import type { SenderEnvelope } from "../lib/e2e/envelope.ts";
import { encodeFrame } from "../lib/wire/frame.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import type { TestPki } from "./_pki.ts";
import {
  inPlaceCheck,
  selfCheck,
  sketchCheck,
  sketchCount,
  sketchMsg,
  sketchSid,
} from "./_layout_sketch.ts";
import { importVerifyingKeySpki } from "../lib/crypto/signature.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { burstCpuSeconds, cpuDuring, threadCpuDuring } from "./_proc.ts";
import { connectLikeClient, JsonChild, round, serveV8Flags, sleep } from "./_util.ts";

/**
 * The rungs, each what the one before it does and one layer more; then the transcript rung's
 * work done otherwise (bench/_layout_sketch.ts): "inplace" on our JSON msg read in place, without
 * objects, and "binary" on a binary layout.
 */
export const RUNGS = ["floor", "json", "checks", "transcript", "inplace", "binary"] as const;
export type Rung = typeof RUNGS[number];

/** What a connection says first, in the clear, before its records. */
export interface FloorHello {
  role: "sender" | "recipient";
  /** The connection's number: its keys are derived from it (floorKeys). */
  id: number;
}

/** What the server seals first to every connection once it knows it. */
export const FLOOR_READY = utf8("ready");

/** A connection's keys for one direction: from a fixed test secret, its number and the direction. */
export function floorKeys(id: number, dir: "c2s" | "s2c"): DirectionKeys {
  const secret = createHash("sha256").update(`securechat floor bench ${id} ${dir}`).digest();
  return trafficKeys(new Uint8Array(secret));
}

const SERVER_SCRIPT = new URL("./_floor_server.ts", import.meta.url).pathname;

/**
 * `count` lobby lines end to end as our sender makes them, as each record's contents: records (a
 * real content seal of `text`, sid, seqno from 1, ts) signed by `author` in batches of MAX_BATCH,
 * each with a `sender` envelope of the shipped sizes (PROTOCOL §12.5: a device id, the chain's id
 * and index, `k` wrapped: 48 bytes), a batch's records in the msgs that carry them (§6.3: one
 * msg, or several when they do not fit one record, userMsgsOf), one batch per record as our
 * sender seals a signed batch (lib/session/session.ts #sendBatchOutbox).
 */
export async function lobbyLines(
  pki: TestPki,
  author: string,
  text: string,
  count: number,
  layout: "json" | "binary" = "json",
): Promise<Uint8Array[][]> {
  const { signingKey } = await pki.identity(author);
  const sid = toHex(randomBytes(16));
  const device = "0123456789abcdef";
  const lines: Uint8Array[][] = [];
  for (let first = 1; first <= count; first += MAX_BATCH) {
    const batch: MessageRecord[] = [];
    for (let seqno = first; seqno < Math.min(count + 1, first + MAX_BATCH); seqno++) {
      const { ct, c } = sealContent({ kind: "text", text });
      batch.push({ sid, dir: "c2s", to: LOBBY, seqno, ts: Date.now(), ct, c });
    }
    await signBatch(signingKey, batch);
    if (layout === "binary") {
      const envelopes = batch.map((r) => ({ from: device, id: 1, n: r.seqno, w: randomBytes(48) }));
      lines.push([sketchMsg(batch, envelopes)]);
      continue;
    }
    const items = batch.map((record) => {
      const e2e: SenderEnvelope = {
        kind: "sender",
        from: device,
        id: 1,
        n: record.seqno,
        w: toBase64(randomBytes(48)),
      };
      return userMsgItem(record, undefined, e2e);
    });
    lines.push(
      userMsgsOf(items).map((msg) => {
        const out = new ByteBuilder(msg.length);
        msg.writeTo(out);
        return out.done();
      }),
    );
  }
  return lines;
}

const ITEM = '{"record":';

/**
 * The messages a content carries, one per record of its group: a relay's (the rungs above the
 * floor, PROTOCOL §6.4) or the user's msg the floor forwards as it came (§6.3).
 */
function messagesIn(content: Uint8Array, rung: Rung): number {
  // lib's relay is binary too since session 23 (PROTOCOL §6.4 "A relay on the wire"), its count
  // where the sketch's is: the rungs that relay with lib's writer send it.
  if (rung === "binary" || content[0] === RELAY_TAG) return sketchCount(content);
  return new TextDecoder().decode(content).split(ITEM).length - 1;
}

/** A connection to the floor server, its records under its own keys. */
async function floorConnect(
  port: number,
  hello: FloorHello,
): Promise<{ conn: FrameConnection; records: RecordLayer; tcp: Deno.TcpConn }> {
  const tcp = await connectLikeClient(port);
  const conn = new FrameConnection(tcp);
  conn.send(utf8(JSON.stringify(hello)));
  const records = new RecordLayer(floorKeys(hello.id, "c2s"), floorKeys(hello.id, "s2c"));
  const ready = await conn.read(10_000);
  if (ready === null || new TextDecoder().decode(records.open(ready)) !== "ready") {
    throw new Error("floor bench: the server did not answer the hello");
  }
  return { conn, records, tcp };
}

/**
 * The sketch rungs' checks, tried on the burst's first msg before the burst: it passes, and a byte
 * changed in its first record's ct or c, or in its signature, is refused (selfCheck).
 */
async function checkSketch(
  pki: TestPki,
  author: string,
  rung: "inplace" | "binary",
  msg: Uint8Array,
): Promise<void> {
  const { certDer } = await pki.identity(author);
  const key = {
    fingerprint: "",
    key: await importVerifyingKeySpki(parseCertificate(certDer).spki),
  };
  if (rung === "binary") {
    const sid = sketchSid(msg);
    const sigLength = new DataView(msg.buffer, msg.byteOffset).getUint32(1);
    const ctAt = 1 + 4 + sigLength + 8 + 4 + 1 + 1 + 16 + 1 + 4 + LOBBY.length + 8 + 8 + 4;
    const ctLength = new DataView(msg.buffer, msg.byteOffset).getUint32(ctAt - 4);
    const signed = [5 + sigLength - 1, ctAt + 3, ctAt + ctLength + 3];
    return selfCheck(msg, (m) => sketchCheck(m, sid, 1, 0, key), signed);
  }
  const text = new TextDecoder().decode(msg);
  const sid = text.slice(text.indexOf('"sid":"') + 7, text.indexOf('"sid":"') + 39);
  const signed = ['"sig":"', '"ct":"', '"c":"'].map((member) =>
    text.indexOf(member) + member.length + 3
  );
  return selfCheck(msg, (m) => inPlaceCheck(m, sid, 1, 0, key), signed);
}

export interface FloorPhase {
  units: number;
  wallSeconds: number;
  cpuSeconds: number;
  extra: Record<string, unknown>;
}

/**
 * One burst through the floor server at `rung`: `warm` messages not measured (the JIT compiles
 * the path), then `messages` measured, each written in parts of `part` messages (whole records),
 * the next once every recipient has counted the last, as ourBurst writes end-to-end lines. The
 * recipients open each record and count its contents, as the peer bench's counting recipients.
 */
export async function floorBurst(
  pki: TestPki,
  author: string,
  text: string,
  o: {
    rung: Rung;
    recipients: number;
    messages: number;
    warm: number;
    part: number;
    /** Deno flags for the server child after serve's V8 flags (a CPU profile, say). */
    denoFlags?: string[];
  },
): Promise<FloorPhase> {
  const dir = await Deno.makeTempDir({ prefix: "sc-bench-floor-" });
  const child = new JsonChild(SERVER_SCRIPT, [pki.dir, author, o.rung, dir], [
    ...await serveV8Flags(),
    ...o.denoFlags ?? [],
  ]);
  const tcps: Deno.TcpConn[] = [];
  try {
    const { port } = await child.next() as { port: number };
    const counts: number[] = [];
    for (let i = 0; i < o.recipients; i++) {
      const { conn, records, tcp } = await floorConnect(port, { role: "recipient", id: i + 1 });
      tcps.push(tcp);
      counts.push(0);
      void (async () => {
        for (;;) {
          const payload = await conn.read().catch(() => null);
          if (payload === null) return;
          for (const content of records.openContents(payload)) {
            counts[i] += messagesIn(content, o.rung);
          }
        }
      })();
    }
    const sender = await floorConnect(port, { role: "sender", id: 0 });
    tcps.push(sender.tcp);
    const layout = o.rung === "binary" ? "binary" : "json";
    const batches = await lobbyLines(pki, author, text, o.warm + o.messages, layout);
    if (o.rung === "inplace" || o.rung === "binary") {
      await checkSketch(pki, author, o.rung, batches[0][0]);
    }
    const frames = batches.map((contents) => encodeFrame(sender.records.sealContents(contents)));
    /** As ourBurst's wire_bytes_per_message: framed and sealed, as the sender writes them. */
    const wireBytes = frames.reduce((a, f) => a + f.length, 0) / (o.warm + o.messages);
    const slowest = () => Math.min(...counts);
    /** Writes the frames of `from`..`to` (messages) in parts, each once the last is delivered. */
    const burst = async (from: number, to: number) => {
      for (let at = from; at < to;) {
        const end = Math.min(to, at + Math.max(MAX_BATCH, o.part));
        const bytes = frames.slice(at / MAX_BATCH, Math.ceil(end / MAX_BATCH));
        for (const frame of bytes) {
          for (let w = 0; w < frame.length;) w += await sender.tcp.write(frame.subarray(w));
        }
        at = Math.min(to, Math.ceil(end / MAX_BATCH) * MAX_BATCH);
        const t0 = performance.now();
        while (slowest() < at) {
          if (performance.now() - t0 > 120_000) {
            throw new Error(
              `floor bench (${o.rung}): of ${at} messages the recipients counted ${counts}`,
            );
          }
          await sleep(2);
        }
      }
      return to - from;
    };
    // Whole records: the warm-up ends at a batch's edge.
    const warm = Math.ceil(o.warm / MAX_BATCH) * MAX_BATCH;
    if (warm > 0) await burst(0, warm);
    const { result: m, threads } = await threadCpuDuring(
      child.pid,
      () => cpuDuring(child.pid, () => burst(warm, o.warm + o.messages)),
    );
    return {
      units: m.result * o.recipients,
      wallSeconds: m.wallSeconds,
      cpuSeconds: burstCpuSeconds(m.cpuSeconds, threads),
      extra: {
        rung: o.rung,
        server_cpu_seconds_in_ticks: round(m.cpuSeconds, 2),
        messages: m.result,
        wire_bytes_per_message: Math.round(wireBytes),
        server_thread_cpu_seconds: Object.fromEntries(
          Object.entries(threads).map(([name, s]) => [name, round(s, 6)]),
        ),
      },
    };
  } finally {
    for (const tcp of tcps) {
      try {
        tcp.close();
      } catch {
        // closed by the server's exit
      }
    }
    await child.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
