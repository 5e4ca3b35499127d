/**
 * `securechat verify <session.log> [receipt.json] [--ca certs/ca.pem] [--json]
 *  [--reveal LINE[:ITEM] [--keys FILE] [--out FILE]]` and `securechat verify --opening FILE`.
 * Offline check of a transcript and its receipts, or of one line's opening, with only
 * the CA certificate (docs/TRANSCRIPT.md §5, §6).
 * Exit: 0 valid, 1 invalid or tampered (naming the first bad line), 2 usage or I/O error, or a
 * file of a format this securechat cannot read (UNSUPPORTED_FORMAT: not judged either way).
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { Command } from "commander";
import { basename, join } from "node:path";
import { pkiDir } from "./_home.ts";
import { formatFingerprint, formatSerial } from "../lib/pki/describe.ts";
import { SecureChatError } from "../lib/errors.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { type VerifyReport, verifyTranscript } from "../lib/transcript/verify.ts";
import {
  checkOpening,
  makeOpening,
  readOpening,
  type RevealTarget,
} from "../lib/transcript/opening.ts";
import { basePathOfLog, UNSUPPORTED_FORMAT_HINT } from "../lib/transcript/format.ts";
import { info, positiveInt, subcommand } from "./_cli.ts";
import { safeJson, safeText } from "../lib/safe_text.ts";

interface VerifyFlags {
  ca?: string;
  crl?: string;
  json?: boolean;
  reveal?: RevealTarget;
  keys?: string;
  out?: string;
  opening?: string;
}

export function registerVerify(program: Command): void {
  subcommand(program, "verify", "Verify a session transcript and its receipt with only the CA.")
    .argument("[session.log]", "transcript written by serve/connect --transcripts DIR")
    .argument(
      "[receipt.json]",
      "receipt to check (own or peer's); default: <base>.receipt.json and " +
        "<base>.peer-receipt.json beside the log, if present",
    )
    .option("--ca <file>", "CA certificate (PEM) (default: ca.pem in the PKI directory)")
    .option("--crl <file>", "certificate revocation list (PEM) to apply")
    .option("--json", "print a machine-readable report on stdout")
    .option(
      "--reveal <line[:item]>",
      "write an opening of this line (its content key from <base>.keys) that anyone can check; " +
        "a line of several records (a relay, or your own msg): LINE:ITEM opens its ITEMth " +
        "record (from 1)",
      parseReveal,
    )
    .option("--keys <file>", "content keys for --reveal (default <base>.keys beside the log)")
    .option("--out <file>", "write the opening here instead of stdout")
    .option("--opening <file>", "check an opening made with --reveal (no transcript needed)")
    .addHelpText(
      "after",
      "\nCertificates are judged at the session time (the header's session_time, signed by\n" +
        "the receipts), not now, so a transcript stays verifiable after its certificates\n" +
        "expire; revocation is judged by date against the signed message times.\n" +
        "Exit status: 0 valid, 1 invalid or tampered, 2 usage or I/O error, or a file of a\n" +
        "format this securechat cannot read (UNSUPPORTED_FORMAT: not judged either way).",
    )
    .action(
      async (logPath: string | undefined, receiptPath: string | undefined, flags: VerifyFlags) => {
        const trust = await loadTrust(flags);
        if (flags.opening) return await runCheckOpening(flags.opening, trust, flags);
        if (!logPath) {
          throw new SecureChatError("USAGE", "name a transcript, or an opening with --opening");
        }
        await runVerify(logPath, receiptPath, trust, flags);
      },
    );
}

/**
 * `--reveal N` or `--reveal N:J` (TRANSCRIPT §6): a line number, and for a group line (a relay,
 * a user's msg) the place of one of its records, both from 1.
 * @throws USAGE
 */
export function parseReveal(value: string): RevealTarget {
  const [line, item, ...rest] = value.split(":");
  if (rest.length > 0) {
    throw new SecureChatError("USAGE", "--reveal takes LINE or LINE:ITEM (e.g. 12 or 12:3)");
  }
  const lineNumber = positiveInt("--reveal's LINE")(line);
  return item === undefined
    ? { line: lineNumber }
    : { line: lineNumber, item: positiveInt("--reveal's ITEM")(item) };
}

