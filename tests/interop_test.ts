/**
 * Clean-room interoperability: tests/interop/client.py, an independent Python client written from
 * docs/PROTOCOL.md and docs/TRANSCRIPT.md alone, chats through a real `securechat serve` with a
 * real `securechat connect` user in the lobby. Both sides must verify each other's authors and
 * receipts, and `securechat verify` must accept the server's transcript of the Python session.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { runCli, spawnCli } from "../testkit/cli.ts";
import { skipUnless } from "./helpers/optional_suites.ts";

const PYTHON = "/usr/bin/python3";
const CLIENT_PY = new URL("./interop/client.py", import.meta.url).pathname;

function pythonHasCryptography(): boolean {
  try {
    const out = new Deno.Command(PYTHON, {
      args: ["-c", "import cryptography"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return out.success;
  } catch {
    return false;
  }
}

const skipInterop = skipUnless(
  "interop",
  pythonHasCryptography()
    ? undefined
    : `${PYTHON} with the 'cryptography' package is not available`,
  "the clean-room Python interop client",
);

/** Collects a child's output line by line, so a test can wait for a line. */
class LineCollector {
  lines: string[] = [];
  done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>, private echo?: string) {
    this.done = this.pump(stream);
  }
  private async pump(stream: ReadableStream<Uint8Array>) {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        this.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    }
    if (buf) this.push(buf);
  }
  private push(line: string) {
    this.lines.push(line);
    if (this.echo && Deno.env.get("INTEROP_VERBOSE")) console.log(`[${this.echo}] ${line}`);
  }
  text(): string {
    return this.lines.join("\n");
  }
  async waitFor(pred: (line: string) => boolean, what: string, ms = 15000): Promise<string> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const hit = this.lines.find(pred);
      if (hit !== undefined) return hit;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`timed out waiting for ${what}; got:\n${this.text()}`);
  }
}

interface Proc {
  child: Deno.ChildProcess;
  out: LineCollector;
  err: LineCollector;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  send(line: string): Promise<void>;
}

function wrap(child: Deno.ChildProcess, name: string): Proc {
  const stdin = child.stdin.getWriter();
  const enc = new TextEncoder();
  return {
    child,
    out: new LineCollector(child.stdout, name),
    err: new LineCollector(child.stderr, `${name} err`),
    stdin,
    send: (line: string) => stdin.write(enc.encode(line + "\n")),
  };
}

async function finish(p: Proc, ms = 15000): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    p.child.status,
    new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
  ]);
  clearTimeout(timer);
  if (status === null) {
    try {
      p.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await p.child.status;
    await Promise.all([p.out.done, p.err.done]);
    throw new Error(`process did not exit in ${ms} ms:\n${p.out.text()}\n${p.err.text()}`);
  }
  await Promise.all([p.out.done, p.err.done]);
  return status.code;
}

async function closeStdin(p: Proc) {
  try {
    await p.stdin.close();
  } catch { /* the process may already have closed it */ }
}

const CASES = [
  { keyType: "ed25519", group: "x25519" },
  { keyType: "rsa2048", group: "p256" },
] as const;

