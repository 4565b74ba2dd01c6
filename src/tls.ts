/**
 * Certificate files, read and checked at start-up and re-read when they change.
 *
 * From the `--upstream-*` flags, {@link upstreamTlsOf} makes the TLS context the pool dials with;
 * from `--tls-cert`/`--tls-key`, {@link listenerTlsOf} makes the one the listener serves. At
 * start-up, a missing or unreadable file, a CA file with no certificate in it, a certificate or
 * key that does not parse, or a key that does not match its certificate is a {@link ConfigError}
 * naming the flag (exit 2), never a failure at the first session.
 *
 * {@link TlsFiles.reloadIfChanged} (called every `--tls-reload-interval` by a
 * {@link CertificateReloader}) looks at each file's modification time and size, which costs a
 * `stat` per file, and when one changed reads and checks them all again: new connections get the
 * new context, connections made before keep theirs. A change that does not pass the checks (a
 * certificate written before its key) is logged once and the previous context stays.
 *
 * @module
 */

import tls from "node:tls";
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { describeError } from "./_io.ts";
import { ConfigError, type ProxyConfig } from "./config.ts";
import type { UpstreamTls } from "./dial.ts";
import { reportUnexpected } from "./failsafe.ts";
import { getProxyLogger } from "./logging.ts";

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
const PEM_PRIVATE_KEY =
  /-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----[\s\S]+?-----END \1-----/;

/** Elliptic curves the TLS engine (rustls) signs with. */
const SIGNING_CURVES = new Set(["prime256v1", "secp384r1", "secp521r1"]);

/** The RSA key sizes the TLS engine signs with, in bits (16384 fails in Deno 2.9.6). */
const RSA_BITS = { min: 2048, max: 8192 };

/** One file a flag names. */
interface FlagFile {
  flag: string;
  path: string;
}

/** What the files of one TLS side hold, parsed and checked (`node:tls` context options). */
export interface TlsMaterial {
  ca?: string[];
  cert?: string;
  key?: string;
}

/**
 * The certificate files of one side (the upstream's or the listener's) and the TLS context made
 * from them; {@link reloadIfChanged} swaps the context when the files change.
 */
export class TlsFiles {
  /** What these files are for, in logs: `upstream` or `listener`. */
  readonly side: string;
  readonly #files: FlagFile[];
  readonly #build: (material: TlsMaterial) => tls.SecureContext;
  /** The flag a context that cannot be built is blamed on. */
  readonly #blame: string;
  readonly #load: () => TlsMaterial;
  #material: TlsMaterial;
  #context: tls.SecureContext;
  #stamps: string;
  readonly #onReload: (() => void)[] = [];
  /** The stamps of a change that failed its checks, so it is reported once. */
  #rejectedStamps: string | undefined;
  #reloads = 0;

  constructor(
    side: string,
    files: FlagFile[],
    load: () => TlsMaterial,
    build: (material: TlsMaterial) => tls.SecureContext,
  ) {
    this.side = side;
    this.#files = files;
    this.#load = load;
    this.#build = build;
    this.#blame = files.at(-1)?.flag ?? `--${side}-tls`;
    this.#stamps = stampsOf(files);
    this.#material = load();
    this.#context = this.#buildChecked(this.#material);
  }

