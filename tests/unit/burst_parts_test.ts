/**
 * The peer bench's per-part arithmetic (testkit/burst_parts.ts), on samples written out by hand:
 * a part's CPU is what each thread added, so a thread that exits in a part (tokio's blocking
 * threads do after 10 s idle) no longer makes the part read negative (session 15's `by_part`
 * read −19 to −1 µs per delivery), and the quiet-part median counts only parts under the fault
 * bound. No server, no clock.
 */
import assert from "node:assert/strict";
import {
  cpuAddedByThread,
  type GrowthSample,
  type PartGrowth,
  partGrowth,
  QUIET_FAULTS_PER_MESSAGE,
  quietParts,
  type ThreadTime,
} from "../../testkit/burst_parts.ts";

const threads = (entries: [number, string, number][]) =>
  new Map<number, ThreadTime>(
    entries.map(([tid, name, cpuSeconds]) => [tid, { name, cpuSeconds }]),
  );
const sample = (entries: [number, string, number][], minorFaults = 0): GrowthSample => ({
  threads: threads(entries),
  minorFaults,
  rssBytes: 100 * 2 ** 20,
});

Deno.test("partGrowth() counts what each thread added when one of tokio's threads exited in the part", () => {
  // The server's blocking thread did 80 ms of its setup's file work, then exited idle mid-burst;
  // the main thread and V8's worker did 40 ms and 4 ms of the part's 2,000 deliveries.
  const last = sample([[100, "main", 2.0], [101, "V8 DefaultWorke", 0.5], [
    102,
    "tokio-runtime-w",
    0.08,
  ]]);
  const now = sample([[100, "main", 2.04], [101, "V8 DefaultWorke", 0.504]], 30);
  const part = partGrowth(5500, 500, 2000, last, now);
  // Total against total (the live threads' sums, 2.544 − 2.58 s) read −18 µs per delivery.
  assert.deepEqual(part, { upTo: 5500, messages: 500, cpuUs: 22, faults: 30, rssMiB: 100 });
});

Deno.test("cpuAddedByThread() counts a thread that started meanwhile, or took an exited one's id, from zero", () => {
  const earlier = threads([[1, "main", 1.0], [7, "tokio-runtime-w", 0.5], [
    8,
    "V8 DefaultWorke",
    0.3,
  ]]);
  const later = threads([
    [1, "main", 1.25],
    [7, "V8 DefaultWorke", 0.25], // id 7 reused by another kind of thread
    [8, "V8 DefaultWorke", 0.125], // the same name, less time: a new thread with an old id
    [9, "tokio-runtime-w", 0.0625], // new
  ]);
  assert.deepEqual(cpuAddedByThread(earlier, later), {
    main: 0.25,
    "V8 DefaultWorke": 0.375,
    "tokio-runtime-w": 0.0625,
  });
});

const part = (cpuUs: number, faults: number, messages = 500): PartGrowth => ({
  upTo: 0,
  messages,
  cpuUs,
  faults,
  rssMiB: 100,
});

Deno.test("quietParts() takes the median over the parts under the fault bound only", () => {
  const bound = QUIET_FAULTS_PER_MESSAGE * 500;
  const parts = [part(40, 1500), part(20, 10), part(60, bound), part(18, bound - 1), part(30, 90)];
  assert.deepEqual(quietParts(parts), {
    cpu_us_median: 20,
    parts: 3,
    of: 5,
    faults_per_message_below: QUIET_FAULTS_PER_MESSAGE,
  });
  // An even count: the middle two's mean. A short last part's bound is its own size's.
  const even = quietParts([
    part(20, 10),
    part(31, 10),
    part(25, 39, 100),
    part(27, 40, 100),
    part(22, 5),
  ]);
  assert.deepEqual([even.cpu_us_median, even.parts, even.of], [23.5, 4, 5]);
});

Deno.test("quietParts() gives no median when no part was quiet", () => {
  assert.deepEqual(quietParts([part(70, 2000)]), {
    cpu_us_median: null,
    parts: 0,
    of: 1,
    faults_per_message_below: QUIET_FAULTS_PER_MESSAGE,
  });
  assert.equal(quietParts([]).cpu_us_median, null);
});
