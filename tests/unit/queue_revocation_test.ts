/**
 * Which stored records a recipient's revoked certificate takes with it (PROTOCOL §6.6): only
 * those no device under a valid certificate could open.
 */
import assert from "node:assert/strict";
import { isWrappedOnlyFor } from "../../lib/server/queue_revocation.ts";
import type { ClusterRelay } from "../../lib/server/cluster_record.ts";

/** A stored relay reduced to what the rule reads: the devices its wraps name. */
function wrappedFor(...devices: string[]): ClusterRelay {
  return {
    cert: "",
    record: {},
    e2e: {
      kind: "ratchet",
      from: "00000000000000ff",
      wraps: devices.map((device) => ({ device })),
    },
  } as unknown as ClusterRelay;
}

const RETIRED = new Set(["00000000000000a1", "00000000000000a2"]);

Deno.test("isWrappedOnlyFor() is true only when every wrap names a retired device", () => {
  assert.equal(isWrappedOnlyFor(wrappedFor("00000000000000a1"), RETIRED), true);
  assert.equal(isWrappedOnlyFor(wrappedFor("00000000000000a1", "00000000000000a2"), RETIRED), true);
  // A device under a certificate still valid can open it: it stays for that device.
  assert.equal(
    isWrappedOnlyFor(wrappedFor("00000000000000a1", "00000000000000b1"), RETIRED),
    false,
  );
  assert.equal(isWrappedOnlyFor(wrappedFor("00000000000000b1"), RETIRED), false);
});

Deno.test("isWrappedOnlyFor() keeps a relay that names no device (a content key, a lobby chain)", () => {
  const readable = { cert: "", record: {}, k: "" } as unknown as ClusterRelay;
  assert.equal(isWrappedOnlyFor(readable, RETIRED), false);
  const lobby = {
    cert: "",
    record: {},
    e2e: { kind: "sender", from: "00000000000000a1", id: 1, n: 0, w: "" },
  } as unknown as ClusterRelay;
  assert.equal(isWrappedOnlyFor(lobby, RETIRED), false);
});