async function loadTrust(flags: VerifyFlags): Promise<TrustStore> {
  const ca = flags.ca ?? join(await pkiDir(undefined), "ca.pem");
  let trust: TrustStore;
  try {
    trust = await loadTrustStore(ca, flags.crl);
  } catch (cause) {
    if (cause instanceof SecureChatError && cause.code !== "INTERNAL") throw cause;
    throw new SecureChatError("IO_ERROR", `cannot load CA ${ca}`, {
      cause,
      hint: "pass the CA certificate with --ca FILE",
    });
  }
  return trust;
}

async function runVerify(
  logPath: string,
  receiptPath: string | undefined,
  trust: TrustStore,
  flags: VerifyFlags,
): Promise<void> {
  const report = await verifyTranscript(logPath, { trust, receiptPath });
  if (flags.json) {
    console.log(safeJson(report, 2));
  } else {
    for (const r of report.receipts) {
      if (r.autodetected) info(`using ${r.path} (found beside the log)`);
    }
    console.log(formatReport(report));
  }
  if (!report.ok) {
    const where = report.firstBadLine !== null ? `line ${report.firstBadLine}: ` : "";
    throw new SecureChatError(
      report.code ?? "TAMPERED",
      `${basename(report.path)}: ${where}${report.reason}`,
      report.code === "UNSUPPORTED_FORMAT" ? { hint: UNSUPPORTED_FORMAT_HINT } : undefined,
    );
  }
  if (flags.reveal !== undefined) {
    const keys = flags.keys ?? `${basePathOfLog(logPath)}.keys`;
    const opening = await makeOpening(logPath, flags.reveal, keys);
    await checkOpening(opening, trust); // never hand out an opening that does not check
    const text = JSON.stringify(opening, null, 2) + "\n";
    if (flags.out) {
      await Deno.writeTextFile(flags.out, text, { mode: 0o600 });
      info(`opening of line ${revealName(flags.reveal)} written to ${flags.out}`);
    } else {
      await Deno.stdout.write(new TextEncoder().encode(text));
    }
  }
}

const revealName = (target: RevealTarget) =>
  target.item === undefined ? `${target.line}` : `${target.line}:${target.item}`;

async function runCheckOpening(path: string, trust: TrustStore, flags: VerifyFlags) {
  const opened = await checkOpening(await readOpening(path), trust);
  const r = opened.record;
  const result = {
    valid: true,
    author: opened.author,
    authorFingerprint: opened.authorFingerprint,
    session: r.sid,
    direction: r.dir,
    to: r.to,
    seqno: r.seqno,
    ts: new Date(r.ts).toISOString(),
    body: opened.body,
  };
  if (flags.json) {
    console.log(safeJson(result, 2));
    return;
  }
  const said = "text" in opened.body ? opened.body.text : `(${opened.body.kind})`;
  console.log(
    [
      `opening     VALID: the record carries ${
        sanitize(opened.author)
      }'s signature and the revealed content matches its commitment`,
      `author      ${sanitize(opened.author)}  sha256:${opened.authorFingerprint}`,
      `record      session ${r.sid}, ${r.dir} seqno ${r.seqno}, to ${
        sanitize(r.to)
      }, signed at ${result.ts}`,
      `said        ${sanitize(said)}`,
    ].join("\n"),
  );
}

/** Other people's text never reaches the terminal raw (issue 11): the one sanitiser. */
const sanitize = (text: string) => safeText(text);

const iso = (ms: number | null) => (ms === null ? "-" : new Date(ms).toISOString());
const fp = (hex: string | undefined) => (hex ? formatFingerprint(hex) : "-");

