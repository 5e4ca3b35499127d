/**
 * Issue 8, soak (short CI run; `deno task soak --clients 300 --seconds 120` runs a long one).
 * 100 in-process clients chat through one in-process ChatServer for 10 s; see testkit/soak.ts
 * for what is checked.
 *
 * Memory: `deno test` passes no --expose-gc, so testkit/fuzz.ts turns the flag on at
 * run time (node:v8 setFlagsFromString) and takes `gc` from a fresh node:vm context; the
 * heap is then measured after full GCs, before the clients log in and after everyone left
 * and every reference to the clients was dropped. It must be back within 24 MiB (seen: +3
 * MiB after a 300+ MiB peak). Without a GC the bound would have to be hundreds of MiB.
 */
import assert from "node:assert/strict";
import { formatSoak, runSoak } from "../testkit/soak.ts";
import { MiB } from "../testkit/fuzz.ts";

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
    assert.ok(report.gcAvailable, "a full GC is available for the memory check");
    assert.ok(
      report.after.heapUsed - report.baseline.heapUsed < 24 * MiB,
      `heap after ${(report.after.heapUsed / MiB).toFixed(1)} MiB, baseline ${
        (report.baseline.heapUsed / MiB).toFixed(1)
      } MiB`,
    );
  },
});
