/**
 * What `connect` can check before it dials (issue 17 item 3), so that a mistake on this
 * side is named here, with the fix, instead of coming back from the server as a bare
 * AUTH_FAIL or BAD_CERT: the files exist, the certificate is valid now under the CA (and
 * its CRL), is a client certificate for this user, and the key belongs to it.
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { SecureChatError } from "../lib/errors.ts";
import { sign, verify } from "../lib/crypto/signature.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { loadIdentity } from "../lib/identity.ts";
import { TrustStore, validatePeerCertificate } from "../lib/pki/validate.ts";

export interface PreflightInput {
  user: string;
  cert: string;
  key: string;
  ca: string;
  crl?: string;
  keyPassword?: string;
  /** `connect --no-preflight`: load only, and let the server judge (to test a server). */
  skipChecks?: boolean;
}

async function mustExist(path: string, what: string, hint: string): Promise<void> {
  try {
    await Deno.stat(path);
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `no ${what} at ${path}`, { cause, hint });
  }
}

/** Why our own certificate would be refused, as the next step to take. */
function hintFor(reason: string, input: PreflightInput): string {
  const reissue =
    `ask the operator for a new one (\`securechat cert issue ${input.user} --force\`)`;
  if (/expired|not yet valid/.test(reason)) return reissue;
  if (/revoked/.test(reason)) return `it was revoked: ${reissue}`;
  if (/is for user/.test(reason)) {
    return `log in as the certificate's user, or use the certificate issued for ${input.user} ` +
      "(--cert/--dir)";
  }
  if (/CRL/.test(reason)) {
    return "refresh the CRL beside the CA (`securechat cert crl`), or ask the operator";
  }
  return "use the CA certificate and your certificate from the same operator (--ca, --cert)";
}

/**
 * Loads and checks our identity and trust store.
 * @throws IO_ERROR for a missing file; BAD_CERT when the certificate would be refused or
 *   the key does not belong to it (each with a hint)
 */
export async function preflight(
  input: PreflightInput,
): Promise<{ identity: Identity; trust: TrustStore }> {
  const issue = `ask the operator to issue one (\`securechat cert issue ${input.user}\`), or ` +
    "point --dir (or --cert/--key) at yours";
  await mustExist(input.cert, `certificate for ${input.user}`, issue);
  await mustExist(input.key, `private key for ${input.user}`, issue);
  await mustExist(
    input.ca,
    "CA certificate",
    "copy the operator's ca.pem there, or pass --ca FILE",
  );
  const trust = await loadTrustStore(input.ca, input.crl);
  const identity = await loadIdentity(input.cert, input.key, input.keyPassword);
  if (input.skipChecks) return { identity, trust };
  let peerKey;
  try {
    peerKey = (await validatePeerCertificate(trust, identity.certDer, {
      role: "client",
      expectedName: input.user,
    })).key;
  } catch (error) {
    if (!(error instanceof SecureChatError) || error.code !== "BAD_CERT") throw error;
    throw new SecureChatError("BAD_CERT", `your certificate ${input.cert}: ${error.message}`, {
      cause: error,
      hint: hintFor(error.message, input),
    });
  }
  const probe = crypto.getRandomValues(new Uint8Array(32));
  if (!await verify(peerKey, probe, await sign(identity.signingKey, probe))) {
    throw new SecureChatError("BAD_CERT", `${input.key} is not the key of ${input.cert}`, {
      hint: "use the .key file written together with this .pem by `securechat cert issue`",
    });
  }
  return { identity, trust };
}
