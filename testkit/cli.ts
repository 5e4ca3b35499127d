/** Runs the real CLI (main.ts) as a subprocess, as users do. */
import { readStartTask } from "./start_task.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
  /** The `deno run` flags, by default the start task's ({@link CLI_PERMISSIONS}). */
  flags?: readonly string[];
}

/**
 * The flags of `deno task start` (and so of `install` and `compile`): the tests run the CLI
 * with exactly what users get, no more and no less (testkit/start_task.ts).
 */
export const CLI_PERMISSIONS: readonly string[] = await readStartTask(
  new URL("../deno.json", import.meta.url).pathname,
);
/** The argv that starts the CLI. */
export function cliCommand(args: string[], flags: readonly string[] = CLI_PERMISSIONS): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    ...flags,
    MAIN,
    ...args,
  ];
}

let sharedHome: string | undefined;

/**
 * The environment of every CLI run: tests never touch the real home. A run with a `cwd`
 * uses it as SECURECHAT_HOME (its certs/, transcripts/ and data/ are the checkout layout);
 * others share one temporary home per test module. `options.env` overrides either.
 */
export function cliEnv(options: { cwd?: string; env?: Record<string, string> }) {
  const home = options.cwd ?? (sharedHome ??= Deno.makeTempDirSync({ prefix: "securechat-home-" }));
  return {
    SECURECHAT_HOME: home,
    XDG_CONFIG_HOME: `${home}/.config`,
    XDG_DATA_HOME: `${home}/.local/share`,
    ...options.env,
  };
}

export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const [cmd, ...rest] = cliCommand(args, options.flags);
  const child = new Deno.Command(cmd, {
    args: rest,
    cwd: options.cwd,
    env: cliEnv(options),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Starts the CLI and returns the live child, for long-running commands such as `serve`. */
export function spawnCli(
  args: string[],
  options: Omit<CliOptions, "stdin"> = {},
): Deno.ChildProcess {
  const [cmd, ...rest] = cliCommand(args, options.flags);
  return new Deno.Command(cmd, {
    args: rest,
    cwd: options.cwd,
    env: cliEnv(options),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}
