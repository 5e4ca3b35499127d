/**
 * lib/deadlines.ts: many deadlines on one timer. Each runs once, in order, after its time and
 * never after it was cancelled, however many cancelled entries the heap still holds.
 */
import assert from "node:assert/strict";
import { atDeadline } from "../../lib/deadlines.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("atDeadline(): actions run once, earliest first, whatever order they were set in", async () => {
  const ran: number[] = [];
  const now = Date.now();
  for (const offset of [40, 10, 30, 20, 0]) atDeadline(now + offset, () => ran.push(offset));
  await sleep(120);
  assert.deepEqual(ran, [0, 10, 20, 30, 40]);
});

Deno.test("atDeadline(): a cancelled deadline never runs, an earlier one set later still runs on time", async () => {
  const ran: string[] = [];
  const late = atDeadline(Date.now() + 60, () => ran.push("late"));
  const t0 = Date.now();
  let at = 0;
  atDeadline(Date.now() + 20, () => {
    ran.push("early");
    at = Date.now() - t0;
  });
  late.cancel();
  late.cancel(); // twice is harmless
  await sleep(120);
  assert.deepEqual(ran, ["early"]);
  assert.ok(at >= 19, `ran after ${at} ms`);
});

Deno.test("atDeadline(): thousands cancelled (a busy connection's reads) leave the live ones exact", async () => {
  const ran: number[] = [];
  const now = Date.now();
  const keep = [atDeadline(now + 50, () => ran.push(1)), atDeadline(now + 70, () => ran.push(2))];
  for (let i = 0; i < 10_000; i++) atDeadline(now + 30 + (i % 100), () => ran.push(-1)).cancel();
  await sleep(150);
  assert.deepEqual(ran, [1, 2]);
  keep[0].cancel(); // late: harmless
});

Deno.test("atDeadline(): an action may set and cancel deadlines", async () => {
  const ran: string[] = [];
  const now = Date.now();
  const victim = atDeadline(now + 30, () => ran.push("victim"));
  atDeadline(now + 10, () => {
    ran.push("first");
    victim.cancel();
    atDeadline(Date.now() + 5, () => ran.push("chained"));
  });
  await sleep(100);
  assert.deepEqual(ran, ["first", "chained"]);
});