/** The short human report. */
export function formatReport(r: VerifyReport): string {
  const out: string[] = [];
  // Names come from certificates and reasons may quote the file: every value is made safe.
  const row = (k: string, v: string) => out.push(`${k.padEnd(11)} ${safeText(v)}`);
  row("transcript", r.path);
  if (r.sessionId) {
    row(
      "session",
      `${r.sessionId} (recorded by the ${r.recordedBy}; transcript v${r.transcriptVersion}, ` +
        `protocol v${r.protocolVersion})`,
    );
    row(
      "time",
      `${iso(r.sessionTime)} (session time: certificates judged at it; ` +
        `${
          r.ok && r.confirmedBy.length > 0 ? "signed by the receipts" : "not confirmed by a receipt"
        })`,
    );
  }
  for (const role of ["client", "server"] as const) {
    const s = r.signers[role];
    if (s) {
      const revoked = s.revokedFrom ? `; revoked later, from ${s.revokedFrom}` : "";
      row(
        role,
        `${s.commonName}  ${fp(s.fingerprint)}  (serial ${
          formatSerial(s.serial)
        }, until ${s.notAfter}${revoked})`,
      );
    }
  }
  const total = r.messages.c2s + r.messages.s2c;
  const verdict = r.code === "UNSUPPORTED_FORMAT"
    ? "the file's format is not read here"
    : r.code && r.firstBadLine !== null
    ? "before the first bad line"
    : "all signatures valid";
  row(
    "messages",
    `${total} checked: c2s ${r.messages.c2s} (client→server), s2c ${r.messages.s2c} ` +
      `(server→client); ${verdict}`,
  );
  for (const a of r.authors) {
    row(
      "author",
      `${a.commonName}  ${fp(a.fingerprint)}: ${a.messages} signed record(s) carry ` +
        `${a.commonName}'s own valid signature`,
    );
  }
  for (const u of r.unattributed) {
    row("unattributed", `line ${revealName({ line: u.line, item: u.item })}: ${u.reason}`);
  }
  for (const x of r.refused) {
    row("refused", `c2s ${x.of} was refused by the server (${x.code}), line ${x.line}`);
  }
  for (const x of r.queued) {
    row("queued", `c2s ${x.of} was stored for its offline recipient, line ${x.line}`);
  }
  for (const x of r.stored) {
    row(
      "stored",
      `line ${x.line}: delivered from the offline queue, written ${
        new Date(x.writtenAt).toISOString()
      }`,
    );
  }
  if (r.crl) {
    row(
      "crl",
      `revocations known up to ${r.crl.thisUpdate}` +
        (r.crl.stale
          ? ` (STALE: past its nextUpdate ${r.crl.nextUpdate}; later revocations unknown)`
          : ""),
    );
  }
  if (total > 0) row("time span", `${iso(r.span.first)} .. ${iso(r.span.last)}`);
  if (r.transcriptSha256) row("hash", `transcript_sha256 ${r.transcriptSha256}`);
  if (r.receipts.length === 0) {
    row(
      "receipt",
      "NONE: no receipt confirms this record (the session may have been cut off, or lines " +
        "removed from its end); every complete line was checked on its own",
    );
  }
  for (const rc of r.receipts) {
    const name = `${basename(rc.path)}${rc.autodetected ? " (found beside the log)" : ""}`;
    if (rc.status === "not-checked") {
      row("receipt", `${name}: not checked (the transcript itself is invalid)`);
    } else if (rc.status === "valid") {
      row(
        "receipt",
        `${name}: VALID, signed by the ${rc.signer} ${rc.signerCommonName ?? ""} ` +
          `${fp(rc.signerFingerprint)}; the ${rc.signer} confirms c2s 1..${rc.c2sCount}, ` +
          `s2c 1..${rc.s2cCount}${rc.complete ? " (every line)" : " (NOT every line)"}`,
      );
    } else {
      row("receipt", `${name}: INVALID (${rc.code}): ${rc.reason}`);
    }
  }
  row(
    "note",
    "the transcript holds ciphertext and commitments only: this proves who sent which record, " +
      "when, to whom and in what order, without revealing any plaintext (see --reveal)",
  );
  if (r.ok) {
    const by = r.confirmedBy;
    row(
      "result",
      by.length === 2
        ? "VALID, confirmed by both (client and server receipts over the same hash)"
        : by.length === 1
        ? `VALID, confirmed by the ${by[0]} only (no receipt of the ${
          by[0] === "client" ? "server" : "client"
        } covers every line)`
        : r.receipts.length === 0
        ? "VALID (lines only: unconfirmed, no receipt)"
        : "VALID (lines only: unconfirmed, no receipt covers every line)",
    );
  } else {
    const where = r.firstBadLine !== null ? `line ${r.firstBadLine}: ` : "";
    // A format this verifier cannot read is not judged: neither valid nor invalid (finding 72).
    const verdict = r.code === "UNSUPPORTED_FORMAT" ? "NOT CHECKED" : "INVALID";
    row("result", `${verdict} ${r.code}: ${where}${r.reason}`);
  }
  return out.join("\n");
}
