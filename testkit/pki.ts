/** A throwaway PKI for protocol tests, made through lib/pki (the same code as `ca init`/`cert issue`). */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { initCa, loadCaSigner } from "../lib/ca/ca.ts";
import { issueCertificate, type Profile } from "../lib/ca/issue.ts";
import type { KeyType } from "../lib/pki/keys.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { loadIdentity } from "../lib/identity.ts";
import type { Identity } from "../lib/handshake/common.ts";

export interface TestPki {
  dir: string;
  trust: TrustStore;
  identity(name: string): Promise<Identity>;
  issue(name: string, profile?: Profile, keyType?: KeyType): Promise<void>;
}

export async function makePki(
  users: string[] = ["alice", "bob", "carol"],
  keyType: KeyType = "ed25519",
  dir?: string,
): Promise<TestPki> {
  const certDir = dir ?? await Deno.makeTempDir({ prefix: "securechat-pki-" });
  // A day longer than the certificates it issues: every validity window starts at the second it is
  // made (lib/ca/serial.ts), so a 30-day certificate issued a second after a 30-day CA outlived
  // it, and tests that take the CA to outlive its certificates failed whenever a loaded machine
  // put the CA and the server certificate in different seconds.
  await initCa(certDir, { name: "Test Root CA", days: 31, keyType }, false);
  const ca = await loadCaSigner(certDir);
  const issue = async (name: string, profile: Profile = "client", type: KeyType = keyType) => {
    await issueCertificate(
      certDir,
      ca,
      {
        name,
        profile,
        dns: profile === "server" ? ["localhost"] : [],
        ip: profile === "server" ? ["127.0.0.1"] : [],
        days: 30,
        keyType: type,
      },
      true,
    );
  };
  await issue("server", "server");
  for (const user of users) await issue(user);
  return {
    dir: certDir,
    trust: await loadTrustStore(`${certDir}/ca.pem`),
    identity: (name) => loadIdentity(`${certDir}/${name}.pem`, `${certDir}/${name}.key`),
    issue,
  };
}
