/** Session resumption tickets (docs/DEPLOY.md §8): what a redeem accepts and refuses. */
import assert from "node:assert/strict";
import { codeOf } from "../../lib/errors.ts";
import {
  MemoryKeyRing,
  memoryTicketStores,
  MemoryUsedTickets,
  TICKET_KEY_PERIOD_MS,
  TICKET_LIFETIME_MS,
  TicketAuthority,
} from "../../lib/resumption/ticket.ts";

const FP = "ab".repeat(32);
const OTHER_FP = "cd".repeat(32);
const authFail = (e: unknown) => codeOf(e) === "AUTH_FAIL";

Deno.test("TicketAuthority.redeem() accepts a fresh ticket once, for its user and certificate", async () => {
  const authority = new TicketAuthority(memoryTicketStores());
  const now = Date.now();
  const ticket = await authority.issue("alice", FP, now);
  await authority.redeem(ticket, "alice", FP, now + 1000);
  await assert.rejects(authority.redeem(ticket, "alice", FP, now + 2000), authFail, "second use");
});

Deno.test("TicketAuthority.redeem() refuses another user, another certificate, expiry, tampering", async () => {
  const authority = new TicketAuthority(memoryTicketStores());
  const now = Date.now();
  const ticket = await authority.issue("alice", FP, now);
  await assert.rejects(authority.redeem(ticket, "bob", FP, now), authFail);
  await assert.rejects(authority.redeem(ticket, "alice", OTHER_FP, now), authFail);
  await assert.rejects(authority.redeem(ticket, "alice", FP, now + TICKET_LIFETIME_MS), authFail);
  for (const i of [0, 5, 20, ticket.length - 1]) {
    const tampered = ticket.slice();
    tampered[i] ^= 1;
    await assert.rejects(authority.redeem(tampered, "alice", FP, now), authFail, `byte ${i}`);
  }
  await assert.rejects(authority.redeem(ticket.subarray(0, 20), "alice", FP, now), authFail);
  await assert.rejects(authority.redeem(new Uint8Array(600), "alice", FP, now), authFail);
  // None of the refusals above used the ticket up.
  await authority.redeem(ticket, "alice", FP, now);
});

Deno.test("TicketAuthority: a key is accepted one period after its own, then retired", async () => {
  const keys = new MemoryKeyRing();
  const authority = new TicketAuthority({ keys, used: new MemoryUsedTickets() });
  const start = Math.floor(Date.now() / TICKET_KEY_PERIOD_MS) * TICKET_KEY_PERIOD_MS;
  const late = await authority.issue("alice", FP, start + TICKET_KEY_PERIOD_MS - 1000);
  await authority.redeem(late, "alice", FP, start + TICKET_KEY_PERIOD_MS + 1000);
  const old = await authority.issue("alice", FP, start);
  await keys.current(start + 2 * TICKET_KEY_PERIOD_MS);
  await assert.rejects(
    authority.redeem(old, "alice", FP, start + 2 * TICKET_KEY_PERIOD_MS),
    authFail,
  );
  // A second authority (another node) with its own memory keys cannot open this node's tickets.
  const other = new TicketAuthority(memoryTicketStores());
  const ticket = await authority.issue("alice", FP);
  await assert.rejects(other.redeem(ticket, "alice", FP), authFail);
});
