/**
 * An end-to-end device that has published its keys, for the unit tests of lib/e2e/client.ts that
 * hand a device list to another device's `onKeys` without a server (PROTOCOL §12.6).
 */
import { toBase64 } from "../../lib/bytes.ts";
import { E2eClient, MemoryStorage } from "../../lib/e2e/client.ts";
import type { Identity } from "../../lib/handshake/common.ts";
import type { ListedDevice } from "../../lib/message/record.ts";
import type { TestPki } from "../../testkit/pki.ts";
import { SilentServer } from "./silent_server.ts";

/**
 * A fresh device of `user` (memory storage) under the certificate `pki` holds for it now, made to
 * publish its keys, and what the key directory would list for it from that publish: its
 * certificate, its bundle and the first one-time prekey it published (not marked `lobby`).
 */
export async function publishedDevice(
  pki: TestPki,
  user: string,
): Promise<{ e2e: E2eClient; identity: Identity; listed: ListedDevice }> {
  const identity = await pki.identity(user);
  const e2e = await E2eClient.open(new MemoryStorage(), {
    user,
    certDer: identity.certDer,
    signingKey: identity.signingKey,
  }, pki.trust);
  const directory = new SilentServer();
  await e2e.publish(directory);
  const published = directory.sent[0];
  if (published?.kind !== "keys_publish" || published.bundle === undefined) {
    throw new Error(`${user}'s device sent no keys_publish with a bundle first`);
  }
  const listed = {
    device: published.device,
    cert: toBase64(identity.certDer),
    bundle: published.bundle,
    opk: published.opks[0],
  };
  return { e2e, identity, listed };
}
