/**
 * Issue 8, soak (short CI run; `deno task soak --clients 300 --seconds 120` runs a long one).
 * 100 in-process clients chat through one in-process ChatServer for 10 s; see scripts/soak.ts
 * for what is checked.
 *
 * Memory: `deno test` gives no --expose-gc, so heapUsed is measured without a forced GC
 * (memorySample() still waits a little). The bound is generous: the same process holds the
 * 100 client sessions during the run and V8 collects lazily; `deno task soak` runs with
 * --expose-gc and a full GC, where the heap returns to within a few MiB of its baseline.
 */
import assert from "node:assert/strict";
import { formatSoak, runSoak } from "../scripts/soak.ts";
import { MiB } from "./helpers/fuzz.ts";

Deno.test({
  name:
    "soak: 100 clients chat for 10 s: exactly-once delivery, clean closes, all transcripts verify",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const report = await runSoak({ clients: 100, seconds: 10, rate: 0.1, seed: 8 });
    console.log(formatSoak(report));
    assert.ok(report.sent >= 50, `only ${report.sent} messages sent`);
    assert.equal(report.deliveries, report.expectedDeliveries, "every relay arrived");
    assert.equal(report.missing, 0, "no message missing at any member");
    assert.equal(report.duplicates, 0, "no message twice, none echoed to its author");
    assert.equal(report.misattributed, 0, "every relay carries its author's verified signature");
    assert.equal(report.closedCleanly, 100, "every client closed with receipts");
    assert.equal(report.serverCloses, 100, "the server logged CLOSE outcome=closed for each");
    assert.deepEqual(report.transcriptsBad, []);
    assert.equal(report.transcriptsVerified, 200, "one transcript per session on each side");
    assert.equal(report.lobbyAfter, 0);
    assert.equal(report.queuedAfter, 0);
    assert.equal(report.internalLogged, 0);
    assert.ok(
      report.after.heapUsed - report.baseline.heapUsed < 96 * MiB,
      `heap after ${(report.after.heapUsed / MiB).toFixed(1)} MiB, baseline ${
        (report.baseline.heapUsed / MiB).toFixed(1)
      } MiB`,
    );
  },
});
