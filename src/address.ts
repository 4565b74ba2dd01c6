/**
 * `HOST:PORT` addresses as the command line writes them.
 *
 * IPv4 addresses and host names are written as is (`127.0.0.1:8848`,
 * `db.internal:5432`); IPv6 addresses go in brackets (`[::1]:8848`), and the
 * parsed {@link HostPort} holds the hostname without them, ready for
 * `Deno.listen` and `Deno.connect`.
 *
 * @example
 * ```ts
 * import { formatHostPort, parseHostPort } from "./address.ts";
 *
 * const hp = parseHostPort("[::1]:8848", { allowPortZero: false });
 * // hp is { hostname: "::1", port: 8848 }
 * console.log(formatHostPort(hp)); // "[::1]:8848"
 * ```
 *
 * @module
 */

/** A host and a TCP port, as `Deno.listen` and `Deno.connect` take them. */
export interface HostPort {
  /** An IPv4 address, an IPv6 address without brackets, or a host name. */
  hostname: string;
  /** The TCP port, 0 to 65535 (0 asks the system for a free port when listening). */
  port: number;
}

/** Options for {@link parseHostPort}. */
export interface ParseHostPortOptions {
  /** Whether port 0 is accepted (it is for a listen address: the system picks a free port). */
  allowPortZero: boolean;
}

/**
 * Thrown by {@link parseHostPort} for text that is not an accepted `HOST:PORT`.
 *
 * The message starts with the offending text in quotes and says what is
 * accepted, so a caller can prefix it with a flag name.
 */
export class AddressError extends Error {
  /** The text that was rejected, exactly as given. */
  readonly text: string;

  /**
   * Builds the error; the message is the quoted text followed by the problem.
   *
   * @param text The rejected text.
   * @param problem What is wrong with it, e.g. `has no port`.
   */
  constructor(text: string, problem: string) {
    super(`${JSON.stringify(text)} ${problem}`);
    this.name = "AddressError";
    this.text = text;
  }
}

const EXAMPLE = "e.g. 127.0.0.1:8848, localhost:8848 or [::1]:8848";
const NAME_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/;
const DOTTED_NUMBERS_RE = /^[0-9.]+$/;
const IPV4_RE = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const IPV6_CHARS_RE = /^[0-9A-Fa-f:.]+$/;

/**
 * Parses `HOST:PORT`: `127.0.0.1:8848`, `localhost:80`, `db.internal:5432`,
 * or an IPv6 address in brackets, `[::1]:8848`. IPv6 zone identifiers
 * (`[fe80::1%eth0]:1`) are not supported.
 *
 * @param text The address, without spaces.
 * @param opts Whether port 0 is accepted; see {@link ParseHostPortOptions}.
 * @returns The hostname (IPv6 without brackets) and the port.
 * @throws {AddressError} for empty text, whitespace, a missing or empty host,
 * a missing port, a port that is not a decimal integer or is out of range
 * (1 to 65535, or 0 to 65535 with `allowPortZero`), an IPv6 address without
 * brackets, or a host that is neither an IP address nor a host name.
 *
 * @example
 * ```ts
 * import { parseHostPort } from "./address.ts";
 *
 * parseHostPort("0.0.0.0:0", { allowPortZero: true }); // { hostname: "0.0.0.0", port: 0 }
 * ```
 */
export function parseHostPort(text: string, opts: ParseHostPortOptions): HostPort {
  if (text === "") throw new AddressError(text, `is empty; expected HOST:PORT, ${EXAMPLE}`);
  if (/\s/.test(text)) throw new AddressError(text, "contains whitespace");
  const { host, portText } = text.startsWith("[") ? splitBracketed(text) : splitPlain(text);
  return { hostname: host, port: parsePort(text, portText, opts.allowPortZero) };
}

function splitBracketed(text: string): { host: string; portText: string } {
  const close = text.indexOf("]");
  if (close === -1) throw new AddressError(text, `has no closing bracket; ${EXAMPLE}`);
  const host = text.slice(1, close);
  const rest = text.slice(close + 1);
  if (rest === "") {
    throw new AddressError(text, `has no port; expected [IPV6]:PORT, e.g. [::1]:8848`);
  }
  if (!rest.startsWith(":")) {
    throw new AddressError(text, `has ${JSON.stringify(rest)} after "]"; expected [IPV6]:PORT`);
  }
  if (host.includes("%")) {
    throw new AddressError(text, "has an IPv6 zone identifier (%...), which is not supported");
  }
  if (!isIPv6(host)) {
    throw new AddressError(
      text,
      `has ${
        JSON.stringify(host)
      } in brackets, which is not an IPv6 address; only IPv6 goes in brackets`,
    );
  }
  return { host, portText: rest.slice(1) };
}

function splitPlain(text: string): { host: string; portText: string } {
  const colon = text.lastIndexOf(":");
  if (colon === -1) throw new AddressError(text, `has no port; expected HOST:PORT, ${EXAMPLE}`);
  if (text.indexOf(":") !== colon) {
    throw new AddressError(
      text,
      "looks like an IPv6 address without brackets; IPv6 addresses need brackets, e.g. [::1]:8848",
    );
  }
  const host = text.slice(0, colon);
  if (host === "") {
    throw new AddressError(
      text,
      "has no host; e.g. 127.0.0.1:8848, or 0.0.0.0:8848 to listen on every IPv4 interface",
    );
  }
  if (!isHostName(host)) {
    throw new AddressError(
      text,
      `has host ${JSON.stringify(host)}, which is not an IP address or host name`,
    );
  }
  return { host, portText: text.slice(colon + 1) };
}

function parsePort(text: string, portText: string, allowPortZero: boolean): number {
  const lowest = allowPortZero ? 0 : 1;
  const range = `use ${lowest} to 65535`;
  if (portText === "") throw new AddressError(text, `has an empty port; ${range}`);
  if (!/^\d+$/.test(portText)) {
    throw new AddressError(
      text,
      `has port ${JSON.stringify(portText)}, which is not an integer; ${range}`,
    );
  }
  const port = Number(portText);
  if (port > 65535) {
    throw new AddressError(text, `has port ${portText}, which is out of range; ${range}`);
  }
  if (port < lowest) {
    throw new AddressError(text, `has port 0, which is not allowed here; ${range}`);
  }
  return port;
}

function isHostName(host: string): boolean {
  if (DOTTED_NUMBERS_RE.test(host)) return IPV4_RE.test(host);
  return host.length <= 253 && NAME_RE.test(host) && !host.includes("..");
}

function isIPv6(host: string): boolean {
  if (!host.includes(":") || !IPV6_CHARS_RE.test(host)) return false;
  try {
    // The WHATWG URL parser validates IPv6 literals exactly.
    new URL(`http://[${host}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Formats a {@link HostPort} as `HOST:PORT`, putting an IPv6 address (any
 * hostname with a colon) in brackets. The inverse of {@link parseHostPort}.
 *
 * @param hp The address.
 * @returns For example `127.0.0.1:8848` or `[::1]:8848`.
 *
 * @example
 * ```ts
 * import { formatHostPort } from "./address.ts";
 *
 * formatHostPort({ hostname: "::1", port: 8848 }); // "[::1]:8848"
 * ```
 */
export function formatHostPort(hp: HostPort): string {
  return hp.hostname.includes(":") ? `[${hp.hostname}]:${hp.port}` : `${hp.hostname}:${hp.port}`;
}