  /** The context made from `material`; what the runtime refuses is a {@link ConfigError}. */
  #buildChecked(material: TlsMaterial): tls.SecureContext {
    try {
      return this.#build(material);
    } catch (error) {
      throw new ConfigError(
        `${this.#blame}: the TLS engine refuses these files: ${describeError(error)}`,
        this.#blame,
      );
    }
  }

  /** What the files hold now (the options a `node:tls` server takes). */
  get material(): TlsMaterial {
    return this.#material;
  }

  /** Calls `listener` after each successful reload. */
  onReload(listener: () => void): void {
    this.#onReload.push(listener);
  }

  /** The context new connections use. */
  get context(): tls.SecureContext {
    return this.#context;
  }

  /** How many times the files were reloaded since start-up. */
  get reloads(): number {
    return this.#reloads;
  }

  /** Whether any file is watched. */
  get watching(): boolean {
    return this.#files.length > 0;
  }

  /**
   * Re-reads the files if any changed (modification time, size, or gone); `"reloaded"` when the
   * new context is in use, `"rejected"` when the new files failed their checks (logged once per
   * change; the previous context stays), `"unchanged"` otherwise.
   */
  reloadIfChanged(): "unchanged" | "reloaded" | "rejected" {
    const stamps = stampsOf(this.#files);
    if (stamps === this.#stamps || stamps === this.#rejectedStamps) return "unchanged";
    const log = getProxyLogger("tls");
    try {
      const material = this.#load();
      this.#context = this.#buildChecked(material);
      this.#material = material;
    } catch (error) {
      this.#rejectedStamps = stamps;
      log.warn(
        "{side} certificate files changed but were not loaded: {reason}; still using the previous ones",
        {
          side: this.side,
          reason: describeError(error),
        },
      );
      return "rejected";
    }
    this.#stamps = stamps;
    this.#rejectedStamps = undefined;
    this.#reloads++;
    log.info("{side} certificate files reloaded ({files}); new connections use them", {
      side: this.side,
      files: this.#files.map((file) => file.path).join(", "),
    });
    for (const listener of this.#onReload) {
      try {
        listener();
      } catch (error) {
        reportUnexpected(`applying reloaded ${this.side} certificate files`, error);
      }
    }
    return "reloaded";
  }
}

/** The upstream's TLS: its files, the context they make, and the name to verify. */
export class UpstreamTlsFiles extends TlsFiles implements UpstreamTls {
  /** `--upstream-sni`, if given. */
  readonly serverName?: string;

  constructor(
    files: FlagFile[],
    load: () => TlsMaterial,
    serverName: string | undefined,
  ) {
    super("upstream", files, load, (material) =>
      tls.createSecureContext({
        // A CA list replaces the root store, so only those CAs are trusted.
        ca: material.ca,
        cert: material.cert,
        key: material.key,
      }));
    if (serverName !== undefined) this.serverName = serverName;
  }

  /** The context for the next dial. */
  secureContext(): tls.SecureContext {
    return this.context;
  }
}

/**
 * The TLS to the upstream that `config` asks for, its files read and checked; `undefined`
 * without `--upstream-tls`.
 *
 * @throws {ConfigError} naming the flag, for a file that cannot be read or does not hold what it
 * should, or a key that does not match its certificate.
 */
export function upstreamTlsOf(
  config: Pick<
    ProxyConfig,
    "upstreamTls" | "upstreamSni" | "upstreamCa" | "upstreamCert" | "upstreamKey"
  >,
): UpstreamTlsFiles | undefined {
  if (!config.upstreamTls) return undefined;
  const ca = config.upstreamCa === undefined
    ? undefined
    : { flag: "--upstream-ca", path: config.upstreamCa };
  const pair = config.upstreamCert === undefined || config.upstreamKey === undefined ? undefined : {
    cert: { flag: "--upstream-cert", path: config.upstreamCert },
    key: { flag: "--upstream-key", path: config.upstreamKey },
  };
  const files = [ca, pair?.cert, pair?.key].filter((file) => file !== undefined);
  const load = (): TlsMaterial => ({
    ...(ca === undefined ? {} : { ca: readCaFile(ca) }),
    ...(pair === undefined ? {} : readKeyPair(pair.cert, pair.key)),
  });
  return new UpstreamTlsFiles(files, load, config.upstreamSni);
}

/**
 * The listener's TLS (`--tls-cert`, `--tls-key`), read and checked; `undefined` without them.
 *
 * @throws {ConfigError} as {@link upstreamTlsOf}.
 */
export function listenerTlsOf(
  config: Pick<ProxyConfig, "tlsCert" | "tlsKey">,
): TlsFiles | undefined {
  if (config.tlsCert === undefined || config.tlsKey === undefined) return undefined;
  const cert = { flag: "--tls-cert", path: config.tlsCert };
  const key = { flag: "--tls-key", path: config.tlsKey };
  return new TlsFiles(
    "listener",
    [cert, key],
    () => readKeyPair(cert, key),
    (material) => tls.createSecureContext({ cert: material.cert, key: material.key }),
  );
}

/**
 * Checks every file of `sides` every `intervalMs` and reloads those that changed; the timer does
 * not keep the process alive. {@link stop} ends it.
 */
export class CertificateReloader {
  readonly #timer: ReturnType<typeof setInterval> | undefined;

  constructor(sides: (TlsFiles | undefined)[], intervalMs: number) {
    const watched = sides.filter((side) => side !== undefined && side.watching) as TlsFiles[];
    if (watched.length === 0 || intervalMs <= 0) return;
    const timer = setInterval(() => {
      for (const side of watched) {
        try {
          side.reloadIfChanged();
        } catch (error) {
          reportUnexpected(`checking the ${side.side} certificate files`, error);
        }
      }
    }, intervalMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Stops checking. Idempotent. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }
}

/** The PEM certificates of the file a flag names, at least one. */
function readCertificates(file: FlagFile): [string, ...string[]] {
  const [first, ...rest] = readFlagFile(file).match(PEM_CERTIFICATE) ?? [];
  if (first === undefined) {
    throw fileError(file, "holds no PEM certificate");
  }
  return [first, ...rest];
}

/** The CA certificates of an `--upstream-ca` file, each parsed. */
function readCaFile(file: FlagFile): string[] {
  const certs = readCertificates(file);
  for (const cert of certs) parseCertificate(file, cert);
  return certs;
}

/** A certificate (chain) and its key, each parsed, the key checked against the certificate. */
function readKeyPair(certFile: FlagFile, keyFile: FlagFile): TlsMaterial {
  const certs = readCertificates(certFile);
  const certificate = parseCertificate(certFile, certs[0]);
  const chain = certs.join("\n");
  // The key may share its file with the certificate (HAProxy's habit): only its block is used.
  const key = PEM_PRIVATE_KEY.exec(readFlagFile(keyFile))?.[0];
  if (key === undefined) {
    throw fileError(keyFile, "holds no PEM private key");
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw fileError(
      keyFile,
      `holds no private key this runtime reads (${describeError(error)})`,
    );
  }
  const unusable = unusableKey(privateKey);
  if (unusable !== undefined) {
    throw fileError(
      keyFile,
      `holds ${unusable}; the TLS engine signs with RSA of 2048 to 8192 bits, ECDSA P-256, P-384 or P-521, or Ed25519`,
    );
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw fileError(
      keyFile,
      `is not the key of the certificate in ${JSON.stringify(certFile.path)} (${certFile.flag})`,
    );
  }
  return { cert: chain, key };
}

/** Why the TLS engine could not sign with `key` (e.g. `an EC key on curve secp256k1`), if so. */
function unusableKey(key: KeyObject): string | undefined {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === "rsa") {
    const bits = details.modulusLength ?? 0;
    return bits >= RSA_BITS.min && bits <= RSA_BITS.max ? undefined : `an RSA key of ${bits} bits`;
  }
  if (type === "ec") {
    const curve = details.namedCurve ?? "unknown";
    return SIGNING_CURVES.has(curve) ? undefined : `an EC key on curve ${curve}`;
  }
  if (type === "ed25519") return undefined;
  return `a key of type ${type ?? "unknown"}`;
}

function parseCertificate(file: FlagFile, pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw fileError(file, `holds a certificate that does not parse (${describeError(error)})`);
  }
}

