/** What a typed line means (lib/session/chat_line.ts). */
import assert from "node:assert/strict";
import { parseChatLine } from "../../lib/session/chat_line.ts";
import { isClientRecipient } from "../../lib/message/record.ts";

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
  // No user has a name of 2 or 33 characters (PKI.md "Names"; PROTOCOL §6.1): refused here,
  // before a record the server would end the session for (interop finding 48).
  ["/msg ab hi", { action: "error", message: "ab is not a valid user name" }],
  [`/msg ${"a".repeat(33)} hi`, {
    action: "error",
    message: `${"a".repeat(33)} is not a valid user name`,
  }],
  [`/msg ${"a".repeat(32)} hi`, {
    action: "send",
    body: { kind: "text", text: "hi" },
    to: `user:${"a".repeat(32)}`,
  }],
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

Deno.test("isClientRecipient(): user: + a canonical name is PKI.md's repertoire lower-cased, 3–32 characters (PROTOCOL §6.1, interop finding 48)", () => {
  for (
    const to of ["lobby", "server", "user:bob", "user:a.b", "user:0x_-", `user:${"z".repeat(32)}`]
  ) {
    assert.equal(isClientRecipient(to), true, to);
  }
  for (
    const to of [
      "user:",
      "user:ab",
      `user:${"z".repeat(33)}`,
      "user:Bob",
      "user:.bob",
      "user:_bob",
      "user:b\u00f6b",
      "user:bob ",
      "lobby ",
      "Lobby",
    ]
  ) assert.equal(isClientRecipient(to), false, JSON.stringify(to));
});
