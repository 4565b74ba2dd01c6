/**
 * Throwaway certificates for the TLS runs of the demo and the benchmark, in a temporary directory
 * that lives as long as the run: a CA, and a server certificate for `localhost` and `127.0.0.1`
 * signed by it, from `tests/make_test_certs.ts` (TypeScript and WebCrypto alone, no openssl).
 *
 * ```ts
 * import { makeTempCerts } from "./temp_certs.ts";
 * const certs = await makeTempCerts();
 * try {
 *   console.log(certs.caFile, certs.serverCert.length);
 * } finally {
 *   await certs.remove();
 * }
 * ```
 *
 * @module
 */

import { makeTestCerts, type TestCerts } from "../tests/make_test_certs.ts";

/** The certificates a TLS run needs (each PEM text and the path of its file), and their removal. */
export interface TempCertsHandle extends TestCerts {
  /** Removes the directory; safe to call twice. */
  remove(): Promise<void>;
}

/**
 * Makes fresh throwaway certificates in a new temporary directory (needs `--allow-write` for
 * it).
 */
export async function makeTempCerts(): Promise<TempCertsHandle> {
  const dir = await Deno.makeTempDir({ prefix: "tcp-pool-proxy-certs-" });
  let certs: TestCerts;
  try {
    certs = await makeTestCerts(dir);
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  let removed = false;
  return {
    ...certs,
    async remove() {
      if (removed) return;
      removed = true;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
