/**
 * What the server makes per record of a received msg must die young: nothing in V8's old
 * generation may keep it once the msg is relayed. An object literal with a getter made per record
 * (ReceivedGroup.whole's `batch` until session 20) did: V8 makes the getter's AccessorPair in the
 * old generation, and that pair, dead, still pointed at the young closure and through it at the
 * whole msg. Every scavenge in a burst then kept and promoted what was in flight — ~2.6 MB per
 * scavenge in the peer bench's goal row, the old generation growing until a mark-compact and the
 * server's RSS by ~45 MiB (docs/PERFORMANCE.md, session 20). The probe holds each msg across one
 * minor collection, drops it, runs two more and reads how much the old space grew: ~1,130 bytes
 * per record with the literal, ~60 without it.
 */
import assert from "node:assert/strict";

const PROBE = new URL("./helpers/die_young_probe.ts", import.meta.url).pathname;
/** Bytes of old space per record at most: a tenth of what the literal kept. */
const MOST_PER_RECORD = 300;

Deno.test("a received msg's per-record objects are not promoted once it is dropped", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    // Every collection on the probe's own thread: the old space it reads is swept when it reads
    // it, whatever else the machine is doing (concurrent sweeping would leave that to chance).
    args: ["run", "--quiet", "--allow-all", "--v8-flags=--expose-gc,--single-threaded-gc", PROBE],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const { records, oldSpaceGrowth } = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    records: number;
    oldSpaceGrowth: number;
  };
  assert.ok(
    oldSpaceGrowth / records < MOST_PER_RECORD,
    `old space grew ${oldSpaceGrowth} bytes over ${records} records dropped (` +
      `${Math.round(oldSpaceGrowth / records)} per record, at most ${MOST_PER_RECORD})`,
  );
});
