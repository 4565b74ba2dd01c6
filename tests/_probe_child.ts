/**
 * A TLS listener on `[::]` that probes itself every 20 ms for a second, then prints its checks
 * as JSON: run by tls_test.ts in a network namespace without `::1`.
 */

import { TlsListener } from "../src/tls_listener.ts";
import { listenerTlsOf } from "../src/tls.ts";
import { makeTestCerts } from "./make_test_certs.ts";

const dir = await Deno.makeTempDir({ prefix: "probe-child-" });
try {
  const certs = await makeTestCerts(dir);
  const files = listenerTlsOf({ tlsCert: certs.serverCertFile, tlsKey: certs.serverKeyFile });
  if (files === undefined) throw new Error("unreachable");
  const listener = await TlsListener.open({ hostname: "::", port: 0 }, {
    files,
    handshakeTimeoutMs: 2_000,
    maxConnections: 0,
    checkIntervalMs: 20,
    probeTimeoutMs: 150,
  });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  listener.close();
  console.log(JSON.stringify(listener.checks));
} finally {
  await Deno.remove(dir, { recursive: true });
}
