/**
 * `deno task demo`: everything a new user does, end to end, in a fresh directory:
 * a CA and certificates, a server on the embedded SQLite store, two users who
 * register and chat through the server, and every transcript verified offline.
 * Each step is the real CLI, run as a subprocess. It prints one line per step and a
 * summary; `--verbose` shows every command and its whole output.
 *
 * The certificates are RSA (the default), which the CLI signs through OpenSSL 3's libcrypto
 * (docs/DEPLOY.md §1). On a machine without it (a Node.js from nvm or nodesource links its own
 * OpenSSL statically, so "npx" alone brings none) serve refuses an RSA key: the demo then starts
 * it with `--allow-builtin-rsa` and says so in one line. `--without-ffi` runs the CLI without
 * `--allow-ffi`, to see that path on a machine that has libcrypto.
 *
 *   deno task demo [--verbose] [--without-ffi] [DIR]
 */
import { readStartTask } from "../testkit/start_task.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const OPTIONS = ["--verbose", "--without-ffi"];
const verbose = Deno.args.includes("--verbose");
const withoutFfi = Deno.args.includes("--without-ffi");
// The start task's flags: the demo runs the CLI as users do (testkit/start_task.ts).
const PERMISSIONS = (await readStartTask(new URL("../deno.json", import.meta.url).pathname))
  .filter((flag) => !(withoutFfi && flag.startsWith("--allow-ffi")));
const dir = Deno.args.find((a) => !OPTIONS.includes(a)) ??
  await Deno.makeTempDir({ prefix: "securechat-demo-" });
const decoder = new TextDecoder();

function command(args: string[], env: Record<string, string> = {}) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, MAIN, ...args],
    cwd: dir,
    // The demo's directory is its home: it never touches the user's own (issue 17 item 1).
    env: { SECURECHAT_HOME: dir, ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Prints `text` indented: everything with --verbose, else only when something failed. */
function detail(text: string, always = false): void {
  if ((verbose || always) && text) console.log(text.replace(/^/gm, "  "));
}

async function step(
  title: string,
  args: string[],
  input = "",
  env: Record<string, string> = {},
  summarised = false,
) {
  const shown = `securechat ${args.join(" ")}${
    input ? `   # stdin: ${JSON.stringify(input)}` : ""
  }`;
  if (verbose) console.log(`\n$ ${shown}`);
  const child = command(args, env).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await child.output();
  const text = (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trimEnd();
  detail(text, out.code !== 0);
  if (out.code !== 0) throw new Error(`${title} failed with exit status ${out.code}`);
  if (!verbose && !summarised) console.log(`  ok  ${title}`);
  return text;
}

/** A chat client fed lines over time, so the other user is there to hear them. */
async function chat(
  user: string,
  password: string,
  port: number,
  lines: string[],
  delayMs: number,
) {
  const child = command(["connect", "--user", user, "--port", String(port)], {
    SECURECHAT_PASSWORD: password,
  }).spawn();
  const writer = child.stdin.getWriter();
  try {
    for (const line of lines) {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      await writer.write(new TextEncoder().encode(line + "\n"));
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    await writer.close();
  } catch {
    // the client ended early: its output below says why
  }
  const out = await child.output();
  const screen = decoder.decode(out.stdout).trimEnd();
  if (verbose) console.log(`\n--- ${user}'s screen ---`);
  detail(`${screen}\n${decoder.decode(out.stderr).trimEnd()}`, out.code !== 0);
  if (out.code !== 0) throw new Error(`${user}'s session failed with exit status ${out.code}`);
  const heard = screen.split("\n").filter((l) => / \u2713 /.test(l)).length;
  if (!verbose) console.log(`  ok  ${user} chatted: ${heard} signed line(s) received and verified`);
}

console.log(`securechat demo in ${dir}`);
await step("ca init", ["ca", "init"]);
await step("server certificate", ["cert", "issue", "server", "--server"]);
await step("alice's certificate", ["cert", "issue", "alice"]);
await step("bob's certificate", ["cert", "issue", "bob"]);

