/**
 * A real cluster for tests: a throwaway MariaDB and `nats-server -js`, N `serve` nodes sharing
 * them (each with a health port), and optionally haproxy in front, as docs/DEPLOY.md describes.
 */
import { type Haproxy, haproxyBinary, startHaproxy } from "./haproxy.ts";
import { type MariaDb, mysqlTestTarget, startMariaDb } from "../../testkit/mariadb.ts";
import { type NatsServer, natsServerBinary, startNats } from "../../testkit/nats.ts";
import { freePort } from "../../testkit/local_service.ts";
import { logIs, ServerProcess } from "../../testkit/server_process.ts";

export interface TestCluster {
  db: MariaDb;
  nats: NatsServer;
  nodes: ServerProcess[];
  healthPorts: number[];
  haproxy?: Haproxy;
  /** Starts node `i` again (after a kill), same name, health port and work dir. */
  restartNode(i: number): Promise<ServerProcess>;
  dispose(): Promise<void>;
}

/**
 * Why the cluster tests cannot run here, or undefined when they can (CI requires them:
 * optional_suites.ts).
 */
export function clusterUnavailable(): string | undefined {
  const missing = [
    mysqlTestTarget().kind === "local" ? undefined : "mariadbd",
    "path" in natsServerBinary() ? undefined : "nats-server",
    "path" in haproxyBinary() ? undefined : "haproxy",
  ].filter(Boolean);
  if (missing.length === 0) return undefined;
  return `needs ${missing.join(", ")} (apt-get install mariadb-server nats-server haproxy)`;
}

export async function startTestCluster(opts: {
  pkiDir: string;
  nodes: number;
  haproxy?: boolean;
  /** haproxy sends PROXY v2 headers and the nodes trust 127.0.0.1 for them (then every
   * connection to a node must come through haproxy). */
  proxyProtocol?: boolean;
  /** Extra `serve` flags for every node. */
  args?: string[];
  /**
   * Every node but the first follows a CRL file of its own (`ca.crl` in its work dir, a copy
   * of the PKI's at the cluster's start), so a CRL dropped beside the CA afterwards reaches
   * only node 1 by file and the others through NATS.
   */
  crlPerNode?: boolean;
}): Promise<TestCluster> {
  const db = await startMariaDb();
  const nats = await startNats().catch(async (error) => {
    await db.dispose();
    throw error;
  });
  const nodes: ServerProcess[] = [];
  const healthPorts: number[] = [];
  // Fixed ports, so a restarted node is where the balancer expects it.
  const chatPorts: number[] = [];
  const workDirs: string[] = [];
  let haproxy: Haproxy | undefined;
  // A node is up once it has joined the cluster and serves its health port (HEALTH follows
  // startCluster); if it died instead, the wait fails with its output.
  const startNode = async (i: number) => {
    const node = await startServe(i);
    await node.waitFor(logIs("HEALTH"), 30_000);
    return node;
  };
  const startServe = (i: number) =>
    ServerProcess.start({
      pkiDir: opts.pkiDir,
      workDir: workDirs[i],
      args: [
        "--port",
        String(chatPorts[i]),
        "--db",
        db.url,
        "--cluster",
        nats.url,
        "--node",
        `n${i + 1}`,
        "--health-port",
        String(healthPorts[i]),
        // Every test user comes from 127.0.0.1.
        "--max-per-address",
        "10000",
        "--handshake-rate",
        "1000",
        ...(opts.proxyProtocol ? ["--trusted-proxy", "127.0.0.1"] : []),
        ...(opts.crlPerNode && i > 0 ? ["--crl", `${workDirs[i]}/ca.crl`] : []),
        ...(opts.args ?? []),
      ],
    });
  const dispose = async () => {
    await haproxy?.dispose();
    await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
    await nats.dispose();
    await db.dispose();
    for (const dir of workDirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (let i = 0; i < opts.nodes; i++) {
      workDirs.push(await Deno.makeTempDir({ prefix: `securechat-node${i + 1}-` }));
      if (opts.crlPerNode && i > 0) {
        await Deno.copyFile(`${opts.pkiDir}/ca.crl`, `${workDirs[i]}/ca.crl`);
      }
      // A free port can be taken by a parallel test before the node binds it: then the node
      // gets new ones (only here, before the balancer knows its ports).
      for (let attempt = 1;; attempt++) {
        healthPorts[i] = freePort();
        chatPorts[i] = freePort();
        try {
          nodes.push(await startNode(i));
          break;
        } catch (error) {
          if (attempt === 3 || !/cannot listen/.test(String(error))) throw error;
        }
      }
    }
    if (opts.haproxy) {
      haproxy = await startHaproxy(
        nodes.map((n, i) => ({ name: `n${i + 1}`, port: n.port, healthPort: healthPorts[i] })),
        opts.proxyProtocol,
      );
    }
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    db,
    nats,
    nodes,
    healthPorts,
    get haproxy() {
      return haproxy;
    },
    restartNode: async (i) => {
      nodes[i] = await startNode(i);
      return nodes[i];
    },
    dispose,
  };
}
