/** The CLI's and the server's trust store from files (the page builds one from PEM text). */
import { SecureChatError } from "../errors.ts";
import { pathExists, readTextFile } from "../files.ts";
import { pemDecode } from "./pem.ts";
import { defaultCrlPath, TrustStore } from "./validate.ts";

/**
 * Reads `ca.pem` and the CRL (by default `ca.crl` beside it, if present).
 * @throws IO_ERROR when a file cannot be read; BAD_CERT when the CA or CRL is unacceptable
 */
export async function loadTrustStore(caPemPath: string, crlPath?: string): Promise<TrustStore> {
  const defaultCrl = defaultCrlPath(caPemPath);
  const crlFile = crlPath ?? ((await pathExists(defaultCrl)) ? defaultCrl : undefined);
  const caPem = await readTextFile(caPemPath);
  const crlPem = crlFile === undefined ? undefined : await readTextFile(crlFile);
  const store = await naming(caPemPath, () => TrustStore.fromPem(caPem));
  if (crlFile !== undefined) {
    store.crl = await naming(
      crlFile,
      () => store.checkCrl(pemDecode(crlPem!, "X509 CRL", "BAD_CERT")),
    );
  }
  return store;
}

/** A refusal of what `path` holds says which file it was (the same code, the cause kept). */
async function naming<T>(path: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    if (!(error instanceof SecureChatError)) throw error;
    throw new SecureChatError(error.code, `${path}: ${error.message}`, {
      cause: error,
      hint: error.hint,
    });
  }
}
