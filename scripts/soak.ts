/**
 * The long soak (issue 8): `deno task soak --clients 300 --seconds 120 [--rate 1] [--seed N]`.
 * What is checked is described in testkit/soak.ts; prints the report and PASSED or FAILED,
 * and exits 1 on failure.
 */
import { parseArgs } from "node:util";
import { MiB } from "../testkit/fuzz.ts";
import { formatSoak, runSoak } from "../testkit/soak.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    clients: { type: "string", default: "200" },
    seconds: { type: "string", default: "60" },
    rate: { type: "string", default: "0.5" },
    seed: { type: "string", default: "1" },
  },
});
const report = await runSoak({
  clients: Number(values.clients),
  seconds: Number(values.seconds),
  rate: Number(values.rate),
  seed: Number(values.seed),
});
console.log(formatSoak(report));
for (const line of report.transcriptsBad.slice(0, 10)) console.log(`BAD ${line}`);
const ok = report.missing === 0 && report.duplicates === 0 && report.misattributed === 0 &&
  report.closedCleanly === report.clients && report.serverCloses === report.clients &&
  report.transcriptsBad.length === 0 && report.lobbyAfter === 0 && report.internalLogged === 0 &&
  report.after.heapUsed - report.baseline.heapUsed < 64 * MiB;
console.log(ok ? "PASSED" : "FAILED");
Deno.exit(ok ? 0 : 1);
