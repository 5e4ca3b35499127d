/** What a typed line means (lib/session/chat_line.ts). */
import assert from "node:assert/strict";
import { parseChatLine } from "../../lib/session/chat_line.ts";

const CASES: [string, ReturnType<typeof parseChatLine>][] = [
  ["hello all", { action: "send", body: { kind: "text", text: "hello all" }, to: "lobby" }],
  ["  spaced  ", { action: "send", body: { kind: "text", text: "  spaced  " }, to: "lobby" }],
  ["/msg Bob hi there", {
    action: "send",
    body: { kind: "text", text: "hi there" },
    to: "user:bob",
  }],
  ["/msg bob", { action: "error", message: "usage: /msg <user> <text>" }],
  ["/msg b\u00f6b hi", { action: "error", message: "b\u00f6b is not a valid user name" }],
  ["/who", { action: "send", body: { kind: "who" }, to: "server" }],
  ["/help", { action: "help" }],
  // Never `/passwd OLD NEW` on the line: the passwords are asked for with echo off.
  ["/passwd", { action: "passwd" }],
  ["/passwd hunter2", {
    action: "error",
    message: "usage: /passwd (it asks for the passwords, unechoed)",
  }],
  ["/quit", { action: "quit" }],
  ["!!exit", { action: "quit" }],
  ["", { action: "ignore" }],
  ["/nope x", { action: "error", message: "unknown command /nope; try /help" }],
  ["x".repeat(4001), { action: "error", message: "message longer than 4000 characters" }],
];

for (const [line, expected] of CASES) {
  Deno.test(`parseChatLine(${JSON.stringify(line.slice(0, 20))}) is ${expected.action}`, () => {
    assert.deepEqual(parseChatLine(line), expected);
  });
}
