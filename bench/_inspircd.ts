/**
 * InspIRCd 3 as the peer bench's reference chat server (issue 18): found on the
 * machine (Debian's `inspircd` package), started on a free loopback port with a
 * generated configuration in a temp dir, stopped at the end.
 *
 * The configuration is the strict one a careful operator would run:
 *  - TLS 1.3 only through ssl_gnutls, X25519 the only group, AES-128-GCM the only
 *    cipher (the GnuTLS priority string is strict: an unknown token is an error, not
 *    silently dropped);
 *  - a client certificate signed by the bench CA is required: GnuTLS asks for one and
 *    verifies it, and the connect class a user registers into needs
 *    `requiressl="trusted"`. InspIRCd 3 also checks classes at accept time, before the
 *    TLS handshake has produced a certificate, so a second class admits unregistered
 *    connections (`registered="no"`) and the check that counts happens at
 *    registration; a client without a trusted certificate is refused there;
 *  - no flood control and no fake lag (`fakelag="no"`, a command rate it never
 *    reaches), queues large enough for the bench, no DNS or ident lookups
 *    (`resolvehostnames="no"`, `useident="no"`, m_ident not loaded), no clone limits.
 */
import { lines } from "./_util.ts";
import type { IrcTls } from "./_irc_client.ts";
import type { TestPki } from "../testkit/pki.ts";

export { findInspircd, INSPIRCD_INSTALL_HINT } from "../testkit/inspircd.ts";

/** The GnuTLS priority string: TLS 1.3, X25519, AES-128-GCM, any signature scheme. */
export const GNUTLS_PRIORITY =
  "NONE:+VERS-TLS1.3:+AES-128-GCM:+AEAD:+GROUP-X25519:+SIGN-ALL:+CTYPE-X509:+COMP-NULL";

export interface InspircdFiles {
  port: number;
  certFile: string;
  keyFile: string;
  caFile: string;
  dir: string;
}

/** The server's TLS files InspIRCd is started with. */
export type TlsFiles = { certFile: string; keyFile: string; caFile: string };

/** InspIRCd's TLS files and its clients' credentials (user1's), from one test PKI. */
export async function ircTlsOf(pki: TestPki): Promise<{ files: TlsFiles; tls: IrcTls }> {
  const files: TlsFiles = {
    certFile: `${pki.dir}/server.pem`,
    keyFile: `${pki.dir}/server.key`,
    caFile: `${pki.dir}/ca.pem`,
  };
  const tls: IrcTls = {
    caCert: await Deno.readTextFile(files.caFile),
    cert: await Deno.readTextFile(`${pki.dir}/user1.pem`),
    key: await Deno.readTextFile(`${pki.dir}/user1.key`),
  };
  return { files, tls };
}

/** The generated inspircd.conf (XML format of InspIRCd 3). */
export function inspircdConfig(f: InspircdFiles): string {
  // Shared by both connect classes; the values switch limits off rather than tune them.
  const limits = [
    'maxchans="20" timeout="60" pingfreq="10m"',
    'hardsendq="64M" softsendq="16M" recvq="16M"',
    'fakelag="no" threshold="1000000000" commandrate="1000000000"',
    'localmax="1000000" globalmax="1000000" maxconnwarn="no" limit="1000000"',
    'resolvehostnames="no" useident="no"',
  ].join(" ");
  return `<config format="xml">
<server name="bench.invalid" description="securechat peer bench" network="Bench">
<admin name="bench" nick="bench" email="bench@example.invalid">
<module name="ssl_gnutls">
<module name="sslinfo">
<sslprofile name="bench" provider="gnutls"
  certfile="${f.certFile}" keyfile="${f.keyFile}" cafile="${f.caFile}"
  priority="${GNUTLS_PRIORITY}" strictpriority="yes" requestclientcert="yes" hash="sha256">
<bind address="127.0.0.1" port="${f.port}" type="clients" sslprofile="bench">
<connect name="unregistered" allow="127.0.0.1" registered="no" ${limits}>
<connect name="bench" allow="127.0.0.1" registered="yes" requiressl="trusted" ${limits}>
<cidr ipv4clone="32" ipv6clone="128">
<dns server="127.0.0.1" timeout="1">
<performance netbuffersize="65536" somaxconn="1024" softlimit="100000" clonesonconnect="no" quietbursts="yes">
<options defaultmodes="n">
<security allowcoreunload="no">
<pid file="${f.dir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="${f.dir}/ircd.log">
`;
}

/** A loopback port nobody listens on right now (InspIRCd cannot report a port 0 bind). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

export class Inspircd {
  private constructor(
    readonly child: Deno.ChildProcess,
    readonly port: number,
    readonly dir: string,
    readonly config: string,
  ) {}

  get pid(): number {
    return this.child.pid;
  }

  /** `InspIRCd-3.15.0-debian`, as `inspircd --version` prints it. */
  static async version(binary: string): Promise<string> {
    const out = await new Deno.Command(binary, { args: ["--version"], stdout: "piped" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  }

  /**
   * Starts InspIRCd with the generated configuration and waits until it listens.
   * @throws Error with the tail of its log when it does not start
   */
  static async start(
    binary: string,
    tls: TlsFiles,
  ): Promise<Inspircd> {
    const dir = await Deno.makeTempDir({ prefix: "sc-bench-inspircd-" });
    const port = freePort();
    const config = inspircdConfig({ ...tls, port, dir });
    await Deno.writeTextFile(`${dir}/inspircd.conf`, config);
    const args = ["--nofork", `--config=${dir}/inspircd.conf`];
    // InspIRCd refuses to run as root unless told; CI containers run as root.
    if (Deno.uid() === 0) args.push("--runasroot");
    const child = new Deno.Command(binary, {
      args,
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const server = new Inspircd(child, port, dir, config);
    // One reader per stream for the child's whole life, so it never blocks on a full
    // pipe; the last lines are kept for the error message.
    const said: string[] = [];
    let resolveReady!: (ok: boolean) => void;
    const ready = new Promise<boolean>((resolve) => resolveReady = resolve);
    const read = async (stream: ReadableStream<Uint8Array>) => {
      for await (const line of lines(stream)) {
        said.push(line);
        if (said.length > 20) said.shift();
        if (line.includes("InspIRCd is now running")) resolveReady(true);
      }
    };
    void Promise.all([read(child.stdout), read(child.stderr)]).catch(() => {})
      .finally(() => resolveReady(false));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const started = await Promise.race([
      ready,
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 15_000)),
    ]);
    clearTimeout(timer);
    if (!started) {
      const log = await Deno.readTextFile(`${dir}/ircd.log`).catch(() => "(no log)");
      await server.stop();
      throw new Error(
        `inspircd did not start:\n${said.join("\n")}\n${log.split("\n").slice(-20).join("\n")}`,
      );
    }
    return server;
  }

  /**
   * SIGKILL rather than SIGTERM: there is nothing to flush, and InspIRCd 3.15 may
   * dump core while unloading its modules on SIGTERM.
   */
  async stop(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.child.status;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
