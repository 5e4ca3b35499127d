/** Admission limits and login slow-down (lib/server/limits.ts, PROTOCOL §8.2). */
import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import {
  addressBlock,
  Admission,
  type LoginSubject,
  LoginThrottle,
  type LoginThrottleOptions,
  TokenBucket,
} from "../../lib/server/limits.ts";
import { MemoryLoginFailures } from "../../lib/store/login_failures.ts";

const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return (error as SecureChatError).code;
  }
  return "none";
};

Deno.test("TokenBucket: a burst, then refills at its rate", () => {
  const bucket = new TokenBucket(3, 2, 0);
  assert.deepEqual([1, 2, 3, 4].map(() => bucket.take(0)), [true, true, true, false]);
  assert.equal(bucket.take(400), false); // 0.8 of a token
  assert.equal(bucket.take(500), true); // 1.0
  assert.equal(bucket.full(10_000), true);
});

Deno.test("Admission: per-address cap refuses, a full server sheds a pending connection, sessions keep their slots", () => {
  const admission = new Admission({
    maxConnections: 3,
    maxConnectionsPerAddress: 2,
    maxPending: 3,
    cookieThreshold: 2,
    handshakeBurst: 1,
    handshakesPerSecond: 1,
  });
  const shed: string[] = [];
  const a1 = admission.connect("a", () => shed.push("a1"));
  admission.connect("a", () => shed.push("a2"));
  assert.equal(codeOf(() => admission.connect("a", () => {})), "TOO_MANY_CONNECTIONS");
  assert.ok(admission.underLoad(), "two pending: cookies from now on");
  const b1 = admission.connect("b", () => shed.push("b1"));
  // Full: c sheds the oldest pending connection of the heaviest address (a), not b's.
  const c1 = admission.connect("c", () => shed.push("c1"));
  assert.deepEqual(shed, ["a1"]);
  a1.release(); // the shed connection ends: not counted twice
  assert.equal(admission.open, 3);
  b1.established();
  c1.established();
  admission.connect("d", () => shed.push("d1")); // sheds a2, the last pending one
  assert.deepEqual(shed, ["a1", "a2"]);
  assert.equal(codeOf(() => admission.connect("e", () => {})), "none", "sheds d1");
  assert.deepEqual(shed, ["a1", "a2", "d1"]);
  // Only sessions and e's handshake now; e established, every slot holds a session: refused.
  b1.release();
  assert.equal(admission.open, 2);
});

Deno.test("Admission: with every slot holding a session, a new connection is refused", () => {
  const admission = new Admission({
    maxConnections: 2,
    maxConnectionsPerAddress: 2,
    maxPending: 2,
    cookieThreshold: 64,
    handshakeBurst: 1,
    handshakesPerSecond: 1,
  });
  for (const address of ["a", "b"]) admission.connect(address, () => {}).established();
  assert.equal(codeOf(() => admission.connect("c", () => {})), "TOO_MANY_CONNECTIONS");
  assert.ok(!admission.underLoad());
});

