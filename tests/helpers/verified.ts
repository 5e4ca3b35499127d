/**
 * `securechat verify --json` held to what an honest session's transcript gives: exit 0, `ok`,
 * and confirmed by both receipts (the client's and the server's).
 */
import assert from "node:assert/strict";
import { runCli } from "../../testkit/cli.ts";

/** The report of `log`, verified against the CA certificate `ca`. */
// deno-lint-ignore no-explicit-any -- the report is JSON the tests read field by field
export async function verifiedReport(log: string, ca: string): Promise<any> {
  const result = await runCli(["verify", log, "--ca", ca, "--json"]);
  assert.equal(result.code, 0, `${log}: ${result.stdout}${result.stderr}`);
  const report = JSON.parse(result.stdout);
  assert.equal(report.ok, true, result.stdout);
  assert.deepEqual(report.confirmedBy, ["client", "server"], `${log}: ${result.stdout}`);
  return report;
}

/** The reports of every `.log` in `dir` (at least one), each as {@link verifiedReport}. */
// deno-lint-ignore no-explicit-any -- as verifiedReport's
export async function verifyAll(dir: string, ca: string): Promise<any[]> {
  const reports = [];
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.name.endsWith(".log")) reports.push(await verifiedReport(`${dir}/${entry.name}`, ca));
  }
  assert.ok(reports.length > 0, `no transcript in ${dir}`);
  return reports;
}
