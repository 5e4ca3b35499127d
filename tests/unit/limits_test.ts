/** Admission limits and login slow-down (lib/server/limits.ts, PROTOCOL §8.2). */
import assert from "node:assert/strict";
import { SecureChatError } from "../../lib/errors.ts";
import { Admission, LoginThrottle, TokenBucket } from "../../lib/server/limits.ts";

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

Deno.test("LoginThrottle: delays double per failure of a certificate, lock out, reset on success", () => {
  const throttle = new LoginThrottle({
    baseDelayMs: 100,
    maxDelayMs: 350,
    lockoutFailures: 5,
    windowMs: 60_000,
  });
  const thief = { certificate: "c1", account: "alice" };
  const delays: number[] = [];
  for (let i = 0; i < 4; i++) {
    const attempt = throttle.begin(thief, 0);
    delays.push(attempt.delayMs);
    attempt.failed(0);
  }
  assert.deepEqual(delays, [0, 100, 200, 350]);
  // Another certificate of the account, or another account, is not slowed by these.
  for (
    const other of [{ certificate: "c2", account: "alice" }, { certificate: "c3", account: "bob" }]
  ) {
    const attempt = throttle.begin(other, 0);
    assert.equal(attempt.delayMs, 0);
    attempt.released();
  }
  throttle.begin(thief, 0).failed(0);
  assert.equal(codeOf(() => throttle.begin(thief, 0)), "RATE_LIMITED");
  assert.equal(throttle.begin(thief, 60_000).delayMs, 0); // the window has passed
});

Deno.test("LoginThrottle: attempts are reserved before they are decided; success clears the certificate only", () => {
  const throttle = new LoginThrottle({
    baseDelayMs: 1,
    maxDelayMs: 1,
    lockoutFailures: 3,
    windowMs: 60_000,
  });
  const who = { certificate: "c1", account: "alice" };
  const pending = [0, 1, 2].map(() => throttle.begin(who, 0));
  assert.equal(codeOf(() => throttle.begin(who, 0)), "RATE_LIMITED", "three in flight");
  pending[0].released(); // the database was down: not counted
  const again = throttle.begin(who, 0);
  for (const attempt of [pending[1], pending[2], again]) attempt.failed(0);
  assert.equal(codeOf(() => throttle.begin(who, 0)), "RATE_LIMITED");
  // The account is now at its limit: a certificate with no failure is still let through...
  const other = throttle.begin({ certificate: "c2", account: "alice" }, 0);
  assert.equal(
    codeOf(() => throttle.begin({ certificate: "c2", account: "alice" }, 0)),
    "RATE_LIMITED",
  );
  other.succeeded();
  // ...and after its success it is clean again, while the thief's certificate stays locked.
  assert.equal(codeOf(() => throttle.begin({ certificate: "c2", account: "alice" }, 0)), "none");
  assert.equal(codeOf(() => throttle.begin(who, 0)), "RATE_LIMITED");
  // Registrations (no account) count on the certificate alone.
  for (let i = 0; i < 3; i++) throttle.begin({ certificate: "c9" }, 0).failed(0);
  assert.equal(codeOf(() => throttle.begin({ certificate: "c9" }, 0)), "RATE_LIMITED");
  assert.equal(codeOf(() => throttle.begin({ certificate: "c8", account: "carol" }, 0)), "none");
});

Deno.test("LoginThrottle.unlock() clears the account and every certificate that claimed the user", () => {
  const throttle = new LoginThrottle({
    baseDelayMs: 1,
    maxDelayMs: 1,
    lockoutFailures: 2,
    windowMs: 60_000,
  });
  const mine = { certificate: "c1", user: "alice", account: "alice" };
  const bobs = { certificate: "c2", user: "bob", account: "bob" };
  for (const who of [mine, mine, bobs, bobs]) throttle.begin(who, 0).failed(0);
  const shared = throttle.unlock("alice");
  assert.equal(codeOf(() => throttle.begin(mine, 0).released()), "none");
  assert.equal(codeOf(() => throttle.begin(bobs, 0)), "RATE_LIMITED", "bob is not forgiven");
  // Another node applies the same unlock from what this one shares.
  const other = new LoginThrottle(throttle.options);
  const failure = throttle.begin(mine, 0);
  failure.released();
  other.failedElsewhere(failure.keys, 0);
  other.failedElsewhere(failure.keys, 0);
  assert.equal(codeOf(() => other.begin(mine, 0)), "RATE_LIMITED");
  other.succeededElsewhere(shared);
  assert.equal(codeOf(() => other.begin(mine, 0)), "none", "unlocked on the other node too");
});
