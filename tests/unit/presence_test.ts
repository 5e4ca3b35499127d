/**
 * lib/server/presence.ts: joins and leaves coalesced per window (the first at once, the rest
 * at the window's end, runs of one kind in order), the bounded welcome and the `/who` pages.
 */
import assert from "node:assert/strict";
import {
  MAX_WHO_PAGES,
  PresenceNotices,
  welcomeText,
  whoPages,
} from "../../lib/server/presence.ts";
import { MAX_TEXT_CHARS } from "../../lib/message/record.ts";

Deno.test("PresenceNotices: the first change goes at once, the window's others together at its end, in order", async () => {
  const sent: [string, string | undefined][] = [];
  let flushed = Promise.withResolvers<void>();
  const notices = new PresenceNotices(50, (text, sole) => {
    sent.push([text, sole]);
    flushed.resolve();
  });
  notices.add("joined", "alice");
  assert.deepEqual(sent, [["alice joined", "alice"]]);
  flushed = Promise.withResolvers();
  notices.add("joined", "bob");
  notices.add("joined", "carol");
  notices.add("left", "bob");
  notices.add("joined", "bob");
  assert.equal(sent.length, 1, "held until the window ends");
  await flushed.promise;
  assert.deepEqual(sent.slice(1), [
    ["bob and carol joined", undefined],
    ["bob left", "bob"],
    ["bob joined", "bob"],
  ]);
  notices.stop();
});

Deno.test("PresenceNotices.flush() sends what is pending now; stop() drops it", () => {
  const sent: string[] = [];
  const notices = new PresenceNotices(60_000, (text) => void sent.push(text));
  notices.add("joined", "a");
  notices.add("joined", "b");
  notices.flush();
  assert.deepEqual(sent, ["a joined", "b joined"]);
  notices.add("left", "c");
  notices.stop();
  notices.flush();
  assert.deepEqual(sent, ["a joined", "b joined"]);
});

Deno.test("welcomeText() lists everyone when few are online, the first 50 and a count when many", () => {
  assert.equal(welcomeText("bob", ["alice", "bob"]), "welcome bob; online: alice, bob");
  const many = Array.from({ length: 2000 }, (_, i) => `user-with-a-long-name-${i}`.slice(0, 32));
  const text = welcomeText("bob", many);
  assert.ok(text.length <= MAX_TEXT_CHARS);
  assert.match(text, /^welcome bob; 2000 online: .* and 1950 more \(\/who lists everyone\)$/);
});

Deno.test("whoPages(): one page as before; pages within the notice limit; at most MAX_WHO_PAGES, saying how many are left out", () => {
  assert.deepEqual(whoPages(["alice", "bob"]), ["online: alice, bob"]);
  const names = (n: number) =>
    Array.from({ length: n }, (_, i) => `u${String(i).padStart(31, "0")}`);
  const some = whoPages(names(300));
  assert.equal(some.length, 3);
  assert.ok(some.every((p) => p.length <= MAX_TEXT_CHARS));
  assert.deepEqual(
    some.flatMap((p) => p.replace(/^online \(\d\/3\): /, "").split(", ")),
    names(300),
  );
  const all = whoPages(names(100_000));
  assert.equal(all.length, MAX_WHO_PAGES);
  assert.ok(all.every((p) => p.length <= MAX_TEXT_CHARS));
  const listed = all.flatMap((p) => p.replace(/^online \(\d\/8\): /, "").split(", ")).length;
  assert.match(all.at(-1)!, new RegExp(` and ${100_000 - listed} more not listed$`));
});
