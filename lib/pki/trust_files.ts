/** The CLI's and the server's trust store from files (the page builds one from PEM text). */
import { pathExists, readTextFile } from "../files.ts";
import { defaultCrlPath, TrustStore } from "./validate.ts";

/**
 * Reads `ca.pem` and the CRL (by default `ca.crl` beside it, if present).
 * @throws IO_ERROR when a file cannot be read; BAD_CERT when the CA or CRL is unacceptable
 */
export async function loadTrustStore(caPemPath: string, crlPath?: string): Promise<TrustStore> {
  const defaultCrl = defaultCrlPath(caPemPath);
  const crlFile = crlPath ?? ((await pathExists(defaultCrl)) ? defaultCrl : undefined);
  const crlPem = crlFile === undefined ? undefined : await readTextFile(crlFile);
  return await TrustStore.fromPem(await readTextFile(caPemPath), crlPem);
}
