/**
 * Where InspIRCd is, for the bench's peer section (bench/peer_bench.ts) and the test that
 * decides before its run whether that section must run or say it was skipped
 * (tests/bench_smoke_test.ts).
 */

export const INSPIRCD_INSTALL_HINT =
  "install it from Debian: apt-get install inspircd (then it is /usr/sbin/inspircd)";

/** The `inspircd` binary: on PATH, or where Debian puts it (/usr/sbin is often off PATH). */
export async function findInspircd(): Promise<string | null> {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean), "/usr/sbin"];
  for (const dir of dirs) {
    try {
      const info = await Deno.stat(`${dir}/inspircd`);
      if (info.isFile) return `${dir}/inspircd`;
    } catch {
      // not here
    }
  }
  return null;
}
