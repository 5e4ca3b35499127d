import assert from "node:assert/strict";
import { atTurnEnd, nextTurn, spendTurn, TURN_UNITS } from "../../lib/turn.ts";

Deno.test("spendTurn: a spent budget ends the turn — what waits for its end runs before the caller goes on", async () => {
  await nextTurn(); // a fresh budget
  let ended = 0;
  atTurnEnd(() => ended++);
  assert.equal(spendTurn(TURN_UNITS - 1), undefined, "the budget lasts");
  assert.equal(ended, 0);
  const turn = spendTurn(1);
  assert.ok(turn, "spent: the caller yields");
  assert.equal(ended, 1, "the turn's end ran at once, not after the yield");
  await turn;
  await nextTurn(); // the end scheduled by atTurnEnd finds nothing left to run
  assert.equal(ended, 1);
});