/**
 * What identifies each file's content without reading it, as one string: its device and inode
 * (a file replaced by a rename, or a symlink pointed elsewhere, is another file even with the
 * same size and times, as certificates of one kind often are), change and modification times,
 * and size. A file gone is stamped so.
 */
function stampsOf(files: FlagFile[]): string {
  return files.map((file) => {
    try {
      const info = Deno.statSync(file.path);
      return `${info.dev}:${info.ino ?? 0}:${info.ctime?.getTime() ?? 0}:${
        info.mtime?.getTime() ?? 0
      }:${info.size}`;
    } catch {
      return "gone";
    }
  }).join("|");
}

/** What is wrong with the file a flag names, as one line: `--flag: "path" <what>`. */
function fileError(file: FlagFile, what: string): ConfigError {
  return new ConfigError(`${file.flag}: ${JSON.stringify(file.path)} ${what}`, file.flag);
}

/**
 * The largest certificate, key or CA file read. A bundle of every public root CA is about
 * 200 KiB; a device or a wrong path to a huge file is refused instead of read for ever.
 */
export const MAX_TLS_FILE_BYTES = 1024 * 1024;

/** Reads the file a flag names, as text; every failure is one line naming the flag. */
function readFlagFile(file: FlagFile): string {
  try {
    const info = Deno.statSync(file.path);
    if (!info.isFile) throw fileError(file, "is not a regular file");
    if (info.size > MAX_TLS_FILE_BYTES) {
      throw fileError(
        file,
        `is ${info.size} bytes, over the ${MAX_TLS_FILE_BYTES} a PEM file may be`,
      );
    }
    return Deno.readTextFileSync(file.path);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const shown = JSON.stringify(file.path);
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ? `not allowed to read it (run with --allow-read=${file.path})`
      : describeError(error);
    throw new ConfigError(`${file.flag}: cannot read ${shown}: ${why}`, file.flag);
  }
}
