/**
 * A child process for `logging_test.ts`: configures logging from its
 * arguments (`LEVEL FORMAT`), logs one record at each level, then prints
 * `isDebugEnabled()` to stdout.
 *
 * @module
 */

import type { LogFormat, LogLevel } from "../src/config.ts";
import { configureLogging, getProxyLogger, isDebugEnabled } from "../src/logging.ts";

const [level, format] = Deno.args as [LogLevel, LogFormat];
configureLogging({ level, format });
const log = getProxyLogger("session");
log.debug("debug record {id}", { id: 1 });
log.info("info record {id}", { id: 2 });
log.warn("warn record {text}", { text: "two\nlines" });
log.error("error record {id}", { id: 4 });
getProxyLogger().info("root record");
console.log(JSON.stringify({ debugEnabled: isDebugEnabled(), sessionDebug: isDebugEnabled(log) }));
