/**
 * What a server process costs, read from outside it (Linux /proc): CPU time over all
 * its threads, exited ones included (utime + stime of /proc/<pid>/stat), and resident
 * memory (VmRSS of /proc/<pid>/status). The peer bench divides the CPU a phase added
 * by the units of work it did, so client-side costs (our recipients verify
 * signatures, IRC clients do not) never enter the comparison.
 */
import { cpuAddedByThread, type GrowthSample, type ThreadTime } from "../testkit/burst_parts.ts";

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
 * What each thread of a Deno server is, by its name (/proc/<pid>/task/<tid>/comm, 15
 * characters at most): the peer bench reports the server's CPU per unit under these names.
 */
export const THREAD_ROLES: Record<string, string> = {
  main: "the main thread: JavaScript, V8's work on it (the main thread's share of every GC " +
    "pause, inline compilation) and tokio's reactor (Deno's event loop: socket reads and writes, " +
    "timers)",
  "V8 DefaultWorke": "V8's platform workers: concurrent marking, parallel scavenges and " +
    "compaction, concurrent sweeping (ArrayBuffer backing stores' frees too) and the concurrent " +
    "compilers (Sparkplug, Maglev, TurboFan)",
  "tokio-runtime-w": "tokio's blocking pool: ops Deno hands off the event loop " +
    "(asynchronous file calls such as open and fsync, WebCrypto's operations, DNS)",
};

/**
 * The CPU time of each live thread of a process, by thread id: from
 * /proc/<pid>/task/<tid>/schedstat (the scheduler's own count, in ns: a thread's few ms in a
 * burst are not lost in 10 ms ticks), or utime + stime of its stat where the kernel has no
 * schedstat. The thread whose id is the process's is named "main" (its comm is the
 * program's).
 */
export async function threadTimes(pid: number): Promise<Map<number, ThreadTime>> {
  const out = new Map<number, ThreadTime>();
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    const tid = Number(task.name);
    const dir = `/proc/${pid}/task/${tid}`;
    try {
      const stat = await Deno.readTextFile(`${dir}/stat`);
      const name = tid === pid ? "main" : stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      let cpuSeconds: number;
      try {
        cpuSeconds = Number((await Deno.readTextFile(`${dir}/schedstat`)).split(" ")[0]) / 1e9;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        cpuSeconds = (Number(fields[14 - 3]) + Number(fields[15 - 3])) / CLOCK_TICKS_PER_SECOND;
      }
      out.set(tid, { name, cpuSeconds });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // else: exited meanwhile
    }
  }
  return out;
}

/**
 * What a process has spent so far, cheaply enough to read between the parts of a burst: the
 * CPU of each live thread (threadTimes: ns-precise; a part's CPU is what each thread added,
 * cpuAddedByThread) and its minor page faults. A young process that is still growing its heap
 * and allocator pools faults in fresh pages (the kernel zeroes each one) where a grown one
 * reuses what it has, so the faults say which of the two a stretch of work ran in.
 * @throws Error when /proc is missing or the process is gone
 */
export async function growthSample(pid: number): Promise<GrowthSample> {
  const [stat, { rssBytes }, threads] = await Promise.all([
    Deno.readTextFile(`/proc/${pid}/stat`),
    sampleProcess(pid),
    threadTimes(pid),
  ]);
  // minflt is field 10, counted after the parenthesised command name as in sampleProcess.
  const minorFaults = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[10 - 3]);
  if (!Number.isFinite(minorFaults)) throw new Error(`cannot read the page faults of ${pid}`);
  return { threads, minorFaults, rssBytes };
}

/**
 * CPU seconds of a process's live threads, summed by thread name (THREAD_ROLES). Threads
 * that exited are not counted (the process total in sampleProcess is).
 */
export async function threadCpu(pid: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const { name, cpuSeconds } of (await threadTimes(pid)).values()) {
    out[name] = (out[name] ?? 0) + cpuSeconds;
  }
  return out;
}

/** How often threadCpuDuring looks at the threads while the work runs. */
const THREAD_POLL_MS = 250;

/**
 * The CPU seconds each thread of `pid` adds while `work` runs, summed by thread name. The
 * threads are looked at every THREAD_POLL_MS meanwhile, so a thread that exits during the
 * work still counts up to its last look (tokio's blocking threads exit after 10 s idle, so
 * they lose nothing; V8's workers live as long as the process), and one that starts counts
 * from zero.
 */
export async function threadCpuDuring<T>(
  pid: number,
  work: () => Promise<T>,
): Promise<{ result: T; threads: Record<string, number> }> {
  const first = await threadTimes(pid);
  const last = new Map(first);
  const look = async () => {
    try {
      for (const [tid, t] of await threadTimes(pid)) last.set(tid, t);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // the process itself is gone
    }
  };
  let looking = Promise.resolve();
  const poll = setInterval(() => looking = looking.then(look), THREAD_POLL_MS);
  let result: T;
  try {
    result = await work();
  } finally {
    clearInterval(poll);
    await looking;
  }
  await look();
  return { result, threads: cpuAddedByThread(first, last) };
}

/**
 * A burst's server CPU: its threads' time by the scheduler's count (threadCpuDuring's, from
 * schedstat in ns) where the kernel keeps it, else `ticks` (utime + stime, cpuDuring's). A burst
 * has no CPU budget (Budget) and may take only tens of ms of the server's CPU, which utime and
 * stime count in 10 ms ticks charged to whichever thread a tick finds running: a sample of a few
 * ticks. Session 20's closing run read 8.75 µs per delivery for a goal-row burst whose threads
 * summed 7.02, and a `--quick` burst on a fresh server read 0 (tests/bench_smoke_test.ts failed).
 * The threads' sum leaves out only a thread that exited between two of threadCpuDuring's looks;
 * a server's threads live as long as it does.
 */
export function burstCpuSeconds(ticks: number, threads: Record<string, number>): number {
  const summed = Object.values(threads).reduce((total, seconds) => total + seconds, 0);
  return summed > 0 ? summed : ticks;
}
