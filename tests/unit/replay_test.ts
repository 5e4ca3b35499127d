/** The sequence window (lib/session/replay.ts, PROTOCOL §6.3). */
import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import { SequenceWindow } from "../../lib/session/replay.ts";

function codeOf(fn: () => void): string {
  try {
    fn();
    return "ok";
  } catch (error) {
    return (error as SecureChatError).code;
  }
}

Deno.test("SequenceWindow: exactly last + 1 passes; lower is REPLAY; higher is a gap", () => {
  const window = new SequenceWindow();
  assert.equal(codeOf(() => window.check(1)), "ok");
  window.accept(1);
  assert.deepEqual([0, 1, 2, 3, 1_000_000].map((n) => codeOf(() => window.check(n))), [
    "REPLAY",
    "REPLAY",
    "ok",
    "PROTOCOL_ERROR",
    "PROTOCOL_ERROR",
  ]);
});

Deno.test("SequenceWindow: check() never moves the window; only accept() does", () => {
  const window = new SequenceWindow();
  window.check(1);
  window.check(1);
  assert.equal(window.last, 0);
  window.accept(1);
  assert.equal(window.last, 1);
  assert.equal(codeOf(() => window.accept(1)), "REPLAY");
  assert.equal(window.last, 1);
});
