/**
 * Run by tests/die_young_test.ts (V8 flags `--expose-gc` and `--single-threaded-gc`): how much of
 * what the server makes per record of a received msg (ReceivedGroup.whole, prepareRelay) outlives
 * the msg into V8's old generation. A msg is made and held across one minor collection (as a msg
 * in flight is when a scavenge comes), then dropped, and two more minor collections run: what
 * they still find alive and promote is kept by something in the old generation that points at
 * it. Prints `{"records": N, "oldSpaceGrowth": bytes}` after many msgs.
 */
import { getHeapSpaceStatistics } from "node:v8";
import { toBase64, toHex } from "../../lib/bytes.ts";
import {
  encodeRecord,
  leafHash,
  LOBBY,
  type MessageRecord,
  prepareRelay,
  ReceivedGroup,
  sealContent,
} from "../../lib/message/record.ts";

const gc = (globalThis as unknown as { gc: (options?: { type: "minor" | "major" }) => void }).gc;
const oldSpaceUsed = () =>
  getHeapSpaceStatistics().find((space) => space.space_name === "old_space")!.space_used_size;

const der = crypto.getRandomValues(new Uint8Array(300));
const author = {
  fingerprint: toHex(crypto.getRandomValues(new Uint8Array(32))),
  cert: { base64: toBase64(der), der },
};
const RECORDS = 32;
const sid = toHex(crypto.getRandomValues(new Uint8Array(16)));
const sig = crypto.getRandomValues(new Uint8Array(64));

/** A msg of lobby lines as the server has it after its checks, made whole and prepared to relay. */
function receivedMsg(first: number): unknown[] {
  const made = Array.from({ length: RECORDS }, (_, j) => {
    const { k, ct, c } = sealContent({ kind: "text", text: `line ${j}` });
    const record: MessageRecord = {
      sid,
      dir: "c2s",
      to: LOBBY,
      seqno: first + j,
      ts: 1_700_000_000_000 + j,
      ct,
      c,
    };
    return { record, k };
  });
  const records = made.map(({ record }) => ({ ...record }));
  const group = new ReceivedGroup(
    { sig: toBase64(sig), first, n: RECORDS, proof: [] },
    { sig, first, n: RECORDS, proof: [] },
    records,
    records.map(leafHash),
  );
  return records.map((record, j) => {
    const forms = group.whole(j, encodeRecord(record));
    return prepareRelay(author, forms, made[j].k);
  });
}

const MSGS = 40;
for (let i = 0; i < 20; i++) receivedMsg(1); // code compiled, caches filled: not counted
gc({ type: "major" });
const before = oldSpaceUsed();
for (let m = 0; m < MSGS; m++) {
  let inFlight: unknown[] | undefined = receivedMsg(1 + m * RECORDS);
  gc({ type: "minor" });
  if (inFlight.length !== RECORDS) throw new Error("unreachable");
  inFlight = undefined;
  gc({ type: "minor" });
  gc({ type: "minor" });
}
console.log(JSON.stringify({ records: MSGS * RECORDS, oldSpaceGrowth: oldSpaceUsed() - before }));
