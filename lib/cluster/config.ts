/**
 * Which cluster a `serve` node joins: `--cluster` URLs (repeatable) and `--node`, else the
 * SECURECHAT_CLUSTER (comma-separated) and SECURECHAT_NODE keys from the environment or `.env`.
 */
import { readEnvKeys } from "../env.ts";
import { SecureChatError } from "../errors.ts";
import { NODE_NAME_RE } from "./messages.ts";

export const CLUSTER_ENV_KEYS = ["SECURECHAT_CLUSTER", "SECURECHAT_NODE"] as const;

export interface ClusterConfig {
  servers: string[];
  node: string;
}

/**
 * @returns undefined for a single server (no cluster URL anywhere)
 * @throws USAGE a URL that is not nats://host:port, a missing or malformed node name
 */
export function resolveClusterConfig(
  flags: { cluster?: string[]; node?: string },
  env: Record<string, string | undefined> = readEnvKeys(Deno.cwd(), CLUSTER_ENV_KEYS),
): ClusterConfig | undefined {
  const servers = flags.cluster?.length
    ? flags.cluster
    : (env.SECURECHAT_CLUSTER ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const node = flags.node ?? env.SECURECHAT_NODE;
  if (servers.length === 0) {
    if (flags.node !== undefined) throw usage("--node only makes sense with --cluster");
    return undefined;
  }
  for (const server of servers) {
    let url: URL | undefined;
    try {
      url = new URL(server);
    } catch {
      // reported below
    }
    if (!url || url.protocol !== "nats:" || !url.hostname) {
      throw usage("--cluster takes NATS URLs: nats://host:4222 (the URL is not echoed)");
    }
  }
  if (node === undefined) throw usage("--cluster needs --node NAME, unique in the cluster");
  if (!NODE_NAME_RE.test(node)) {
    throw usage("--node must be 1 to 32 characters of A-Z a-z 0-9 _ -");
  }
  return { servers, node };
}

function usage(message: string): SecureChatError {
  return new SecureChatError("USAGE", message, {
    hint: "e.g. --cluster nats://127.0.0.1:4222 --node n1 --db mysql://user:pass@host/db",
  });
}
