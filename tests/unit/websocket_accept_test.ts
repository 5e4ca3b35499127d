import assert from "node:assert/strict";
import { acceptKey } from "../../lib/server/websocket_conn.ts";

Deno.test("web front: Sec-WebSocket-Accept is RFC 6455 §1.3's answer to its example key", () => {
  assert.equal(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});
