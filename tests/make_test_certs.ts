/**
 * A throwaway PKI for the TLS tests and the demo, made in TypeScript alone (no openssl): a CA, a
 * server certificate for `localhost` and `127.0.0.1` and a client certificate signed by it, a
 * second unrelated CA with a server certificate of its own (one the first CA's clients must
 * refuse), and a server certificate that expired in 2020. X.509 v3 is DER-encoded by hand below;
 * keys and signatures come from WebCrypto (ECDSA P-256 with SHA-256). Keys are fresh each run
 * and certificates valid for 2 days (back-dated 1 hour), and every subject says "throwaway":
 * nothing here could be mistaken for a real key.
 *
 * As a program: `deno run --allow-write tests/make_test_certs.ts DIR` writes the files into DIR
 * and prints DIR.
 *
 * @example
 * ```ts ignore
 * import { makeTestCerts } from "./make_test_certs.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const certs = await makeTestCerts(dir);
 * using listener = Deno.listenTls({ port: 0, cert: certs.serverCert, key: certs.serverKey });
 * // clients trust `certs.ca` (or `certs.caFile`) and connect to "localhost" or 127.0.0.1
 * ```
 *
 * @module
 */

// ---- ASN.1 DER ----

/** DER bytes (over a plain ArrayBuffer, as WebCrypto takes them). */
type Der = Uint8Array<ArrayBuffer>;

/** DER tags of the universal types used here. */
const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

function concatBytes(parts: readonly Uint8Array[]): Der {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** A DER length: short form under 128, else 0x80 + the count of big-endian length bytes. */
function derLength(length: number): Der {
  if (length < 0x80) return Uint8Array.of(length);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** One tag-length-value, `content` being the concatenation of `parts`. */
function tlv(tag: number, ...parts: Uint8Array[]): Der {
  const content = concatBytes(parts);
  return concatBytes([Uint8Array.of(tag), derLength(content.length), content]);
}

const asn1 = {
  sequence: (...items: Uint8Array[]): Der => tlv(Tag.sequence, ...items),
  /** A SET OF: DER wants its elements sorted by their encodings. */
  set: (...items: Uint8Array[]): Der => tlv(Tag.set, ...[...items].sort(compareBytes)),
  boolean: (value: boolean): Der => tlv(Tag.boolean, Uint8Array.of(value ? 0xff : 0x00)),
  /** A non-negative INTEGER from its big-endian magnitude (minimal, sign byte added if needed). */
  unsignedInteger: (magnitude: Uint8Array): Der => {
    let start = 0;
    while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
    const trimmed = magnitude.subarray(start);
    const sign = trimmed.length === 0 || trimmed[0] >= 0x80 ? [Uint8Array.of(0)] : [];
    return tlv(Tag.integer, ...sign, trimmed);
  },
  smallInteger: (value: number): Der => asn1.unsignedInteger(Uint8Array.of(value)),
  oid: (dotted: string): Der => {
    const arcs = dotted.split(".").map(Number);
    const bytes: number[] = [];
    for (const arc of [arcs[0] * 40 + arcs[1], ...arcs.slice(2)]) {
      const base128 = [arc % 128];
      for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) {
        base128.unshift(0x80 | (rest % 128));
      }
      bytes.push(...base128);
    }
    return tlv(Tag.oid, Uint8Array.from(bytes));
  },
  utf8String: (text: string): Der => tlv(Tag.utf8String, new TextEncoder().encode(text)),
  printableString: (text: string): Der => {
    if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(text)) {
      throw new RangeError(`not a PrintableString: ${JSON.stringify(text)}`);
    }
    return tlv(Tag.printableString, new TextEncoder().encode(text));
  },
  /** RFC 5280 4.1.2.5: UTCTime for the years 1950 to 2049, GeneralizedTime otherwise. */
  time: (date: Date): Der => {
    const iso = date.toISOString(); // 2026-01-02T03:04:05.678Z
    const digits = iso.slice(0, 19).replace(/[-T:]/g, ""); // 20260102030405
    const year = date.getUTCFullYear();
    return year >= 1950 && year < 2050
      ? tlv(Tag.utcTime, new TextEncoder().encode(`${digits.slice(2)}Z`))
      : tlv(Tag.generalizedTime, new TextEncoder().encode(`${digits}Z`));
  },
  /** A BIT STRING of whole bytes (no unused bits). */
  bitString: (bytes: Uint8Array): Der => tlv(Tag.bitString, Uint8Array.of(0), bytes),
  /**
   * A named-bit BIT STRING (as keyUsage): bit 0 is the first byte's top bit; DER drops trailing
   * zero bits and counts them as unused.
   */
  namedBits: (bits: readonly number[]): Der => {
    const highest = Math.max(...bits);
    const bytes = new Uint8Array(Math.floor(highest / 8) + 1);
    for (const bit of bits) bytes[Math.floor(bit / 8)] |= 0x80 >> (bit % 8);
    const unused = 7 - (highest % 8);
    return tlv(Tag.bitString, Uint8Array.of(unused), bytes);
  },
  octetString: (bytes: Uint8Array): Der => tlv(Tag.octetString, bytes),
  /** `[n] EXPLICIT`: a constructed context tag around whole encodings. */
  explicit: (n: number, ...items: Uint8Array[]): Der => tlv(0xa0 | n, ...items),
  /** `[n] IMPLICIT` of a primitive type: the context tag replaces the type's own. */
  implicitPrimitive: (n: number, content: Uint8Array): Der => tlv(0x80 | n, content),
};

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