interface Listening {
  server: Deno.ChildProcess;
  serverOut: ReadableStreamDefaultReader<string>;
  serverLog: string;
  port: number;
}

/** Starts `serve` in the background: its port once it listens, or what it said if it exited. */
async function startServer(args: string[]): Promise<Listening | { said: string }> {
  if (verbose) console.log(`\n$ securechat ${args.join(" ")}   # in the background`);
  const server = command(args).spawn();
  const serverOut = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let serverLog = "";
  for (;;) {
    const { value, done } = await serverOut.read();
    if (done) {
      const said = serverLog + await new Response(server.stderr).text();
      await server.status;
      return { said: said.trimEnd() };
    }
    serverLog += value;
    const port = Number(/LISTEN detail=[^:\s]+:(\d+)/.exec(serverLog)?.[1] ?? 0);
    if (port) return { server, serverOut, serverLog, port };
  }
}

const serveArgs = ["serve", "--port", "0", "--console"];
let started = await startServer(serveArgs);
// serve's refusal of Deno's built-in RSA (commands/serve.ts): its reason, for the one line below.
const builtinRsa = "said" in started
  ? /RSA signing would use Deno's built-in \([^)]*\); (.*)/.exec(started.said)
  : null;
if (builtinRsa) {
  console.log(
    `  note  this machine's CLI cannot sign RSA through OpenSSL 3 (${builtinRsa[1]}): the ` +
      "demo's server runs with --allow-builtin-rsa, Deno's own RSA (~5x slower, not constant " +
      "time). For a real server install libssl3 (docs/DEPLOY.md §1).",
  );
  started = await startServer([...serveArgs, "--allow-builtin-rsa"]);
}
if ("said" in started) {
  detail(started.said, true);
  throw new Error("the server exited before listening");
}
const { server, serverOut, port } = started;
let serverLog = started.serverLog;
const drainServer = (async () => {
  for (let r = await serverOut.read(); !r.done; r = await serverOut.read()) serverLog += r.value;
})();
const portArgs = ["--port", String(port)];

const passwords = { alice: "alice-demo-password", bob: "bob-demo-password" };
for (const user of ["alice", "bob"] as const) {
  await step(
    `register ${user}`,
    [
      "connect",
      "--user",
      user,
      "--register",
      "--email",
      `${user}@example.com`,
      ...portArgs,
    ],
    "",
    { SECURECHAT_PASSWORD: passwords[user] },
  );
}

const operator = server.stdin.getWriter();
const bob = chat("bob", passwords.bob, port, ["hi alice, bob here", "/who"], 1200);
await new Promise((resolve) => setTimeout(resolve, 300));
const alice = chat(
  "alice",
  passwords.alice,
  port,
  ["hello bob!", "/msg bob this one is just for you"],
  600,
);
setTimeout(
  () => operator.write(new TextEncoder().encode("welcome both, from the operator\n")),
  1200,
);
await Promise.all([bob, alice]);

server.kill("SIGTERM");
await operator.close().catch(() => {});
await drainServer;
await server.status;
if (verbose) console.log("\n--- server log ---");
detail(serverLog.trimEnd());
if (!verbose) {
  const events = serverLog.trimEnd().split("\n").length;
  console.log(`  ok  server: ${events} log lines, stopped with receipts for every session`);
}

const logs: string[] = [];
for await (const entry of Deno.readDir(`${dir}/transcripts`)) {
  if (entry.name.endsWith(".log")) logs.push(entry.name);
}
for (const name of logs.sort()) {
  await step(
    `verify ${name}`,
    ["verify", `transcripts/${name}`, "--ca", "certs/ca.pem"],
    "",
    {},
    true,
  );
}
if (!verbose) console.log(`  ok  verify: all ${logs.length} transcripts (client and server side)`);
console.log(`\ndemo complete: ${logs.length} transcripts verified; files are in ${dir}`);
if (!verbose) console.log("every command and its output: deno task demo --verbose");
