import { startMariaDb } from "/work/main/tests/helpers/mariadb.ts";
import { openUserStore } from "/work/main/lib/store/open.ts";
import { codeOf } from "/work/main/lib/errors.ts";
const server = await startMariaDb();
const store = await openUserStore({ url: server.url, env: {} });
await store.register({ email: "a@example.org", username: "ann", password: "password123" });
const pid = Number(
  new TextDecoder().decode(
    new Deno.Command("pgrep", { args: ["-n", "mariadbd"] }).outputSync().stdout,
  ).trim(),
);
Deno.kill(pid, "SIGSTOP");
let t = performance.now();
console.log(
  await store.login("ann", "password123").then(() => "ok", codeOf),
  performance.now() - t,
);
t = performance.now();
console.log(
  await store.login("ann", "password123").then(() => "ok", codeOf),
  performance.now() - t,
);
Deno.kill(pid, "SIGCONT");
t = performance.now();
console.log(
  await store.login("ann", "password123").then(() => "ok", codeOf),
  performance.now() - t,
);
await store.close();
await server.dispose();