// ---- X.509 ----

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  organizationName: "2.5.4.10",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

/** keyUsage bit numbers (RFC 5280 4.2.1.3). */
const KeyUsageBit = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

const ORGANIZATION = "tcp-pool-proxy tests";
const HOUR_MS = 3_600_000;
const SIGNING: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };

/** A key pair and what certificates need from it. */
interface KeyMaterial {
  keys: CryptoKeyPair;
  /** SubjectPublicKeyInfo, DER. */
  spki: Uint8Array;
  /** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits (the EC point). */
  keyId: Uint8Array;
}

/** An issued certificate, with what issuing others from it needs. */
interface Issued {
  /** The certificate, DER. */
  der: Uint8Array;
  /** Its subject Name, DER (the issuer Name of what it signs, byte for byte). */
  name: Uint8Array;
  key: KeyMaterial;
}

async function newKey(): Promise<KeyMaterial> {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const point = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
  const keyId = new Uint8Array(await crypto.subtle.digest("SHA-1", point));
  return { keys, spki, keyId };
}

function distinguishedName(commonName: string): Der {
  const attribute = (oid: string, value: Uint8Array) =>
    asn1.set(asn1.sequence(asn1.oid(oid), value));
  return asn1.sequence(
    attribute(OID.organizationName, asn1.printableString(ORGANIZATION)),
    attribute(OID.commonName, asn1.utf8String(commonName)),
  );
}

function extension(oid: string, critical: boolean, value: Uint8Array): Der {
  // `critical` is DEFAULT FALSE: DER leaves it out when false.
  return asn1.sequence(
    asn1.oid(oid),
    ...(critical ? [asn1.boolean(true)] : []),
    asn1.octetString(value),
  );
}

/** A random positive 16-byte serial number whose DER INTEGER is exactly 16 bytes. */
function serialNumber(): Der {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] & 0x7f) | 0x40;
  return bytes;
}

/** The IPv4 address `text` as its 4 bytes (an iPAddress GeneralName holds those). */
function ipv4Bytes(text: string): Der {
  const parts = text.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new RangeError(`not an IPv4 address: ${JSON.stringify(text)}`);
  }
  return Uint8Array.from(parts);
}

/**
 * WebCrypto's ECDSA signature is r || s (32 bytes each for P-256); X.509 wants DER
 * `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
 */
function ecdsaSigValue(raw: Uint8Array): Der {
  const half = raw.length / 2;
  return asn1.sequence(
    asn1.unsignedInteger(raw.subarray(0, half)),
    asn1.unsignedInteger(raw.subarray(half)),
  );
}

/** What a certificate says about its subject. */
interface CertificateRequest {
  commonName: string;
  key: KeyMaterial;
  notBefore: Date;
  notAfter: Date;
  /** `"ca"`, or the extended key usage of a leaf. */
  kind: "ca" | "server" | "client";
  /** A leaf's subjectAltName entries. */
  dnsNames?: string[];
  ipAddresses?: string[];
}

