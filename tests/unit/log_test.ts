/** The event log: one event per line whatever the fields hold (lib/log.ts). */
import assert from "node:assert/strict";
import { createLogger } from "../../lib/log.ts";

function capture(format: "text" | "json") {
  const lines: string[] = [];
  return { lines, log: createLogger(format, (line) => void lines.push(line)) };
}

Deno.test("createLogger() text: event word first, then key=value, hostile values quoted on one line", () => {
  const { lines, log } = capture("text");
  log("AUTH_FAIL", { peer: "127.0.0.1:5000", user: "eve\nFAKE_EVENT user=alice", detail: "a b" });
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^\d{4}-\d\d-\d\dT[\d:.]+Z AUTH_FAIL peer=127\.0\.0\.1:5000 /);
  assert.ok(lines[0].includes(String.raw`user="eve\nFAKE_EVENT user=alice"`), lines[0]);
  assert.ok(lines[0].includes('detail="a b"'));
  assert.ok(!lines[0].includes("\n"));
});

Deno.test("createLogger() text: undefined fields are left out", () => {
  const { lines, log } = capture("text");
  log("CONNECT", { peer: "p", user: undefined });
  assert.match(lines[0], / CONNECT peer=p$/);
});

Deno.test("createLogger() json: one object per line with time and event", () => {
  const { lines, log } = capture("json");
  log("REPLAY", { peer: "p", seqno: 7, user: undefined });
  const parsed = JSON.parse(lines[0]);
  assert.equal(parsed.event, "REPLAY");
  assert.equal(parsed.seqno, 7);
  assert.equal("user" in parsed, false);
  assert.ok(!Number.isNaN(Date.parse(parsed.time)));
});
