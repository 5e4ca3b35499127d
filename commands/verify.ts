/**
 * `securechat verify <session.log> [receipt.json] [--ca certs/ca.pem] [--json]`
 * Offline check of a transcript and its receipt with only the CA certificate.
 * Exit: 0 valid, 1 invalid or tampered (TAMPERED / SIG_FAIL / BAD_CERT, naming the
 * first bad line), 2 usage or I/O error.
 */
import { Command } from "commander";
import { basename, join } from "node:path";
import { pkiDir } from "./_home.ts";
import { formatFingerprint, formatSerial } from "../lib/pki/describe.ts";
import { SecureChatError } from "../lib/errors.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { type VerifyReport, verifyTranscript } from "../lib/transcript/verify.ts";
import { info, subcommand } from "./_cli.ts";
import { safeJson, safeText } from "../lib/safe_text.ts";

interface VerifyFlags {
  ca?: string;
  crl?: string;
  json?: boolean;
  concurrency?: string;
}

export function registerVerify(program: Command): void {
  subcommand(program, "verify", "Verify a session transcript and its receipt with only the CA.")
    .argument("<session.log>", "transcript written by serve/connect --transcripts DIR")
    .argument(
      "[receipt.json]",
      "receipt to check (own or peer's); default: <base>.receipt.json and " +
        "<base>.peer-receipt.json beside the log, if present",
    )
    .option("--ca <file>", "CA certificate (PEM) (default: ca.pem in the PKI directory)")
    .option("--crl <file>", "certificate revocation list (PEM) to apply")
    .option("--json", "print a machine-readable report on stdout")
    .addHelpText(
      "after",
      "\nCertificates are validated at the session's start time (the header's started_at),\n" +
        "not now, so a transcript stays verifiable after its certificates expire.\n" +
        "Exit status: 0 valid, 1 invalid or tampered, 2 usage or I/O error.",
    )
    .action(async (logPath: string, receiptPath: string | undefined, flags: VerifyFlags) => {
      await runVerify(logPath, receiptPath, flags);
    });
}

async function runVerify(
  logPath: string,
  receiptPath: string | undefined,
  flags: VerifyFlags,
): Promise<void> {
  const ca = flags.ca ?? join(await pkiDir(undefined), "ca.pem");
  let trust: TrustStore;
  try {
    trust = await TrustStore.load(ca, flags.crl);
  } catch (cause) {
    if (cause instanceof SecureChatError && cause.code !== "INTERNAL") throw cause;
    throw new SecureChatError("IO_ERROR", `cannot load CA ${ca}`, {
      cause,
      hint: "pass the CA certificate with --ca FILE",
    });
  }
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
    );
  }
}

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
    row("started", `${iso(r.startedAt)} (certificates validated at this time, not now)`);
  }
  for (const role of ["client", "server"] as const) {
    const s = r.signers[role];
    if (s) {
      row(
        role,
        `${s.commonName}  ${fp(s.fingerprint)}  (serial ${
          formatSerial(s.serial)
        }, until ${s.notAfter})`,
      );
    }
  }
  const total = r.messages.c2s + r.messages.s2c;
  const verdict = r.code && r.firstBadLine !== null
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
      `${a.commonName}  ${fp(a.fingerprint)}: ${a.messages} relayed message(s) carry ` +
        `${a.commonName}'s own valid signature`,
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
          `${fp(rc.signerFingerprint)}; covers c2s 1..${rc.c2sCount}, s2c 1..${rc.s2cCount}`,
      );
    } else {
      row("receipt", `${name}: INVALID (${rc.code}): ${rc.reason}`);
    }
  }
  row(
    "note",
    "the transcript holds ciphertext only: this proves who sent which ciphertext, when and in " +
      "what order, without revealing any plaintext",
  );
  if (r.ok) {
    row(
      "result",
      r.confirmed
        ? "VALID (confirmed by a signed receipt)"
        : "VALID (lines only: unconfirmed, no receipt)",
    );
  } else {
    const where = r.firstBadLine !== null ? `line ${r.firstBadLine}: ` : "";
    row("result", `INVALID ${r.code}: ${where}${r.reason}`);
  }
  return out.join("\n");
}
