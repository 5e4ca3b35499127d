/**
 * A user's msg as the server reads it (PROTOCOL §6.3, lib/session/session.ts #handleContent): in
 * one pass when its text is the canonical form our client writes (canonicalUserMsg), beside the
 * parse chokepoint it shortcuts (parseMessageAndText through C2sMsgShape, then userMsgRead: the
 * records decoded, the items found as received), same run, same bytes: the goal row's msg by
 * default, 32 lobby lines end to end (`sender` envelopes), RSA-2048-sized `sig`.
 *
 *   deno run -A bench/msg_read_bench.ts [--lines 32] [--ct 60] [--rounds 30]
 *
 * Prints one JSON object on stdout: the best µs per msg of each path over the rounds (the first
 * three are warm-up), and their ratio.
 */
import { parseArgs } from "node:util";
import { ByteBuilder, randomBytes, toBase64 } from "../lib/bytes.ts";
import {
  type C2sMsgMessage,
  C2sMsgShape,
  canonicalUserMsg,
  LOBBY,
  type MessageRecord,
  userMsgItem,
  userMsgRead,
  userMsgsOf,
} from "../lib/message/record.ts";
import { parseMessageAndText } from "../lib/wire/messages.ts";
import { byType } from "../lib/wire/shape.ts";

const { values } = parseArgs({
  options: {
    lines: { type: "string", default: "32" },
    ct: { type: "string", default: "60" },
    rounds: { type: "string", default: "30" },
  },
});
const lines = Number(values.lines);
const rounds = Number(values.rounds);
const RSA_2048_SIG = randomBytes(256);

/** The msg our client sends for `lines` lobby lines of one batch, as bytes. */
function goalRowMsg(): Uint8Array {
  const items = Array.from({ length: lines }, (_, j) => {
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to: LOBBY,
      seqno: 1000 + j,
      ts: 1_796_000_000_000 + j,
      ct: randomBytes(Number(values.ct)),
      c: randomBytes(32),
      // A signed batch's members as signBatch leaves them: what the msg carries is their form.
      sig: RSA_2048_SIG,
      batch: { i: j, n: lines, path: [] },
    };
    const e2e = {
      kind: "sender",
      from: "0a".repeat(8),
      id: 3,
      n: 500 + j,
      w: toBase64(randomBytes(48)),
    } as const;
    return userMsgItem(record, randomBytes(32), e2e);
  });
  const msgs = userMsgsOf(items);
  if (msgs.length !== 1) throw new Error(`msg_read_bench: ${lines} lines make ${msgs.length} msgs`);
  const [msg] = msgs;
  const out = new ByteBuilder(msg.length);
  msg.writeTo(out);
  return out.done().slice();
}

const content = goalRowMsg();
const MSG = byType<C2sMsgMessage>({ msg: C2sMsgShape });
const paths = {
  chokepoint: () => {
    const { message, text } = parseMessageAndText(content, MSG);
    return userMsgRead(message, content, text);
  },
  one_pass: () => canonicalUserMsg(content),
};
if (!paths.one_pass()) throw new Error("msg_read_bench: the msg is not read in one pass");

const best: Record<string, number> = {};
for (let round = 0; round < rounds; round++) {
  for (const [name, read] of Object.entries(paths)) {
    const n = 2000;
    const start = performance.now();
    for (let i = 0; i < n; i++) read();
    const us = (performance.now() - start) * 1000 / n;
    if (round >= 3) best[name] = Math.min(best[name] ?? Infinity, us);
  }
}
console.log(JSON.stringify({
  lines,
  msg_bytes: content.length,
  chokepoint_us: Number(best.chokepoint.toFixed(2)),
  one_pass_us: Number(best.one_pass.toFixed(2)),
  ratio: Number((best.one_pass / best.chokepoint).toFixed(2)),
}));
