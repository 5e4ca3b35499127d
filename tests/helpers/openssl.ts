/** Test helper: runs openssl in a directory, failing loudly with its stderr. */
import { openLibcrypto } from "../../lib/crypto/libcrypto.ts";

export interface OpensslResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function openssl(cwd: string, ...args: string[]): Promise<OpensslResult> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Like openssl() but throws unless it exits 0 (for fixture generation). */
export async function opensslOk(cwd: string, ...args: string[]): Promise<string> {
  const result = await openssl(cwd, ...args);
  if (result.code !== 0) throw new Error(`openssl ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

/** Issues `<name>.pem` from a fresh key via `openssl x509 -req` with an extfile section. */
export async function opensslIssue(
  cwd: string,
  opts: { name: string; caCert: string; caKey: string; key?: string[]; ext: string; days?: number },
): Promise<string> {
  await Deno.writeTextFile(`${cwd}/${opts.name}.ext`, `[v3]\n${opts.ext}\n`);
  await opensslOk(
    cwd,
    "req",
    "-new",
    "-newkey",
    ...(opts.key ?? ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    "-nodes",
    "-keyout",
    `${opts.name}.key`,
    "-out",
    `${opts.name}.csr`,
    "-subj",
    `/CN=${opts.name}`,
  );
  await opensslOk(
    cwd,
    "x509",
    "-req",
    "-in",
    `${opts.name}.csr`,
    "-CA",
    opts.caCert,
    "-CAkey",
    opts.caKey,
    "-set_serial",
    `0x${crypto.randomUUID().replaceAll("-", "").slice(0, 16).replace(/^./, "4")}`,
    "-days",
    String(opts.days ?? 30),
    "-extfile",
    `${opts.name}.ext`,
    "-extensions",
    "v3",
    "-out",
    `${opts.name}.pem`,
  );
  return `${cwd}/${opts.name}.pem`;
}

/**
 * Why OpenSSL 3's libcrypto cannot sign here (not at any of LIBCRYPTO_PATHS, or no
 * `--allow-ffi`), or undefined when it can: the `openssl` suite's condition for the tests of
 * lib/crypto/openssl_rsa.ts.
 */
export function libcryptoMissing(): string | undefined {
  const opened = openLibcrypto();
  return "reason" in opened ? opened.reason : undefined;
}
