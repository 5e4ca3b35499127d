/**
 * Writes tests/vectors/transcript/golden.* (and negative*.log with negative.json): a real v2
 * client transcript of format 7 (Ed25519 certificates valid only during 2020, session time
 * 2020-06-01; the client's msg lines: a batch of 3 whole, a batch of 3 in two lines of 2 and 1,
 * a batch of one, a batch of 3 whole; relays of a second user's batch of 3: a group of two
 * records, then the third) with both receipts and its `.keys`, and golden.json whose
 * transcript_sha256 comes from the independent Python implementation (transcript_hash_v2.py).
 *
 *   deno run -A tests/helpers/generate_transcript_vectors.ts [--negatives]
 *
 * A script, not part of the test suite; every run makes new keys, so commit its output.
 * `--negatives` rewrites only negative*.log and negative.json from the committed golden.log.
 */
import { join } from "node:path";
import { makePki, writeSession } from "../../testkit/transcript_fixtures.ts";
import { fromBase64 } from "../../lib/bytes.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";

type Line = Record<string, unknown>;

const out = new URL("../vectors/transcript/", import.meta.url).pathname;
// `--negatives`: only the negative vectors, from the committed golden.log (its keys kept).
const negativesOnly = Deno.args.includes("--negatives");
let pkiDir: string | undefined;
if (!negativesOnly) {
  const pki = await makePki({
    alg: "ed25519",
    notBefore: "20200101000000Z",
    notAfter: "20210101000000Z",
    others: ["bob"],
  });
  const work = await Deno.makeTempDir({ prefix: "sc-golden-" });
  const s = await writeSession(pki, {
    dir: work,
    messages: 10,
    startedAt: Date.UTC(2020, 5, 1),
    relayAuthor: pki.others[0],
    relayGroups: { n: 3, perRelay: 2 },
    c2sGroups: [[3], [2, 1], [1]],
  });
  const base = s.logPath.replace(/\.log$/, "");
  for (
    const [from, to] of [
      [`${base}.log`, "golden.log"],
      [`${base}.receipt.json`, "golden.receipt.json"],
      [`${base}.peer-receipt.json`, "golden.peer-receipt.json"],
      [`${base}.keys`, "golden.keys"],
      [pki.caPath, "golden_ca.pem"],
    ]
  ) await Deno.copyFile(from, join(out, to));
  const python = await new Deno.Command("python3", {
    args: [join(out, "transcript_hash_v2.py"), "log", join(out, "golden.log")],
    stdout: "piped",
  }).output();
  const hash = new TextDecoder().decode(python.stdout).trim();
  if (hash !== s.ownReceipt!.transcript_sha256) throw new Error(`Python says ${hash}`);
  await Deno.writeTextFile(
    join(out, "golden.json"),
    JSON.stringify(
      {
        description: "A real v2 client transcript of format 7 (Ed25519 certificates valid only " +
          "during 2020, session time 2020-06-01; alice's five msg lines (PROTOCOL §6.3, " +
          "TRANSCRIPT §2.2): c2s 1-3 a whole batch of 3 (empty proof), c2s 4-5 and c2s 6 one " +
          "batch of 3 in two lines (each with its proof), c2s 7 a batch of one, c2s 8-10 a whole " +
          "batch of 3; two relays of bob's batch of 3 (PROTOCOL §6.4): the first carries records " +
          "1 and 2 and introduces his certificate, the second carries record 3 and names it, " +
          "PROTOCOL §6.4.1) with both receipts and its .keys (alice's keys by record seqno, the " +
          "relays' by item); transcript_sha256 recomputed independently in Python " +
          "(transcript_hash_v2.py)",
        ca: "golden_ca.pem",
        log: "golden.log",
        receipts: ["golden.receipt.json", "golden.peer-receipt.json"],
        keys: "golden.keys",
        c2s: 10,
        s2c: 5,
        transcript_sha256: hash,
      },
      null,
      2,
    ) + "\n",
  );
  pkiDir = pki.dir;
  await Deno.remove(work, { recursive: true });
}

