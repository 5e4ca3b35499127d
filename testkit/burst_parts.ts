/**
 * The arithmetic over a relay burst's parts that the peer bench reads from /proc
 * (bench/_proc.ts growthSample, bench/peer_bench.ts ourBurst): the CPU a process's threads added
 * between two looks, each part's CPU per delivery and page faults, and the median over the parts
 * that did not grow the process. In testkit/, which tests may import (they never import bench/),
 * so that a unit test checks it without a server or a clock (tests/unit/burst_parts_test.ts).
 */

/** One thread's name (/proc/<pid>/task/<tid>/comm, "main" for the process's own) and CPU time. */
export interface ThreadTime {
  name: string;
  cpuSeconds: number;
}

/** What a process has spent so far, read between the parts of a burst (growthSample). */
export interface GrowthSample {
  /** Each live thread's CPU time, by thread id. */
  threads: ReadonlyMap<number, ThreadTime>;
  /** minflt of /proc/<pid>/stat: pages the process touched for the first time, mostly. */
  minorFaults: number;
  /** VmRSS: whether what grew is kept (a working set filling up, or state that never stops). */
  rssBytes: number;
}

/**
 * The CPU seconds each thread added from one look at a process's threads to a later one, summed
 * by thread name. Thread by thread, never total against total: a thread that exits meanwhile
 * takes its whole life's CPU out of a total of the live threads, and a part of a burst in which
 * one of tokio's blocking threads exited (they do after 10 s idle, with up to tens of ms of the
 * server's setup in them) read −19 to −1 µs per delivery (session 15's `by_part`). Here such a
 * thread adds what it ran after `earlier` and before its exit, which is lost (nothing, for a
 * thread that exits for being idle; callers that must keep it pass its last look in `later`). A
 * thread only in `later` started meanwhile and adds all it has; so does one whose id an exited
 * thread had (the name differs, or the time went down).
 */
export function cpuAddedByThread(
  earlier: ReadonlyMap<number, ThreadTime>,
  later: ReadonlyMap<number, ThreadTime>,
): Record<string, number> {
  const added: Record<string, number> = {};
  for (const [tid, now] of later) {
    const before = earlier.get(tid);
    const same = before !== undefined && before.name === now.name &&
      before.cpuSeconds <= now.cpuSeconds;
    added[now.name] = (added[now.name] ?? 0) + now.cpuSeconds - (same ? before.cpuSeconds : 0);
  }
  return added;
}

/**
 * One part of a burst as the server lived it: `upTo`, the messages it had relayed in this phase at
 * the part's end (the warm burst's included); `messages`, the part's own; its CPU per delivery over
 * all threads (µs); the minor page faults it took and its resident size at the end (MiB): what
 * shows a server still growing.
 */
export interface PartGrowth {
  upTo: number;
  messages: number;
  cpuUs: number;
  faults: number;
  rssMiB: number;
}

const hundredths = (x: number) => Math.round(x * 100) / 100;

/** A part from the samples at its start (`last`) and end (`now`), `deliveries` relays made in it. */
export function partGrowth(
  upTo: number,
  messages: number,
  deliveries: number,
  last: GrowthSample,
  now: GrowthSample,
): PartGrowth {
  const added = Object.values(cpuAddedByThread(last.threads, now.threads));
  return {
    upTo,
    messages,
    cpuUs: hundredths(added.reduce((a, s) => a + s, 0) * 1e6 / deliveries),
    faults: now.minorFaults - last.minorFaults,
    rssMiB: Math.round(now.rssBytes / 2 ** 20 * 10) / 10,
  };
}

/**
 * The most minor page faults per message a part may take and count as quiet (quietParts): 200 a
 * 500-line part of the goal row, the bound session 15 compared trees under (prof15: main 20.7 µs
 * against proto15's 17.8 over such parts, where the bursts' totals disagreed). A fresh server's
 * heap steps fault in 1,000–3,000 pages a 500-line part (4–12 MiB) and cost ~15 µs per delivery
 * more (up to 80); a part past them takes 0–150, what V8's and malloc's steady churn touches anew.
 * The bound sits between the two, under the smallest step seen (~800 a part).
 */
export const QUIET_FAULTS_PER_MESSAGE = 0.4;

/** The parts of a burst that took no heap step, and their median CPU per delivery. */
export interface QuietParts {
  /** The median over the quiet parts of their CPU per delivery (µs); null when none was quiet. */
  cpu_us_median: number | null;
  /** How many parts were quiet, `of` the burst's measured parts. */
  parts: number;
  of: number;
  faults_per_message_below: number;
}

/**
 * The median CPU per delivery over the parts that took fewer than QUIET_FAULTS_PER_MESSAGE minor
 * faults per message: what two trees can be compared on where the heap steps of a fresh server
 * fall at different places in their bursts (docs/PERFORMANCE.md, "Session 16: quiet parts").
 */
export function quietParts(parts: readonly PartGrowth[]): QuietParts {
  const quiet = parts.filter((p) => p.faults < QUIET_FAULTS_PER_MESSAGE * p.messages)
    .map((p) => p.cpuUs).sort((a, b) => a - b);
  const mid = quiet.length >> 1;
  const median = quiet.length === 0
    ? null
    : quiet.length % 2 === 1
    ? quiet[mid]
    : hundredths((quiet[mid - 1] + quiet[mid]) / 2);
  return {
    cpu_us_median: median,
    parts: quiet.length,
    of: parts.length,
    faults_per_message_below: QUIET_FAULTS_PER_MESSAGE,
  };
}
