/**
 * What a newly adopted CRL removes from the key directory (PROTOCOL §12.6) and the offline queue
 * (§6.6), on every node that adopts it (the second finds nothing), without waiting for a
 * recipient's next login:
 *
 * - every device whose bundle was last published under a newly revoked certificate, with its
 *   one-time prekeys: revoking a certificate retires the devices it certified (SECURITY.md
 *   "Devices"), so no asker is handed their keys again (a sender whose CRL is older would wrap
 *   for a key a thief may hold), and they no longer count toward a user's MAX_DEVICES;
 *
 * - every record **signed** under a newly revoked certificate, for every recipient: no recipient
 *   would take one (§6.4 step 2), and a revoked author's records, sender keys among them, should
 *   not wait out the queue's age limit for recipients who may not log in for weeks;
 * - every record waiting **for** a user that is wrapped only for devices whose keys a newly
 *   revoked certificate signed (§12.2): revoking a certificate retires the devices it certified
 *   (SECURITY.md "Devices"; senders refuse their keys from then on, §12.6), so such a record
 *   waits for keys no login can be trusted to hold — a stolen laptop's, typically — and keeps
 *   a place in the user's queue that their new device needs. A record also wrapped for a device
 *   under a certificate still valid stays for that device.
 *
 * Delivery still drops a revoked author's records this misses (stored meanwhile, or before
 * serials were kept). Never throws: every outcome is a log line.
 */
import { codeOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { UserStore } from "../store/user_store.ts";
import type { MessageQueue } from "../store/message_queue.ts";
import type { Retirement } from "../store/key_directory.ts";
import { type ClusterRelay, decodeStoredRelay } from "./cluster_record.ts";

/** Queue rows read per page while looking for records wrapped for retired devices. */
const PAGE = 500;
/** What a key directory failure leaves, for its log line. */
const NOT_REMOVED = "devices of revoked certificates not removed (each goes at its next fetch " +
  "or publish), nor the offline records for them (they expire)";

export async function retireRevoked(
  store: UserStore,
  serials: ReadonlySet<string>,
  log: Logger,
): Promise<void> {
  const queue = store.queue;
  if (queue) await dropSignedUnder(queue, serials, log);
  if (store.keys) {
    let retirement: Retirement;
    try {
      retirement = await store.keys.retireCertifiedBy(serials);
    } catch (error) {
      log(codeOf(error), { detail: `key directory: ${NOT_REMOVED}: ${(error as Error).message}` });
      return;
    }
    const { removed, failure } = retirement;
    if (failure !== undefined) {
      log(codeOf(failure), {
        detail: `key directory: some ${NOT_REMOVED}: ${(failure as Error).message}`,
      });
    }
    for (const [user, devices] of removed) {
      log("REVOKED", {
        user,
        detail: `key directory: ${user}'s device(s) ${
          [...devices].join(", ")
        }, certified by a revoked certificate, removed`,
      });
      if (queue) await dropWrappedOnlyFor(queue, user, devices, log);
    }
  }
}

async function dropSignedUnder(
  queue: MessageQueue,
  serials: ReadonlySet<string>,
  log: Logger,
): Promise<void> {
  let deleted: Map<string, number>;
  try {
    deleted = await queue.removeSignedUnder([...serials]);
  } catch (error) {
    log(codeOf(error), {
      detail: `offline queue: records under revoked certificates not deleted now (delivery ` +
        `drops them): ${(error as Error).message}`,
    });
    return;
  }
  for (const [author, count] of deleted) {
    log("REVOKED", {
      user: author,
      detail: `offline queue: ${count} record(s) from ${author}, whose certificate is revoked, ` +
        "deleted undelivered",
    });
  }
}

async function dropWrappedOnlyFor(
  queue: MessageQueue,
  user: string,
  retired: ReadonlySet<string>,
  log: Logger,
): Promise<void> {
  const doomed: number[] = [];
  try {
    for (let after = 0;;) {
      const page = await queue.pending(user, PAGE, after);
      for (const row of page) {
        after = row.id;
        let relay: ClusterRelay;
        try {
          relay = decodeStoredRelay(row.item);
        } catch {
          continue; // Not ours to judge (a row this build did not write): it expires unread.
        }
        if (isWrappedOnlyFor(relay, retired)) doomed.push(row.id);
      }
      if (page.length < PAGE) break;
    }
    await queue.remove(user, doomed);
  } catch (error) {
    log(codeOf(error), {
      user,
      detail: `offline queue: records for ${user}'s devices of a revoked certificate not ` +
        `deleted (they expire): ${(error as Error).message}`,
    });
    return;
  }
  if (doomed.length > 0) {
    log("REVOKED", {
      user,
      detail: `offline queue: ${doomed.length} record(s) for ${user}, wrapped only for devices ` +
        `of a revoked certificate (${[...retired].join(", ")}), deleted undelivered`,
    });
  }
}

/**
 * Whether every device a stored relay is wrapped for is one of `devices`. A relay without
 * per-device wraps (a content key `k`, which the queue refuses to store) names no device and
 * stays.
 */
export function isWrappedOnlyFor(relay: ClusterRelay, devices: ReadonlySet<string>): boolean {
  if (!("e2e" in relay) || relay.e2e.kind !== "ratchet") return false;
  return relay.e2e.wraps.every((wrap) => devices.has(wrap.device));
}