// Negative vectors (TRANSCRIPT §2.2, §5 step 4): the golden log with one edit each of its two
// relay lines (the author certificate, the group's members and records), and the code and line a
// verifier must report (the lowest bad line).
const lines = (await Deno.readTextFile(join(out, "golden.log"))).split("\n").slice(0, -1);
const header = JSON.parse(lines[0]);
const relays = lines.flatMap((l, i) => l.includes('"type":"relay"') ? [i] : []);
if (relays.length !== 2) throw new Error(`golden.log has ${relays.length} relays, not 2`);
type Item = { record: Line };
const items = (line: Line) => line.records as Item[];
/** Replaces the base64 character at `i` by another valid one (canonical form kept). */
const flip = (text: string, i: number) =>
  text.slice(0, i) + (text[i] === "A" ? "B" : "A") + text.slice(i + 1);
const cases: [string, string, (first: Line, second: Line) => void, string, number][] = [
  [
    "a relay names a certificate no earlier line introduced",
    "negative_cert_unknown.log",
    (first) => delete first.cert,
    "TAMPERED",
    relays[0],
  ],
  [
    "a certificate introduced again with other bytes under the name it holds",
    "negative_cert_other_bytes.log",
    (_, second) => (second.cert = header.client_cert),
    "TAMPERED",
    relays[1],
  ],
  [
    "a certificate introduced twice",
    "negative_cert_twice.log",
    (first, second) => (second.cert = first.cert),
    "TAMPERED",
    relays[1],
  ],
  [
    "bob's records under another user's certificate (alice's, introduced under its own name)",
    "negative_cert_other_user.log",
    (first) => {
      first.cert = header.client_cert;
      first.author_fp = fingerprintOf(fromBase64(header.client_cert));
    },
    "SIG_FAIL",
    relays[0],
  ],
  [
    "a proof entry changed (another root: the signature fails)",
    "negative_group_proof_flipped.log",
    (first) => (first.proof = [flip((first.proof as string[])[0], 5)]),
    "SIG_FAIL",
    relays[0],
  ],
  [
    "a proof entry missing (the proof does not fit the records and n)",
    "negative_group_proof_missing.log",
    (first) => (first.proof = []),
    "TAMPERED",
    relays[0],
  ],
  [
    "an extra proof entry (one left unused)",
    "negative_group_proof_extra.log",
    (first) => (first.proof = [...first.proof as string[], ...first.proof as string[]]),
    "TAMPERED",
    relays[0],
  ],
  [
    "a group's records reordered (seqnos must increase)",
    "negative_group_reordered.log",
    (first) => (first.records = [...items(first)].reverse()),
    "TAMPERED",
    relays[0],
  ],
  [
    "a record repeated within a group",
    "negative_group_repeated.log",
    (first) => (first.records = [items(first)[0], items(first)[0]]),
    "TAMPERED",
    relays[0],
  ],
  [
    "a record dropped from a group (its proof no longer fits)",
    "negative_group_dropped.log",
    (first) => (first.records = [items(first)[0]]),
    "TAMPERED",
    relays[0],
  ],
  [
    "a record relayed again on a later line",
    "negative_group_again.log",
    (first, second) => (second.records = [items(first)[1]]),
    "REPLAY",
    relays[1],
  ],
  [
    // Record by record, its dates then its seqno (TRANSCRIPT §5 step 4.4, PROTOCOL §6.4 step 6):
    // the first record's REPLAY comes before the second's STALE (review15 R3).
    "a record relayed again, then a record dated an hour after its hop, on one line",
    "negative_group_again_then_stale.log",
    (first, second) => {
      const late = structuredClone(items(second)[0]);
      late.record.ts = (second.ts as number) + 60 * 60 * 1000;
      second.records = [items(first)[1], late];
    },
    "REPLAY",
    relays[1],
  ],
  [
    "a record of a group carrying its own sig",
    "negative_group_record_sig.log",
    (first) => (items(first)[0].record.sig = first.sig),
    "TAMPERED",
    relays[0],
  ],
  [
    "a record of another author session in a group (one sid)",
    "negative_group_other_sid.log",
    (first) => (items(first)[1].record.sid = "ab".repeat(16)),
    "TAMPERED",
    relays[0],
  ],
  [
    "first changed (the record's index moves: the proof no longer fits)",
    "negative_group_first.log",
    (_, second) => (second.first = (second.first as number) + 1),
    "TAMPERED",
    relays[1],
  ],
  [
    "n changed (the root still fits; the signed statement binds n)",
    "negative_group_n.log",
    (first) => (first.n = (first.n as number) + 1),
    "SIG_FAIL",
    relays[0],
  ],
  [
    "a record's ciphertext changed",
    "negative_group_ct.log",
    (first) => {
      const record = items(first)[1].record;
      record.ct = flip(record.ct as string, 3);
    },
    "SIG_FAIL",
    relays[0],
  ],
  [
    "a record of a group moved to another recipient",
    "negative_group_moved.log",
    (first) => (items(first)[1].record.to = "user:carol"),
    "TAMPERED",
    relays[0],
  ],
];
const negatives = [];
for (const [name, file, edit, code, at] of cases) {
  const [first, second] = relays.map((i) => JSON.parse(lines[i]) as Line);
  edit(first, second);
  const edited = [...lines];
  edited[relays[0]] = JSON.stringify(first);
  edited[relays[1]] = JSON.stringify(second);
  await Deno.writeTextFile(join(out, file), edited.join("\n") + "\n");
  negatives.push({ name, log: file, code, line: at + 1 });
}

