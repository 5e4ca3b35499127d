/**
 * `deno task demo`: everything a new user does, end to end, in a fresh directory:
 * a CA and certificates, a server on the embedded SQLite store, two users who
 * register and chat through the server, and every transcript verified offline.
 * Each step is the real CLI, run as a subprocess, and printed before it runs.
 */
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env=SECURECHAT_PASSWORD,SECURECHAT_CLUSTER,SECURECHAT_NODE,DB_HOST,DB_PORT,DB_USER,DB_PASSWORD,DB_NAME",
];
const dir = Deno.args[0] ?? await Deno.makeTempDir({ prefix: "securechat-demo-" });
const decoder = new TextDecoder();

function command(args: string[], env: Record<string, string> = {}) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, MAIN, ...args],
    cwd: dir,
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
}

async function step(title: string, args: string[], input = "", env: Record<string, string> = {}) {
  console.log(
    `\n$ securechat ${args.join(" ")}${input ? `   # stdin: ${JSON.stringify(input)}` : ""}`,
  );
  const child = command(args, env).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await child.output();
  const text = (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trimEnd();
  if (text) console.log(text.replace(/^/gm, "  "));
  if (out.code !== 0) throw new Error(`${title} failed with exit status ${out.code}`);
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
  console.log(`\n--- ${user}'s screen ---`);
  console.log(
    (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trimEnd().replace(/^/gm, "  "),
  );
  if (out.code !== 0) throw new Error(`${user}'s session failed with exit status ${out.code}`);
}

console.log(`securechat demo in ${dir}`);
await step("ca init", ["ca", "init"]);
await step("server certificate", ["cert", "issue", "server", "--server"]);
await step("alice's certificate", ["cert", "issue", "alice"]);
await step("bob's certificate", ["cert", "issue", "bob"]);

console.log("\n$ securechat serve --port 0 --console   # in the background");
const server = command(["serve", "--port", "0", "--console"]).spawn();
const serverOut = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
let serverLog = "";
let port = 0;
while (!port) {
  const { value, done } = await serverOut.read();
  if (done) throw new Error("the server exited before listening");
  serverLog += value;
  port = Number(/LISTEN detail=[^:\s]+:(\d+)/.exec(serverLog)?.[1] ?? 0);
}
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
console.log("\n--- server log ---");
console.log(serverLog.trimEnd().replace(/^/gm, "  "));

const logs: string[] = [];
for await (const entry of Deno.readDir(`${dir}/transcripts`)) {
  if (entry.name.endsWith(".log")) logs.push(entry.name);
}
for (const name of logs.sort()) {
  await step(`verify ${name}`, ["verify", `transcripts/${name}`, "--ca", "certs/ca.pem"]);
}
console.log(`\ndemo complete: ${logs.length} transcripts verified; files are in ${dir}`);
