/** The CA's CRL file as `cert list` reports it (the file side of ./crl.ts). */
import { pathExists, readTextFile } from "../files.ts";
import { CRL_WARN_DAYS, crlDaysLeft, parseCrl } from "../pki/crl.ts";
import { pemDecode } from "../pki/pem.ts";

/** What `cert list` says about a CRL file (it is the CA's own: not verified again here). */
export type CrlFileStatus =
  | { state: "missing" }
  | { state: "current" | "lapsing" | "lapsed"; number?: bigint; nextUpdate?: Date; days: number };

/** @throws BAD_CERT when the file is not a CRL; IO_ERROR when it cannot be read */
export async function crlFileStatus(path: string, now = new Date()): Promise<CrlFileStatus> {
  if (!(await pathExists(path))) return { state: "missing" };
  const crl = parseCrl(pemDecode(await readTextFile(path), "X509 CRL", "BAD_CERT"));
  const days = crlDaysLeft(crl, now);
  const state = days < 0 ? "lapsed" : days < CRL_WARN_DAYS ? "lapsing" : "current";
  return { state, number: crl.crlNumber, nextUpdate: crl.nextUpdate, days };
}

/**
 * The CRL file's DER (the CA's own, verified by whoever trusts it), or undefined when there is
 * none: `cert export` puts it in the bundle.
 * @throws BAD_CERT when the file is not a PEM CRL; IO_ERROR when it cannot be read
 */
export async function readCrlDer(path: string): Promise<Uint8Array | undefined> {
  if (!(await pathExists(path))) return undefined;
  return pemDecode(await readTextFile(path), "X509 CRL", "BAD_CERT");
}