/** Issues a certificate for `request`, signed by `issuer` (self-signed when omitted). */
async function issue(request: CertificateRequest, issuer?: Issued): Promise<Issued> {
  const name = distinguishedName(request.commonName);
  const signer = issuer ?? { name, key: request.key };
  const algorithm = asn1.sequence(asn1.oid(OID.ecdsaWithSha256));
  const extensions: Uint8Array[] = [];
  if (request.kind === "ca") {
    extensions.push(
      extension(OID.basicConstraints, true, asn1.sequence(asn1.boolean(true))),
      extension(
        OID.keyUsage,
        true,
        asn1.namedBits([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
      ),
    );
  } else {
    // CA:FALSE is basicConstraints' default, so DER encodes it as an empty SEQUENCE.
    extensions.push(
      extension(OID.basicConstraints, false, asn1.sequence()),
      extension(OID.keyUsage, true, asn1.namedBits([KeyUsageBit.digitalSignature])),
      extension(
        OID.extKeyUsage,
        false,
        asn1.sequence(asn1.oid(request.kind === "server" ? OID.serverAuth : OID.clientAuth)),
      ),
    );
    const altNames = [
      ...(request.dnsNames ?? []).map((dns) =>
        asn1.implicitPrimitive(2, new TextEncoder().encode(dns))
      ),
      ...(request.ipAddresses ?? []).map((ip) => asn1.implicitPrimitive(7, ipv4Bytes(ip))),
    ];
    if (altNames.length > 0) {
      extensions.push(extension(OID.subjectAltName, false, asn1.sequence(...altNames)));
    }
  }
  extensions.push(extension(OID.subjectKeyIdentifier, false, asn1.octetString(request.key.keyId)));
  if (issuer !== undefined) {
    extensions.push(
      extension(
        OID.authorityKeyIdentifier,
        false,
        asn1.sequence(asn1.implicitPrimitive(0, issuer.key.keyId)),
      ),
    );
  }
  const tbs = asn1.sequence(
    asn1.explicit(0, asn1.smallInteger(2)), // version: v3
    asn1.unsignedInteger(serialNumber()),
    algorithm,
    signer.name,
    asn1.sequence(asn1.time(request.notBefore), asn1.time(request.notAfter)),
    name,
    request.key.spki,
    asn1.explicit(3, asn1.sequence(...extensions)),
  );
  const signature = new Uint8Array(
    await crypto.subtle.sign(SIGNING, signer.key.keys.privateKey, tbs),
  );
  const der = asn1.sequence(tbs, algorithm, asn1.bitString(ecdsaSigValue(signature)));
  return { der, name, key: request.key };
}

// ---- PEM and files ----

function pem(label: string, der: Uint8Array): string {
  let binary = "";
  for (const byte of der) binary += String.fromCharCode(byte);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function certificatePem(issued: Issued): string {
  return pem("CERTIFICATE", issued.der);
}

async function privateKeyPem(key: KeyMaterial): Promise<string> {
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key.keys.privateKey));
  return pem("PRIVATE KEY", pkcs8);
}

/** The throwaway PKI that {@link makeTestCerts} wrote. */
export interface TestCerts {
  /** The directory the files are in. */
  dir: string;
  /** PEM text of each file, and its path in `dir` (`...File`). The CA: `ca.crt`. */
  ca: string;
  caFile: string;
  /** Server certificate signed by `ca`, for `localhost` and `127.0.0.1`: `server.crt`. */
  serverCert: string;
  serverCertFile: string;
  /** Its PKCS#8 key: `server.key`. */
  serverKey: string;
  serverKeyFile: string;
  /** Client certificate (extended key usage clientAuth) signed by `ca`: `client.crt`. */
  clientCert: string;
  clientCertFile: string;
  /** Its PKCS#8 key: `client.key`. */
  clientKey: string;
  clientKeyFile: string;
  /** A second, unrelated CA: `other-ca.crt`. */
  otherCa: string;
  otherCaFile: string;
  /** A server certificate like `serverCert`, but signed by `otherCa`: `other-server.crt`. */
  otherServerCert: string;
  otherServerCertFile: string;
  /** Its PKCS#8 key: `other-server.key`. */
  otherServerKey: string;
  otherServerKeyFile: string;
  /** Like `serverCert`, signed by `ca`, but valid only 2020-01-01 to 2020-01-02: `expired.crt`. */
  expiredCert: string;
  expiredCertFile: string;
  /** Its PKCS#8 key: `expired.key`. */
  expiredKey: string;
  expiredKeyFile: string;
}

/** The common name of the client certificate. */
const CLIENT_COMMON_NAME = "tcp-pool-proxy test client (throwaway)";

/**
 * Makes a fresh throwaway PKI and writes `ca.crt`, `ca.key`, `server.crt`, `server.key`,
 * `client.crt`, `client.key`, `other-ca.crt`, `other-ca.key`, `other-server.crt`,
 * `other-server.key`, `expired.crt` and `expired.key` into `dir` (created if missing; keys with
 * mode 0600). Certificates are PEM, keys PKCS#8 PEM (`BEGIN PRIVATE KEY`), all ECDSA P-256 with
 * SHA-256. Needs `--allow-write` for `dir`.
 *
 * @returns Each file's PEM text and path.
 * @throws {Deno.errors.NotCapable} without write permission for `dir`, or the error of the
 * failed write.
 */
export async function makeTestCerts(dir: string): Promise<TestCerts> {
  const now = Date.now();
  const notBefore = new Date(now - HOUR_MS);
  const notAfter = new Date(now + 48 * HOUR_MS);
  const serverNames = { dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] };

  const caKey = await newKey();
  const ca = await issue({
    commonName: "tcp-pool-proxy test CA (throwaway)",
    key: caKey,
    notBefore,
    notAfter,
    kind: "ca",
  });
  const server = await issue({
    commonName: "localhost (throwaway)",
    key: await newKey(),
    notBefore,
    notAfter,
    kind: "server",
    ...serverNames,
  }, ca);
  const client = await issue({
    commonName: CLIENT_COMMON_NAME,
    key: await newKey(),
    notBefore,
    notAfter,
    kind: "client",
  }, ca);
  const otherCa = await issue({
    commonName: "another test CA (throwaway, trusted by nobody)",
    key: await newKey(),
    notBefore,
    notAfter,
    kind: "ca",
  });
  const otherServer = await issue({
    commonName: "localhost (throwaway, other CA)",
    key: await newKey(),
    notBefore,
    notAfter,
    kind: "server",
    ...serverNames,
  }, otherCa);
  const expired = await issue({
    commonName: "localhost (throwaway, expired)",
    key: await newKey(),
    notBefore: new Date("2020-01-01T00:00:00Z"),
    notAfter: new Date("2020-01-02T00:00:00Z"),
    kind: "server",
    ...serverNames,
  }, ca);

  await Deno.mkdir(dir, { recursive: true });
  const write = async (name: string, text: string, mode: number): Promise<string> => {
    const path = `${dir}/${name}`;
    await Deno.writeTextFile(path, text, { mode });
    return path;
  };
  const writeCert = (name: string, issued: Issued) => {
    const text = certificatePem(issued);
    return write(`${name}.crt`, text, 0o644).then((path) => ({ text, path }));
  };
  const writeKey = async (name: string, issued: Issued) => {
    const text = await privateKeyPem(issued.key);
    return { text, path: await write(`${name}.key`, text, 0o600) };
  };
  const files = {
    ca: await writeCert("ca", ca),
    caKey: await writeKey("ca", ca),
    server: await writeCert("server", server),
    serverKey: await writeKey("server", server),
    client: await writeCert("client", client),
    clientKey: await writeKey("client", client),
    otherCa: await writeCert("other-ca", otherCa),
    otherCaKey: await writeKey("other-ca", otherCa),
    otherServer: await writeCert("other-server", otherServer),
    otherServerKey: await writeKey("other-server", otherServer),
    expired: await writeCert("expired", expired),
    expiredKey: await writeKey("expired", expired),
  };
  return {
    dir,
    ca: files.ca.text,
    caFile: files.ca.path,
    serverCert: files.server.text,
    serverCertFile: files.server.path,
    serverKey: files.serverKey.text,
    serverKeyFile: files.serverKey.path,
    clientCert: files.client.text,
    clientCertFile: files.client.path,
    clientKey: files.clientKey.text,
    clientKeyFile: files.clientKey.path,
    otherCa: files.otherCa.text,
    otherCaFile: files.otherCa.path,
    otherServerCert: files.otherServer.text,
    otherServerCertFile: files.otherServer.path,
    otherServerKey: files.otherServerKey.text,
    otherServerKeyFile: files.otherServerKey.path,
    expiredCert: files.expired.text,
    expiredCertFile: files.expired.path,
    expiredKey: files.expiredKey.text,
    expiredKeyFile: files.expiredKey.path,
  };
}

if (import.meta.main) {
  const usage = "usage: deno run --allow-write tests/make_test_certs.ts DIR";
  const [dir, ...extra] = Deno.args;
  if (dir === undefined || dir === "" || dir.startsWith("-") || extra.length > 0) {
    console.error(usage);
    Deno.exit(2);
  }
  try {
    await makeTestCerts(dir);
  } catch (error) {
    console.error(
      `make_test_certs: cannot write ${JSON.stringify(dir)}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
    Deno.exit(1);
  }
  console.log(dir);
}
