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

Deno.test("Admission: per-address and total caps refuse with TOO_MANY_CONNECTIONS, and free on disconnect", () => {
  const admission = new Admission({
    maxConnections: 3,
    maxConnectionsPerAddress: 2,
    handshakeBurst: 1,
    handshakesPerSecond: 1,
  });
  admission.connect("a");
  admission.connect("a");
  assert.equal(codeOf(() => admission.connect("a")), "TOO_MANY_CONNECTIONS");
  admission.connect("b");
  assert.equal(codeOf(() => admission.connect("c")), "TOO_MANY_CONNECTIONS");
  admission.disconnect("a");
  assert.equal(codeOf(() => admission.connect("c")), "none");
  assert.equal(admission.open, 3);
});

Deno.test("Admission: handshakes per address are rate limited, other addresses unaffected", () => {
  const admission = new Admission({
    maxConnections: 10,
    maxConnectionsPerAddress: 10,
    handshakeBurst: 2,
    handshakesPerSecond: 1,
  });
  assert.equal(codeOf(() => admission.admitHandshake("a", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("a", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("a", 0)), "RATE_LIMITED");
  assert.equal(codeOf(() => admission.admitHandshake("b", 0)), "none");
  assert.equal(codeOf(() => admission.admitHandshake("a", 1000)), "none");
});

Deno.test("LoginThrottle: delays double per failure, per user or address, lock out, reset on success", () => {
  const throttle = new LoginThrottle({
    baseDelayMs: 100,
    maxDelayMs: 350,
    lockoutFailures: 5,
    windowMs: 60_000,
  });
  const keys = ["user:alice", "addr:1.2.3.4"];
  const delays: number[] = [];
  for (let i = 0; i < 4; i++) {
    delays.push(throttle.delayFor(keys, 0));
    throttle.failed(keys, 0);
  }
  assert.deepEqual(delays, [0, 100, 200, 350]);
  // Another user from the same address is slowed too; the same user from elsewhere as well.
  assert.equal(throttle.delayFor(["user:bob", "addr:1.2.3.4"], 0), 350);
  assert.equal(throttle.delayFor(["user:alice", "addr:5.6.7.8"], 0), 350);
  throttle.failed(keys, 0);
  assert.equal(codeOf(() => throttle.delayFor(keys, 0)), "RATE_LIMITED");
  assert.equal(throttle.delayFor(keys, 60_000), 0); // the window has passed
  throttle.failed(keys, 0);
  throttle.succeeded(keys);
  assert.equal(throttle.delayFor(keys, 0), 0);
});