// The client's own msg lines (TRANSCRIPT §2.2, §5 step 4: the c2s form): golden.log's are c2s 1-3
// (a whole batch), c2s 4-5 and c2s 6 (one batch in two lines, each with a proof entry), c2s 7 (a
// batch of one) and c2s 8-10. An edit returns null to delete the line.
const own = lines.flatMap((l, i) => l.startsWith('{"dir":"c2s","type":"msg"') ? [i] : []);
if (own.length !== 5) throw new Error(`golden.log has ${own.length} c2s msg lines, not 5`);
const [whole, split, , alone] = own;
const ownCases: [string, string, (msgs: (Line | null)[]) => void, string, number][] = [
  [
    "a record of a msg line carrying its own sig",
    "negative_msg_record_sig.log",
    (msgs) => (items(msgs[0]!)[1].record.sig = msgs[0]!.sig),
    "TAMPERED",
    whole,
  ],
  [
    "a seqno gap inside a msg line (its middle record dropped)",
    "negative_msg_gap.log",
    (msgs) => (msgs[0]!.records = [items(msgs[0]!)[0], items(msgs[0]!)[2]]),
    "TAMPERED",
    whole,
  ],
  [
    "a msg line's records reordered",
    "negative_msg_reordered.log",
    (msgs) => (msgs[0]!.records = [...items(msgs[0]!)].reverse()),
    "TAMPERED",
    whole,
  ],
  [
    "a whole batch's last record dropped from its line (its proof no longer fits)",
    "negative_msg_dropped_last.log",
    (msgs) => (msgs[0]!.records = items(msgs[0]!).slice(0, 2)),
    "TAMPERED",
    whole,
  ],
  [
    "a whole msg line deleted (a seqno gap between lines)",
    "negative_msg_deleted.log",
    (msgs) => (msgs[2] = null),
    "TAMPERED",
    alone,
  ],
  [
    "a proof entry changed (another root: the signature fails)",
    "negative_msg_proof_flipped.log",
    (msgs) => (msgs[1]!.proof = [flip((msgs[1]!.proof as string[])[0], 5)]),
    "SIG_FAIL",
    split,
  ],
  [
    "an extra proof entry (one left unused)",
    "negative_msg_proof_extra.log",
    (msgs) => (msgs[1]!.proof = [...msgs[1]!.proof as string[], ...msgs[1]!.proof as string[]]),
    "TAMPERED",
    split,
  ],
  [
    "a proof entry missing (the proof does not fit the records and n)",
    "negative_msg_proof_missing.log",
    (msgs) => (msgs[1]!.proof = []),
    "TAMPERED",
    split,
  ],
  [
    "first changed so that the records still fall in the batch (their places move: another root)",
    "negative_msg_first.log",
    (msgs) => (msgs[1]!.first = (msgs[1]!.first as number) - 1),
    "SIG_FAIL",
    split,
  ],
  [
    "first changed past the line's first record (outside first … first + n − 1)",
    "negative_msg_first_past.log",
    (msgs) => (msgs[1]!.first = (msgs[1]!.first as number) + 1),
    "TAMPERED",
    split,
  ],
  [
    "n changed on a whole batch (a leaf with no record and no proof entry)",
    "negative_msg_n.log",
    (msgs) => (msgs[0]!.n = (msgs[0]!.n as number) + 1),
    "TAMPERED",
    whole,
  ],
  [
    "n changed on a batch of one (the proof has no entry to give)",
    "negative_msg_n_alone.log",
    (msgs) => (msgs[3]!.n = 2),
    "TAMPERED",
    own[3],
  ],
  [
    "a record's ciphertext changed",
    "negative_msg_ct.log",
    (msgs) => {
      const record = items(msgs[0]!)[1].record;
      record.ct = flip(record.ct as string, 3);
    },
    "SIG_FAIL",
    whole,
  ],
  [
    "a record readdressed to another user",
    "negative_msg_readdressed.log",
    (msgs) => (items(msgs[0]!)[1].record.to = "user:carol"),
    "SIG_FAIL",
    whole,
  ],
  [
    "a record addressed outside the recipient rule",
    "negative_msg_bad_recipient.log",
    (msgs) => (items(msgs[0]!)[1].record.to = "user:Carol"),
    "TAMPERED",
    whole,
  ],
  [
    "a msg line's records moved from another session (every sid changed)",
    "negative_msg_other_session.log",
    (msgs) => items(msgs[0]!).forEach((item) => (item.record.sid = "ab".repeat(16))),
    "TAMPERED",
    whole,
  ],
  [
    "a msg line moved to the s2c direction",
    "negative_msg_to_s2c.log",
    (msgs) => (msgs[0]!.dir = "s2c"),
    "TAMPERED",
    whole,
  ],
  [
    "a msg line in the form of format 5 (its record whole, with sig and batch)",
    "negative_msg_format5.log",
    (msgs) => {
      const m = msgs[3]!;
      const record = { ...items(m)[0].record, sig: m.sig, batch: { i: 0, n: 1, path: [] } };
      for (const key of Object.keys(m)) delete m[key];
      Object.assign(m, { dir: "c2s", type: "msg", record });
    },
    "TAMPERED",
    own[3],
  ],
  [
    "two msg lines swapped",
    "negative_msg_swapped.log",
    (msgs) => ([msgs[1], msgs[2]] = [msgs[2], msgs[1]]),
    "TAMPERED",
    split,
  ],
];
for (const [name, file, edit, code, at] of ownCases) {
  const msgs: (Line | null)[] = own.map((i) => JSON.parse(lines[i]) as Line);
  edit(msgs);
  const edited: (string | null)[] = [...lines];
  own.forEach((i, j) => (edited[i] = msgs[j] === null ? null : JSON.stringify(msgs[j])));
  const kept = edited.filter((l): l is string => l !== null);
  await Deno.writeTextFile(join(out, file), kept.join("\n") + "\n");
  // The line number in the edited file: lines deleted before it move it up.
  const line = at + 1 - edited.slice(0, at).filter((l) => l === null).length;
  negatives.push({ name, log: file, code, line });
}
await Deno.writeTextFile(
  join(out, "negative.json"),
  JSON.stringify(
    {
      description: "golden.log with one edit each of its relay lines or its own msg lines " +
        "(TRANSCRIPT §2.2, §5 step 4: the author certificate, the group's proof, records, first " +
        "and n, a msg line's seqnos, recipients, session and direction): the code and the line " +
        "number (the header is line 1) a verifier must report; no receipts",
      ca: "golden_ca.pem",
      cases: negatives,
    },
    null,
    2,
  ) + "\n",
);
if (pkiDir) await Deno.remove(pkiDir, { recursive: true });
console.log(
  `${negativesOnly ? "golden kept" : "golden transcript written"}; ` +
    `${negatives.length} negatives`,
);
