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
const EPOCH = 1_767_225_600_000;

Deno.test("TicketAuthority.redeem() accepts a fresh ticket once, for its user and certificate", async () => {
  const authority = new TicketAuthority(memoryTicketStores());
  const now = Date.now();
  const ticket = await authority.issue("alice", FP, EPOCH, now);
  await authority.redeem(ticket, "alice", FP, EPOCH, now + 1000);
  await assert.rejects(
    authority.redeem(ticket, "alice", FP, EPOCH, now + 2000),
    authFail,
    "second use",
  );
});

Deno.test("TicketAuthority.redeem() refuses another user, another certificate, expiry, tampering", async () => {
  const authority = new TicketAuthority(memoryTicketStores());
  const now = Date.now();
  const ticket = await authority.issue("alice", FP, EPOCH, now);
  await assert.rejects(authority.redeem(ticket, "bob", FP, EPOCH, now), authFail);
  await assert.rejects(authority.redeem(ticket, "alice", OTHER_FP, EPOCH, now), authFail);
  await assert.rejects(
    authority.redeem(ticket, "alice", FP, EPOCH, now + TICKET_LIFETIME_MS),
    authFail,
  );
  for (const i of [0, 5, 20, ticket.length - 1]) {
    const tampered = ticket.slice();
    tampered[i] ^= 1;
    await assert.rejects(
      authority.redeem(tampered, "alice", FP, EPOCH, now),
      authFail,
      `byte ${i}`,
    );
  }
  await assert.rejects(authority.redeem(ticket.subarray(0, 20), "alice", FP, EPOCH, now), authFail);
  await assert.rejects(authority.redeem(new Uint8Array(600), "alice", FP, EPOCH, now), authFail);
  // None of the refusals above used the ticket up.
  await authority.redeem(ticket, "alice", FP, EPOCH, now);
});

Deno.test("TicketAuthority.redeem() refuses a ticket from before a password change, or for a deleted account", async () => {
  const authority = new TicketAuthority(memoryTicketStores());
  const now = Date.now();
  const ticket = await authority.issue("alice", FP, EPOCH, now);
  await assert.rejects(authority.redeem(ticket, "alice", FP, EPOCH + 1, now), authFail, "newer");
  await assert.rejects(authority.redeem(ticket, "alice", FP, null, now), authFail, "deleted");
  // Refused for its epoch, not used up: the epoch it was issued under still opens it.
  await authority.redeem(ticket, "alice", FP, EPOCH, now);
});

Deno.test("TicketAuthority: a key is accepted one period after its own, then retired", async () => {
  const keys = new MemoryKeyRing();
  const authority = new TicketAuthority({ keys, used: new MemoryUsedTickets() });
  const start = Math.floor(Date.now() / TICKET_KEY_PERIOD_MS) * TICKET_KEY_PERIOD_MS;
  const late = await authority.issue("alice", FP, EPOCH, start + TICKET_KEY_PERIOD_MS - 1000);
  await authority.redeem(late, "alice", FP, EPOCH, start + TICKET_KEY_PERIOD_MS + 1000);
  const old = await authority.issue("alice", FP, EPOCH, start);
  await keys.current(start + 2 * TICKET_KEY_PERIOD_MS);
  await assert.rejects(
    authority.redeem(old, "alice", FP, EPOCH, start + 2 * TICKET_KEY_PERIOD_MS),
    authFail,
  );
  // A second authority (another node) with its own memory keys cannot open this node's tickets.
  const other = new TicketAuthority(memoryTicketStores());
  const ticket = await authority.issue("alice", FP, EPOCH);
  await assert.rejects(other.redeem(ticket, "alice", FP, EPOCH), authFail);
});
