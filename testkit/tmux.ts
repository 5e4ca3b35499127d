/**
 * A tmux server of the test's own (its own socket) holding one window: a real terminal (pty)
 * for tests that drive `connect` by key presses and read back the screen.
 */

import { cliCommand, cliEnv } from "./cli.ts";
import { connectArgs, type ConnectOptions } from "./server_process.ts";

const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

/** Whether tmux can be run here (.ci/run installs it); a test without it is ignored, saying why. */
export const hasTmux = await new Deno.Command("tmux", {
  args: ["-V"],
  stdout: "null",
  stderr: "null",
}).output().then((out) => out.success, () => false);

/** A tmux server of our own (its own socket), holding one window `width` columns wide. */
export class Tmux {
  readonly socket = `securechat-test-${crypto.randomUUID().slice(0, 8)}`;

  constructor(readonly width = 100) {}

  async run(...args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-L", this.socket, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`tmux ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    }
    return new TextDecoder().decode(out.stdout);
  }

  start(command: string): Promise<string> {
    return this.run("new-session", "-d", "-s", "t", "-x", String(this.width), "-y", "30", command);
  }

  /**
   * Runs `securechat ARGS` in the window, as testkit/cli.ts would; when it exits the window
   * shows `EXIT=<status>` and stays a minute for the screen to be read.
   */
  startCli(args: string[], env: Record<string, string> = {}): Promise<string> {
    const vars = Object.entries(cliEnv(env)).map(([k, v]) => `${k}=${quote(v)}`).join(" ");
    return this.start(
      `env ${vars} ${cliCommand(args).map(quote).join(" ")}; echo EXIT=$?; sleep 60`,
    );
  }

  /** Key names as tmux knows them ("Left", "C-u", "Enter") or literal text. */
  /**
   * `connect` as `o.user` in the window, the password read from a file (removed once read);
   * resolves when the chat prompt shows.
   */
  async startConnect(o: ConnectOptions & { password: string }): Promise<void> {
    const file = await Deno.makeTempFile({ prefix: "securechat-password-" });
    try {
      await Deno.writeTextFile(file, `${o.password}\n`);
      await this.startCli([...connectArgs(o), "--password-file", file]);
      await this.waitFor((rows) => rows.at(-1) === `${o.user}>`, "the prompt");
    } finally {
      await Deno.remove(file);
    }
  }

  async keys(...keys: string[]): Promise<void> {
    for (const key of keys) {
      await this.run("send-keys", "-t", "t", key);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
  }

  /** The visible screen, trailing blank rows dropped. */
  async screen(): Promise<string[]> {
    const rows = (await this.run("capture-pane", "-p", "-t", "t")).split("\n").map((r) =>
      r.trimEnd()
    );
    while (rows.length && rows.at(-1) === "") rows.pop();
    return rows;
  }

  async waitFor(
    test: (rows: string[]) => boolean,
    what: string,
    timeoutMs = 15_000,
  ): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    let last: string[] = [];
    while (Date.now() < deadline) {
      last = await this.screen();
      if (test(last)) return last;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`timed out waiting for ${what}; screen:\n${last.join("\n")}`);
  }

  async kill(): Promise<void> {
    await this.run("kill-server").catch(() => {});
  }
}
