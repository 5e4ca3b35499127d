/**
 * A throwaway haproxy in TCP mode in front of `serve` nodes, with the same shape as
 * deploy/haproxy.cfg: round robin, an HTTP health check against each node's --health-port,
 * a failed connect retried on another node.
 */
import { join } from "node:path";
import { findExecutable, freePort, stopChild, waitForPort } from "../../testkit/local_service.ts";

export interface HaproxyBackend {
  name: string;
  /** The node's chat port. */
  port: number;
  /** The node's `serve --health-port`. */
  healthPort: number;
}

export interface Haproxy {
  /** The port clients dial. */
  readonly port: number;
  dispose(): Promise<void>;
}

/** The haproxy binary, or why the tests that need one cannot run. */
export function haproxyBinary(): { path: string } | { reason: string } {
  const path = findExecutable("haproxy");
  return path ? { path } : { reason: "no haproxy on PATH or in /usr/sbin (apt haproxy)" };
}

/** The configuration the tests run: deploy/haproxy.cfg with loopback addresses. */
export function haproxyConfig(
  port: number,
  backends: readonly HaproxyBackend[],
  proxyProtocol = false,
): string {
  const send = proxyProtocol ? " send-proxy-v2" : "";
  return `global
  maxconn 4096

defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  retries 3
  option redispatch

frontend securechat
  bind 127.0.0.1:${port}
  default_backend nodes

backend nodes
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
  timeout check 2s
  default-server inter 1s fastinter 250ms fall 3 rise 2
${
    backends.map((b) => `  server ${b.name} 127.0.0.1:${b.port} check port ${b.healthPort}${send}`)
      .join("\n")
  }
`;
}

/** Starts haproxy and waits until its frontend listens; `proxyProtocol` adds send-proxy-v2. */
export async function startHaproxy(
  backends: readonly HaproxyBackend[],
  proxyProtocol = false,
): Promise<Haproxy> {
  const binary = haproxyBinary();
  if (!("path" in binary)) throw new Error(binary.reason);
  const dir = await Deno.makeTempDir({ prefix: "securechat-haproxy-" });
  const port = freePort();
  const config = join(dir, "haproxy.cfg");
  await Deno.writeTextFile(config, haproxyConfig(port, backends, proxyProtocol));
  // -db: stay in the foreground, so the child is haproxy itself and SIGTERM stops it.
  const child = new Deno.Command(binary.path, {
    args: ["-db", "-f", config],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeTo(
    (await Deno.open(join(dir, "haproxy.err"), { write: true, create: true })).writable,
  ).catch(() => {});
  try {
    await waitForPort(port, "haproxy", join(dir, "haproxy.err"));
  } catch (error) {
    await stopChild(child);
    throw error;
  }
  return {
    port,
    dispose: async () => {
      await stopChild(child);
      await stderr;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
