/**
 * The `start` task of deno.json is the one home of how `securechat` is launched: `deno run`, its
 * flags (permissions and V8 settings), and main.ts. `deno task install` writes them into the
 * installed command; the benches start the server with the same V8 flags, so they measure the
 * memory settings that ship.
 */

/**
 * The flags between `deno run` and `main.ts`.
 * @throws Error when the task is not `deno run [flags ...] main.ts`
 */
export function parseStartTask(task: string): string[] {
  const words = task.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== "main.ts") {
    throw new Error(`unexpected start task: ${task}`);
  }
  return words.slice(2, -1);
}

/** The start task's flags, from the deno.json at `config`. */
export async function readStartTask(config: string): Promise<string[]> {
  const tasks = JSON.parse(await Deno.readTextFile(config)).tasks as Record<string, string>;
  return parseStartTask(tasks.start);
}
