/**
 * What a server process costs, read from outside it (Linux /proc): CPU time over all
 * its threads, exited ones included (utime + stime of /proc/<pid>/stat), and resident
 * memory (VmRSS of /proc/<pid>/status). The peer bench divides the CPU a phase added
 * by the units of work it did, so client-side costs (our recipients verify
 * signatures, IRC clients do not) never enter the comparison.
 */

/** USER_HZ: /proc counts CPU time in 1/100 s on every Linux ABI Deno runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcessSample {
  cpuSeconds: number;
  rssBytes: number;
}

/** @throws Error when /proc is missing or the process is gone */
export async function sampleProcess(pid: number): Promise<ProcessSample> {
  const [stat, status] = await Promise.all([
    Deno.readTextFile(`/proc/${pid}/stat`),
    Deno.readTextFile(`/proc/${pid}/status`),
  ]);
  // The command name (field 2) is in parentheses and may hold spaces: count fields
  // after its closing one. utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[14 - 3]) + Number(fields[15 - 3]);
  const rssKiB = Number(status.match(/^VmRSS:\s+(\d+) kB$/m)?.[1]);
  if (!Number.isFinite(ticks) || !Number.isFinite(rssKiB)) {
    throw new Error(`cannot read CPU time and RSS of process ${pid} from /proc`);
  }
  return { cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND, rssBytes: rssKiB * 1024 };
}

/**
 * A sample once the process's resident size has settled: sampled every second until the
 * samples of the last `quietMs` stay within 1 % of each other (or `maxMs` passed; a
 * `quietMs` of 0 takes the first sample). A
 * process that has just done a burst of work keeps memory it will give back once idle:
 * V8's memory reducer shrinks the young generation, compacts the old one and unmaps
 * pooled pages some 10 s after the allocations stop (an idle 800-connection server of
 * ours went from 113 to 103 MiB between 10 and 20 s and stayed there for 90 s). Idle
 * memory is what stays, for any server alike.
 */
export async function settledSample(
  pid: number,
  quietMs: number,
  maxMs = 60_000,
): Promise<ProcessSample & { settleSeconds: number }> {
  const t0 = performance.now();
  const window: number[] = [];
  const span = Math.ceil(quietMs / 1000) + 1;
  while (true) {
    const sample = await sampleProcess(pid);
    window.push(sample.rssBytes);
    if (window.length > span) window.shift();
    const elapsed = performance.now() - t0;
    const quiet = window.length === span &&
      Math.max(...window) - Math.min(...window) <= 0.01 * Math.max(...window);
    if (quiet || elapsed >= maxMs) return { ...sample, settleSeconds: elapsed / 1000 };
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** The CPU time a process spends while `work` runs. */
export async function cpuDuring<T>(
  pid: number,
  work: () => Promise<T>,
): Promise<{ result: T; cpuSeconds: number; wallSeconds: number }> {
  const before = await sampleProcess(pid);
  const t0 = performance.now();
  const result = await work();
  const wallSeconds = (performance.now() - t0) / 1000;
  const after = await sampleProcess(pid);
  return { result, cpuSeconds: after.cpuSeconds - before.cpuSeconds, wallSeconds };
}

/**
 * How long a measured phase goes on: at least `ms` of wall time AND at least
 * `minCpuSeconds` of the server's CPU time, so a fast server's figure is never a
 * handful of 10 ms ticks (or zero); `maxMs` caps it.
 */
export class Budget {
  readonly #t0 = performance.now();
  readonly #cpu0: Promise<number>;
  #lastCheck = 0;
  #done = false;

  constructor(
    readonly pid: number,
    readonly ms: number,
    readonly minCpuSeconds: number,
    readonly maxMs = 30_000,
  ) {
    this.#cpu0 = sampleProcess(pid).then((s) => s.cpuSeconds);
  }

  async more(): Promise<boolean> {
    if (this.#done) return false;
    const now = performance.now();
    if (now - this.#t0 < this.ms) return true;
    if (now - this.#t0 >= this.maxMs) return !(this.#done = true);
    if (now - this.#lastCheck < 20) return true;
    this.#lastCheck = now;
    const used = (await sampleProcess(this.pid)).cpuSeconds - await this.#cpu0;
    if (used >= this.minCpuSeconds) this.#done = true;
    return !this.#done;
  }
}

/**
 * CPU seconds of a process's live threads, summed by thread name (comm): in Deno,
 * "main" runs JavaScript, "tokio-runtime-w" the I/O reactor and off-thread ops such
 * as WebCrypto, "V8 DefaultWorke" the GC and compiler helpers. Threads that exited
 * are not counted (the process total in sampleProcess is).
 */
export async function threadCpu(pid: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/stat`);
    } catch {
      continue; // exited meanwhile
    }
    const name = Number(task.name) === pid
      ? "main"
      : stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const seconds = (Number(fields[14 - 3]) + Number(fields[15 - 3])) / CLOCK_TICKS_PER_SECOND;
    out[name] = (out[name] ?? 0) + seconds;
  }
  return out;
}
