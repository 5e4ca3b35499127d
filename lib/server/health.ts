/**
 * `serve --health-port`: a plain HTTP endpoint for the load balancer's health check
 * (deploy/haproxy.cfg). `GET /health` answers 200 while the node takes logins (and in a
 * cluster is connected to NATS), 503 otherwise, so the balancer stops sending users to a
 * node that cannot serve them. It says nothing else: no names, no counts.
 */
import { SecureChatError } from "../errors.ts";

export interface HealthEndpoint {
  readonly port: number;
  close(): Promise<void>;
}

/** @throws IO_ERROR when the address cannot be bound */
export function serveHealth(
  hostname: string,
  port: number,
  healthy: () => boolean,
): HealthEndpoint {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, (request) => {
      if (new URL(request.url).pathname !== "/health") {
        return new Response("not found\n", { status: 404 });
      }
      return healthy()
        ? new Response("ok\n", { status: 200 })
        : new Response("unavailable\n", { status: 503 });
    });
  } catch (cause) {
    throw new SecureChatError(
      "IO_ERROR",
      `cannot listen on ${hostname}:${port} for health checks`,
      {
        cause,
      },
    );
  }
  return {
    port: server.addr.port,
    close: () => server.shutdown(),
  };
}
