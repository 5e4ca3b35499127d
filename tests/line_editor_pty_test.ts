/**
 * Issue 17 item 2 in a real terminal: `connect` under tmux (a pty), driven by key
 * presses, while bob (a pipe) reads what alice sends. Arrow keys edit instead of
 * inserting `^[[D`, Up recalls history, Ctrl-U and Ctrl-W delete, an incoming line is
 * printed above a half-typed line without disturbing it (also one wider than the
 * terminal, leaving no stale rows), and Ctrl-D on an empty line ends with receipts.
 */
import assert from "node:assert/strict";
import { pollUntil } from "../testkit/server_process.ts";
import { hasTmux } from "../testkit/tmux.ts";
import { withTerminalChat } from "./helpers/terminal_chat.ts";

if (!hasTmux) {
  console.error("line editor pty test skipped: tmux is not installed (.ci/run installs it)");
}

const WIDTH = 100;

Deno.test({
  name: "connect in a terminal: arrows, history, Ctrl-U/W, incoming lines above the half-typed one",
  ignore: !hasTmux,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withTerminalChat({
      alicePassword: "alice-password-1",
      width: WIDTH,
      serverArgs: ["--message-rate", "100"],
    }, async ({ tmux, bob }) => {
      const fromBob = (text: string) => (l: string) => l.endsWith(`alice \u2713 ${text}`);
      // Arrow keys move the cursor: "hllo", three Lefts, "e" → "hello".
      await tmux.keys("hllo", "Left", "Left", "Left", "e", "Enter");
      await bob.waitForLine(fromBob("hello"));
      // Up recalls the last line.
      await tmux.keys("Up", "Enter");
      await pollUntil(
        () => bob.lines(fromBob("hello")).length === 2 || undefined,
        10_000,
        () => bob.stdout.join("\n"),
      );
      // Ctrl-U deletes the line, Ctrl-W the last word.
      await tmux.keys("garbage", "C-u", "clean", "Enter");
      await bob.waitForLine(fromBob("clean"));
      await tmux.keys("one two", "C-w", "three", "Enter");
      await bob.waitForLine(fromBob("one three"));

      // An incoming line goes above the half-typed line, which stays as it was.
      await tmux.keys("half typed");
      await tmux.waitFor((rows) => rows.at(-1) === "alice> half typed", "the half-typed line");
      await bob.send("incoming while alice types");
      // The screen settled: bob's line, and a prompt drawn below it.
      const rows = await tmux.waitFor(
        (r) =>
          r.some((row) => row.endsWith("bob \u2713 incoming while alice types")) &&
          r.at(-1)!.startsWith("alice> "),
        "bob's line",
      );
      assert.equal(rows.at(-1), "alice> half typed", rows.join("\n"));
      assert.ok(rows.at(-2)!.endsWith("bob \u2713 incoming while alice types"), rows.join("\n"));
      await tmux.keys(" and done", "Enter");
      await bob.waitForLine(fromBob("half typed and done"));

      // A half-typed line wider than the terminal: redrawn whole, no stale rows left.
      const long = "x".repeat(WIDTH + 30);
      await tmux.keys(long);
      await tmux.waitFor((r) => r.join("").endsWith(long), "the long line");
      await bob.send("over a long line");
      const after = await tmux.waitFor(
        (r) =>
          r.some((row) => row.endsWith("bob \u2713 over a long line")) &&
          r.join("").endsWith(long),
        "bob's second line",
      );
      const xRows = after.filter((row) => row.includes("xxxxxxxxxx"));
      assert.equal(xRows.length, 2, `the long line spans two rows, once:\n${after.join("\n")}`);
      assert.equal(after.slice(-2).join(""), `alice> ${long}`);
      await tmux.keys("C-u");

      assert.deepEqual(
        bob.lines((l) => l.includes(" alice \u2713 ")).map((l) => l.split(" alice \u2713 ")[1]),
        ["hello", "hello", "clean", "one three", "half typed and done"],
        "exactly the entered lines, nothing half-typed, no escape sequence",
      );
      // Ctrl-D on an empty line closes the session cleanly.
      await tmux.keys("C-d");
      const end = await tmux.waitFor((r) => r.some((row) => row.startsWith("EXIT=")), "the exit");
      assert.ok(end.includes("EXIT=0"), end.join("\n"));
      assert.ok(end.some((row) => row.includes("server's receipt:")), end.join("\n"));
    });
  },
});
