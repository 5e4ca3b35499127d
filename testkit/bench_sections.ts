/**
 * The sections of the benchmark suite, in the order bench/run.ts runs them: one list for the
 * runner and for the smoke test that checks every section reports (tests/bench_smoke_test.ts).
 * In testkit/, which both may import (tests never import bench/); not in run.ts, which runs on
 * import.
 */
export const SECTIONS = [
  "signing",
  "setup",
  "messages",
  "scale",
  "verify",
  "startup",
  "cluster",
  "storm",
  "peer",
  "lobby",
] as const;

export type SectionName = typeof SECTIONS[number];
