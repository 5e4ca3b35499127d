/**
 * The `start` task of deno.json is the one home of how `securechat` is launched: the
 * environment it sets (`NAME=value` words first), then `deno run`, its flags, and main.ts.
 * `deno task install` writes it into the installed command; the benches start the server
 * with the same environment and V8 flags, so they measure what ships.
 */

export interface StartTask {
  /** Set before deno starts (allocator settings that no running process can change). */
  env: Record<string, string>;
  /** The flags between `deno run` and `main.ts`. */
  flags: string[];
}

const ASSIGNMENT = /^([A-Z_][A-Z0-9_]*)=(\S*)$/;

/** @throws Error when the task is not `[NAME=value ...] deno run [flags ...] main.ts` */
export function parseStartTask(task: string): StartTask {
  const words = task.trim().split(/\s+/);
  const env: Record<string, string> = {};
  let at = 0;
  for (let m; at < words.length && (m = words[at].match(ASSIGNMENT)); at++) env[m[1]] = m[2];
  if (words[at] !== "deno" || words[at + 1] !== "run" || words.at(-1) !== "main.ts") {
    throw new Error(`unexpected start task: ${task}`);
  }
  return { env, flags: words.slice(at + 2, -1) };
}

/** The start task of the deno.json at `config`. */
export async function readStartTask(config: string): Promise<StartTask> {
  const tasks = JSON.parse(await Deno.readTextFile(config)).tasks as Record<string, string>;
  return parseStartTask(tasks.start);
}