Deno.test("Admission: handshakes per address are rate limited, other addresses unaffected", () => {
  const admission = new Admission({
    maxConnections: 10,
    maxConnectionsPerAddress: 10,
    maxPending: 10,
    cookieThreshold: 10,
    handshakeBurst: 2,
    handshakesPerSecond: 1,
  });
  assert.equal(codeOf(() => admission.admitHandshake("a", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("a", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("a", 0)), "RATE_LIMITED");
  assert.equal(codeOf(() => admission.admitHandshake("b", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("a", 1000)), "none");
});

Deno.test("Admission: the addresses of one IPv6 /64 share one connection cap and one handshake budget", () => {
  // One subscriber gets a /64 (or more): counted per /128, a client picking a fresh source
  // address per connection had 2^64 caps and budgets, and shed honest handshakes instead.
  const admission = new Admission({
    maxConnections: 100,
    maxConnectionsPerAddress: 2,
    maxPending: 100,
    cookieThreshold: 100,
    handshakeBurst: 2,
    handshakesPerSecond: 1,
  });
  const block = (host: number) => `2001:db8:1:2::${host.toString(16)}`;
  admission.connect(block(1), () => {});
  admission.connect(block(2), () => {});
  assert.equal(codeOf(() => admission.connect(block(3), () => {})), "TOO_MANY_CONNECTIONS");
  assert.equal(codeOf(() => admission.admitHandshake(block(4), 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("2001:db8:1:2:ffff:1:2:3", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake(block(5), 0)), "RATE_LIMITED");
  // The next /64 is another subscriber's.
  assert.equal(codeOf(() => admission.connect("2001:db8:1:3::1", () => {})), "none");
  assert.equal(codeOf(() => admission.admitHandshake("2001:db8:1:3::1", 0)), "none");
  // The operator's reset names any address of the block.
  admission.resetHandshakes(block(9));
  assert.equal(codeOf(() => admission.admitHandshake(block(1), 0)), "none");
});

Deno.test("addressBlock(): IPv4 as it is, IPv6 by its /64 in every spelling, IPv4-mapped as IPv4", () => {
  const cases: [string, string][] = [
    ["192.0.2.7", "192.0.2.7"],
    ["2001:db8:1:2::1", "2001:db8:1:2::/64"],
    ["2001:0DB8:0001:0002:0:0:0:ffff", "2001:db8:1:2::/64"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["::", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
    ["0:0:0:0:0:ffff:c000:207", "192.0.2.7"], // as a PROXY v2 header's address is written
    ["2001:db8:1:2:3:4:192.0.2.7", "2001:db8:1:2::/64"],
    ["not an address", "not an address"],
    ["1::2::3", "1::2::3"],
    ["1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9"],
  ];
  for (const [address, block] of cases) assert.equal(addressBlock(address), block, address);
});

/** A throttle over counts in memory, as a store without a database gives it. */
function throttleWith(options: LoginThrottleOptions, failures = new MemoryLoginFailures()) {
  return new LoginThrottle(failures, options);
}

/** The code `begin()` refuses with, or "none" after it reserved (the reservation released). */
async function refusal(throttle: LoginThrottle, who: LoginSubject, now = 0): Promise<string> {
  try {
    await (await throttle.begin(who, now)).released();
    return "none";
  } catch (error) {
    return (error as SecureChatError).code;
  }
}

Deno.test("LoginThrottle: delays double per failure of a certificate, lock out, reset on success", async () => {
  const throttle = throttleWith({
    baseDelayMs: 100,
    maxDelayMs: 350,
    lockoutFailures: 5,
    windowMs: 60_000,
  });
  const thief = { certificate: "c1", account: "alice" };
  const delays: number[] = [];
  for (let i = 0; i < 4; i++) {
    const attempt = await throttle.begin(thief, 0);
    delays.push(attempt.delayMs);
    await attempt.failed(0);
  }
  assert.deepEqual(delays, [0, 100, 200, 350]);
  // Another certificate of the account, or another account, is not slowed by these.
  for (
    const other of [{ certificate: "c2", account: "alice" }, { certificate: "c3", account: "bob" }]
  ) {
    const attempt = await throttle.begin(other, 0);
    assert.equal(attempt.delayMs, 0);
    await attempt.released();
  }
  await (await throttle.begin(thief, 0)).failed(0);
  assert.equal(await refusal(throttle, thief), "RATE_LIMITED");
  assert.equal((await throttle.begin(thief, 60_000)).delayMs, 0); // the window has passed
});

Deno.test("LoginThrottle: attempts are reserved before they are decided; success clears the certificate only", async () => {
  const throttle = throttleWith({
    baseDelayMs: 1,
    maxDelayMs: 1,
    lockoutFailures: 3,
    windowMs: 60_000,
  });
  const who = { certificate: "c1", account: "alice" };
  const pending = await Promise.all([0, 1, 2].map(() => throttle.begin(who, 0)));
  assert.equal(await refusal(throttle, who), "RATE_LIMITED", "three in flight");
  await pending[0].released(); // the database was down: not counted
  const again = await throttle.begin(who, 0);
  for (const attempt of [pending[1], pending[2], again]) await attempt.failed(0);
  assert.equal(await refusal(throttle, who), "RATE_LIMITED");
  // The account is now at its limit: a certificate with no failure is still let through...
  const c2 = { certificate: "c2", account: "alice" };
  const other = await throttle.begin(c2, 0);
  assert.equal(await refusal(throttle, c2), "RATE_LIMITED");
  await other.succeeded();
  // ...and after its success it is clean again, while the thief's certificate stays locked.
  assert.equal(await refusal(throttle, c2), "none");
  assert.equal(await refusal(throttle, who), "RATE_LIMITED");
  // Registrations (no account) count on the certificate alone.
  for (let i = 0; i < 3; i++) await (await throttle.begin({ certificate: "c9" }, 0)).failed(0);
  assert.equal(await refusal(throttle, { certificate: "c9" }), "RATE_LIMITED");
  assert.equal(await refusal(throttle, { certificate: "c8", account: "carol" }), "none");
});

Deno.test("LoginThrottle.unlock() clears the account and every certificate that claimed the user, on every node of the store", async () => {
  const options = { baseDelayMs: 1, maxDelayMs: 1, lockoutFailures: 2, windowMs: 60_000 };
  const store = new MemoryLoginFailures();
  const [node1, node2] = [throttleWith(options, store), throttleWith(options, store)];
  const mine = { certificate: "c1", user: "alice", account: "alice" };
  const bobs = { certificate: "c2", user: "bob", account: "bob" };
  // Failures decided on one node lock the certificate on the other.
  await (await node1.begin(mine, 0)).failed(0);
  await (await node2.begin(mine, 0)).failed(0);
  for (const who of [bobs, bobs]) await (await node1.begin(who, 0)).failed(0);
  assert.equal(await refusal(node2, mine), "RATE_LIMITED");
  assert.equal(await node2.unlock("alice"), 2, "the certificate's count and the account's");
  assert.equal(await refusal(node1, mine), "none", "unlocked on the other node too");
  assert.equal(await refusal(node1, bobs), "RATE_LIMITED", "bob is not forgiven");
  assert.equal(await node1.unlock("carol"), 0);
});

/**
 * A store that answers late, as a database does: a read returns the counts as they were
 * when it was asked, and a failure is written `writeMs` after it was asked for.
 */
class SlowFailures extends MemoryLoginFailures {
  constructor(readonly readMs: number, readonly writeMs: number) {
    super();
  }
  override async read(subjects: readonly string[]) {
    const snapshot = await super.read(subjects);
    await new Promise((resolve) => setTimeout(resolve, this.readMs));
    return snapshot;
  }
  override async fail(
    subjects: readonly string[],
    user: string | null,
    now: number,
    windowMs: number,
  ) {
    await new Promise((resolve) => setTimeout(resolve, this.writeMs));
    await super.fail(subjects, user, now, windowMs);
  }
}

Deno.test("LoginThrottle: a login checked while a failure is being written still counts that failure", async () => {
  // The last allowed guess fails; its failure takes 20 ms to reach the store. A guess that
  // arrives meanwhile, whose read takes 40 ms, must see it: without the per-subject lock it
  // read the store before the write and checked after the reservation ended, seeing nothing.
  const throttle = throttleWith(
    { baseDelayMs: 0, maxDelayMs: 0, lockoutFailures: 1, windowMs: 60_000 },
    new SlowFailures(40, 20),
  );
  const who = { certificate: "c1", account: "alice" };
  const first = await throttle.begin(who, 0);
  const [, second] = await Promise.all([first.failed(0), refusal(throttle, who)]);
  assert.equal(second, "RATE_LIMITED");
});
