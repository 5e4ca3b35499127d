/**
 * The resumption ticket stores every node of a cluster shares, in NATS JetStream key-value
 * buckets (docs/DEPLOY.md §8): the ticket keys (one random key per period, created by whichever
 * node needs it first — `create` is atomic, so racing nodes agree) and the ids of used tickets
 * (`create` again: a second use of one ticket, on any node, finds the id taken).
 */
import type { KV, NatsConnection } from "nats";
import { randomBytes } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { isRevisionConflict } from "./kv.ts";
import {
  type KeyRing,
  kidAt,
  TICKET_KEY_PERIOD_MS,
  TICKET_LIFETIME_MS,
  type TicketStores,
  type UsedTickets,
} from "../resumption/ticket.ts";

export const TICKET_KEYS_BUCKET = "securechat_ticket_keys";
export const USED_TICKETS_BUCKET = "securechat_used_tickets";

/** @throws CLUSTER_UNAVAILABLE the buckets cannot be opened or created */
export async function clusterTicketStores(nc: NatsConnection): Promise<TicketStores> {
  try {
    const js = nc.jetstream();
    const keys = await js.views.kv(TICKET_KEYS_BUCKET, {
      history: 1,
      ttl: 3 * TICKET_KEY_PERIOD_MS,
    });
    const used = await js.views.kv(USED_TICKETS_BUCKET, { history: 1, ttl: TICKET_LIFETIME_MS });
    return { keys: new KvKeyRing(keys), used: new KvUsedTickets(used) };
  } catch (cause) {
    throw new SecureChatError("CLUSTER_UNAVAILABLE", "cannot open the ticket buckets", { cause });
  }
}

class KvKeyRing implements KeyRing {
  readonly #cache = new Map<number, Uint8Array>();
  constructor(readonly kv: KV) {}

  async current(now: number): Promise<{ kid: number; key: Uint8Array }> {
    const kid = kidAt(now);
    const known = await this.#read(kid);
    if (known) return { kid, key: known };
    try {
      await this.kv.create(String(kid), randomBytes(32));
    } catch {
      // another node created it first: use theirs
    }
    const key = await this.#read(kid);
    if (!key) throw new SecureChatError("CLUSTER_UNAVAILABLE", "no ticket key in the cluster");
    return { kid, key };
  }

  async get(kid: number, now: number): Promise<Uint8Array | undefined> {
    const current = kidAt(now);
    if (kid !== current && kid !== current - 1) return undefined;
    return await this.#read(kid);
  }

  async #read(kid: number): Promise<Uint8Array | undefined> {
    const cached = this.#cache.get(kid);
    if (cached) return cached;
    const entry = await this.kv.get(String(kid));
    if (!entry || entry.value.length !== 32) return undefined;
    const key = new Uint8Array(entry.value);
    this.#cache.set(kid, key);
    for (const old of this.#cache.keys()) if (old < kid - 1) this.#cache.delete(old);
    return key;
  }
}

class KvUsedTickets implements UsedTickets {
  constructor(readonly kv: KV) {}
  async claim(id: string): Promise<boolean> {
    try {
      await this.kv.create(id, new Uint8Array([1]));
      return true;
    } catch (error) {
      // The id is there, so the ticket was used. Anything else is NATS.
      if (isRevisionConflict(error)) return false;
      throw new SecureChatError("CLUSTER_UNAVAILABLE", "cannot record a used ticket", {
        cause: error,
      });
    }
  }
}
