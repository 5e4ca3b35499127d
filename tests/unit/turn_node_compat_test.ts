/**
 * lib/turn.ts in a process where Deno's Node compatibility is loaded, as it is in the CLI
 * (any npm package, e.g. reflect-metadata, loads it): the global MessageChannel is then
 * node:worker_threads' own. A file of its own: the replacement is for the whole isolate, and
 * tests/turn_test.ts keeps the web platform's MessageChannel.
 */
import assert from "node:assert/strict";
import "node:worker_threads";
import { atTurnEnd, currentTurn, endTurn, nextTurn } from "../../lib/turn.ts";

Deno.test("nextTurn() and atTurnEnd() wait for the turn's end under Node's MessageChannel too: after the microtasks queued before it", async () => {
  assert.notEqual(
    globalThis.MessageChannel.name,
    "MessageChannel",
    "node:worker_threads replaced the global MessageChannel (else this test tests nothing new)",
  );
  const order: string[] = [];
  const turn = nextTurn().then(() => order.push("turn"));
  atTurnEnd(() => order.push("turn's end"));
  const chain = (async () => {
    for (let i = 0; i < 10_000; i++) await null;
    order.push("10,000 awaits");
  })();
  await Promise.all([turn, chain]);
  await nextTurn(); // the turn's end, scheduled apart, has come by the next turn
  assert.deepEqual(order.slice(0, 1), ["10,000 awaits"], order.join(", "));
  assert.ok(order.includes("turn's end"), order.join(", "));
});

Deno.test("nextTurn() under Node compatibility: yields one after another are a new turn each; those asked for in one turn share one", async () => {
  const first = currentTurn();
  for (let i = 0; i < 20; i++) await nextTurn(); // one after another, as a busy server yields
  assert.equal(currentTurn(), first + 20);
  await Promise.all([nextTurn(), endTurn(), nextTurn()]); // several in one turn
  assert.equal(currentTurn(), first + 21);
});