for (const { keyType, group } of CASES) {
  Deno.test({
    name: `interop: clean-room Python client ↔ securechat serve/connect (${keyType}, ${group})`,
    ignore: skipInterop,
    sanitizeResources: true,
    sanitizeOps: true,
    async fn() {
      const tmp = await Deno.makeTempDir({ prefix: "securechat-interop-" });
      const certs = `${tmp}/certs`;
      await Deno.mkdir(certs);
      const procs: Proc[] = [];
      let server: Proc | undefined;
      try {
        await makePki(["alice", "bob"], keyType, certs);
        const ca = `${certs}/ca.pem`;
        // --key-update 1: the server updates its chat secret after one second (PROTOCOL §4.4)
        server = wrap(
          spawnCli([
            "serve",
            "--port",
            "0",
            "--log-format",
            "json",
            "--key-update",
            "1",
            "--db",
            `sqlite:${tmp}/t.db`,
            "--transcripts",
            `${tmp}/tr`,
            "--ca",
            ca,
            "--cert",
            `${certs}/server.pem`,
            "--key",
            `${certs}/server.key`,
          ]),
          "server",
        );
        const listen = await server.out.waitFor((l) => l.includes('"LISTEN"'), "LISTEN");
        const port = Number(String(JSON.parse(listen).detail).split(":").pop());
        assert.ok(port > 0, listen);

        // The Python client registers alice; it sends a key_update after every own message.
        const py = wrap(
          new Deno.Command(PYTHON, {
            args: [
              CLIENT_PY,
              "--host",
              "127.0.0.1",
              "--port",
              String(port),
              "--ca",
              ca,
              "--cert",
              `${certs}/alice.pem`,
              "--key",
              `${certs}/alice.key`,
              "--user",
              "alice",
              "--password-env",
              "INTEROP_PW",
              "--register",
              "alice@example.com",
              "--server-name",
              "localhost",
              "--group",
              group,
              "--key-update-every",
              "1",
            ],
            env: { INTEROP_PW: "alice-interop-password" },
            stdin: "piped",
            stdout: "piped",
            stderr: "piped",
          }).spawn(),
          "python",
        );
        procs.push(py);
        const session = await py.out.waitFor((l) => l.startsWith("SESSION "), "python SESSION");
        const sid = session.split(" ")[1];
        assert.match(sid, /^[0-9a-f]{32}$/);
        assert.match(session, /registered=true/);

        // A real securechat user in the lobby at the same time.
        const bob = wrap(
          spawnCli([
            "connect",
            "--user",
            "bob",
            "--register",
            "--email",
            "bob@example.com",
            "--port",
            String(port),
            "--ca",
            ca,
            "--cert",
            `${certs}/bob.pem`,
            "--key",
            `${certs}/bob.key`,
            "--transcripts",
            `${tmp}/bobtr`,
          ], { env: { SECURECHAT_PASSWORD: "bob-interop-password" } }),
          "bob",
        );
        procs.push(bob);
        await bob.out.waitFor((l) => l.includes("welcome bob"), "bob welcome");
        await py.out.waitFor((l) => l === "NOTICE: bob joined", "python sees bob join");

        // Python → bob, shown with bob's ✓ (author signature verified by our client).
        await py.send(`hello from python ${keyType}`);
        await bob.out.waitFor(
          (l) => /alice ✓ hello from python/.test(l) && l.includes(keyType),
          "bob shows alice's line with ✓",
        );
        await py.send("second python line, after a key update");
        await bob.out.waitFor(
          (l) => l.includes("alice ✓ second python line"),
          "bob shows alice's 2nd line",
        );

        // bob → Python, with the author verified by Python; across a server key update.
        await bob.send(`hello from deno bob ${keyType}`);
        await py.out.waitFor(
          (l) => l === `bob: hello from deno bob ${keyType}`,
          "python shows bob's line",
        );
        await new Promise((r) => setTimeout(r, 1200));
        await bob.send("bob again after a second");
        await py.out.waitFor((l) => l === "bob: bob again after a second", "bob's 2nd line");
        assert.ok(
          py.out.lines.includes("KEY_UPDATE s2c"),
          `the server should have updated its key (--key-update 1):\n${py.out.text()}`,
        );

        // Close both; each side must get and check the other's receipt.
        await closeStdin(bob);
        assert.equal(await finish(bob), 0, `bob failed:\n${bob.out.text()}\n${bob.err.text()}`);
        assert.match(bob.err.text(), /server's receipt:/);
        await py.out.waitFor((l) => l === "NOTICE: bob left", "python sees bob leave");
        await closeStdin(py);
        assert.equal(await finish(py), 0, `python failed:\n${py.out.text()}\n${py.err.text()}`);
        const receiptLine = py.out.lines.find((l) => l.startsWith("RECEIPT OK "));
        assert.ok(receiptLine, py.out.text());
        const pyHash = receiptLine.split(" ")[2];
        assert.match(pyHash, /^[0-9a-f]{64}$/);
        assert.ok(!py.out.lines.some((l) => l.startsWith("ERROR")), py.out.text());
        assert.equal(py.err.text(), "", "python printed diagnostics (a rejected message?)");

        // The server's transcript of the Python session: both receipts valid.
        const base = [...Deno.readDirSync(`${tmp}/tr`)]
          .map((e) => e.name)
          .find((n) => n.endsWith(`-${sid}-server.log`));
        assert.ok(base, `no server transcript for ${sid}`);
        const log = `${tmp}/tr/${base}`;
        const serverReceipt = JSON.parse(
          await Deno.readTextFile(log.replace(/\.log$/, ".receipt.json")),
        );
        const peerReceipt = JSON.parse(
          await Deno.readTextFile(log.replace(/\.log$/, ".peer-receipt.json")),
        );
        assert.equal(serverReceipt.transcript_sha256, pyHash, "server and Python hashes differ");
        assert.equal(peerReceipt.peer, "client");
        assert.equal(peerReceipt.transcript_sha256, pyHash);
        const v = await runCli(["verify", "--ca", ca, log]);
        assert.equal(v.code, 0, `verify failed:\n${v.stdout}\n${v.stderr}`);
        const validReceipts = v.stdout.split("\n").filter((l) =>
          l.startsWith("receipt") && l.includes("VALID")
        );
        assert.equal(validReceipts.length, 2, v.stdout);
        assert.match(v.stdout, /bob .*relayed message/);
        // c2s: 2 texts + 2 key_updates from Python
        assert.match(v.stdout, /c2s 4 /);

        // bob's own transcript carries Python-signed author records; the project verifier
        // accepts them.
        const bobLog = [...Deno.readDirSync(`${tmp}/bobtr`)].map((e) => e.name).find((n) =>
          n.endsWith("-client.log")
        );
        assert.ok(bobLog);
        const vb = await runCli(["verify", "--ca", ca, `${tmp}/bobtr/${bobLog}`]);
        assert.equal(vb.code, 0, `verify (bob) failed:\n${vb.stdout}\n${vb.stderr}`);
        assert.match(vb.stdout, /alice .*2 relayed message/);
      } finally {
        for (const p of procs) {
          await closeStdin(p);
          try {
            p.child.kill("SIGKILL");
          } catch { /* exited */ }
          await p.child.status;
          await Promise.all([p.out.done, p.err.done]);
        }
        if (server) {
          await closeStdin(server);
          try {
            server.child.kill("SIGTERM");
          } catch { /* exited */ }
          await server.child.status;
          await Promise.all([server.out.done, server.err.done]);
        }
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });
}
