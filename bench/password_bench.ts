/** The cost of one password hash at today's parameters: what each login and registration pays. */
import { hashPassword, PBKDF2_ITERATIONS } from "../lib/crypto/password.ts";

Deno.bench(`hashPassword() (PBKDF2-HMAC-SHA256, ${PBKDF2_ITERATIONS} iterations)`, async () => {
  await hashPassword("correct horse battery staple");
});
