/**
 * The one error type flashlm throws for bad input, bad files and failed I/O.
 *
 * Every message is one readable line that names the file (when there is one) and
 * what is wrong with it, so the CLI can print it as is and exit non-zero.
 *
 * @module
 */

/** What kind of failure a {@linkcode FlashlmError} reports. */
export type FlashlmErrorKind =
  /** A file's bytes are not what its format says (header, offsets, checksums, truncation). */
  | "format"
  /** A config or model description is inconsistent or unsupported. */
  | "config"
  /** Reading or writing failed at the operating-system level. */
  | "io"
  /** The user asked for something impossible (bad flag, bad number, prompt too long). */
  | "usage";

/** Options of the {@linkcode FlashlmError} constructor. */
export interface FlashlmErrorOptions {
  /** The file the problem is in, if any. It is put in front of the message. */
  file?: string;
  /** What kind of failure this is; defaults to `"format"`. */
  kind?: FlashlmErrorKind;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * A clear, one-line error about bad input or failed I/O.
 *
 * @example Throwing and printing one
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashlmError } from "./errors.ts";
 * const err = new FlashlmError("header length 9e15 is larger than the file", {
 *   file: "model.safetensors",
 * });
 * assert(err.message === "model.safetensors: header length 9e15 is larger than the file");
 * ```
 */
export class FlashlmError extends Error {
  /** The file the problem is in, if any. */
  readonly file: string | undefined;
  /** What kind of failure this is. */
  readonly kind: FlashlmErrorKind;

  /** Make an error; `options.file` is prefixed to the message. */
  constructor(message: string, options: FlashlmErrorOptions = {}) {
    super(options.file ? `${options.file}: ${message}` : message, { cause: options.cause });
    this.name = "FlashlmError";
    this.file = options.file;
    this.kind = options.kind ?? "format";
  }
}

/**
 * `value` as short one-line JSON for an error message: never throws, cuts long
 * values, and so keeps every error one line whatever a file holds.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { showValue } from "./errors.ts";
 * assert.equal(showValue("a\nb"), '"a\\nb"');
 * assert.ok(showValue("x".repeat(500)).length < 70);
 * ```
 */
export function showValue(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "[...]" : "{...}"; // nested too deep to print
  }
  return text.length > 60 ? `${text.slice(0, 60)}...` : text;
}

/**
 * A failed system call as a {@linkcode FlashlmError} of kind "io": `<what>: <the system's
 * message>`, naming `path`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ioError } from "./errors.ts";
 * const e = ioError("cannot open", "m.bin", new Error("No such file or directory (os error 2)"));
 * assert.equal(e.message, "m.bin: cannot open: No such file or directory (os error 2)");
 * assert.equal(e.kind, "io");
 * ```
 */
export function ioError(what: string, path: string, cause: unknown): FlashlmError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new FlashlmError(`${what}: ${detail}`, { file: path, kind: "io", cause });
}

/** What to tell the user for each operating-system error code flashlm expects to meet. */
const OS_ADVICE: Record<string, string> = {
  ENOSPC: "no space left on device: free space or write elsewhere",
  EDQUOT: "disk quota exceeded: free space or write elsewhere",
  EROFS: "read-only file system: write elsewhere",
  EACCES: "permission denied: check the file's and its directory's permissions, or write elsewhere",
  EPERM: "operation not permitted: check permissions, or write elsewhere",
  EMFILE: "too many open files: raise the limit (ulimit -n) or close other programs",
  ENFILE: "too many open files in the system: close other programs",
  EPIPE: "broken pipe: the reader went away",
  ENOMEM: "out of memory: try a smaller --memory budget or close other programs",
  EIO: "input/output error: the disk may be failing",
};

/** `(os error N)` numbers Linux and macOS share. */
const COMMON_ERRNO: Record<number, string> = {
  1: "EPERM",
  5: "EIO",
  12: "ENOMEM",
  13: "EACCES",
  23: "ENFILE",
  24: "EMFILE",
  28: "ENOSPC",
  30: "EROFS",
  32: "EPIPE",
};

/** The `(os error N)` numbers of Linux and macOS that Deno leaves without a `code`. */
const ERRNO: Record<string, Record<number, string>> = {
  linux: { ...COMMON_ERRNO, 122: "EDQUOT" },
  darwin: { ...COMMON_ERRNO, 69: "EDQUOT" },
};

/**
 * The errno name (`"ENOSPC"`, `"EPIPE"`, …) of an operating-system error, or `undefined`
 * when `err` is not one: from its `code`, else from the `(os error N)` in its message.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { osErrorCode } from "./errors.ts";
 * assert.equal(osErrorCode(new Error("No space left on device (os error 28)")), "ENOSPC");
 * assert.equal(osErrorCode(new Error("something else")), undefined);
 * ```
 */
export function osErrorCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && code.startsWith("E")) return code;
  const errno = /\(os error (\d+)\)/.exec(err.message)?.[1];
  if (errno === undefined) return undefined;
  const table = ERRNO[typeof Deno !== "undefined" ? Deno.build?.os ?? "linux" : "linux"] ??
    ERRNO.linux;
  return table[Number(errno)];
}

/**
 * `err` as a {@linkcode FlashlmError} of kind "io" naming `path` (the user's path, not a
 * temporary file) and what to do, if it is an operating-system condition a user can meet —
 * disk full, quota, read-only, permission, too many open files, broken pipe, a missing
 * directory, or failing to allocate memory; otherwise `undefined`. A FlashlmError is
 * returned unchanged.
 *
 * @param err What was thrown.
 * @param path The file the user named, put in front of the message (default: the path in
 *   Deno's message, if any).
 * @param missing What a missing file (ENOENT) means here, e.g. "its directory does not exist".
 * @returns The error to report, or `undefined` when `err` is not such a condition.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { osError } from "./errors.ts";
 * const full = osError(new Error("No space left on device (os error 28)"), "out.flm");
 * assert.equal(full?.message, "out.flm: no space left on device: free space or write elsewhere");
 * assert.equal(full?.kind, "io");
 * assert.equal(osError(new RangeError("Array buffer allocation failed"))?.kind, "io");
 * assert.equal(osError(new TypeError("x is undefined"), "out.flm"), undefined);
 * ```
 */
export function osError(
  err: unknown,
  path?: string,
  missing = "no such file or directory",
): FlashlmError | undefined {
  if (err instanceof FlashlmError) return err;
  if (!(err instanceof Error)) return undefined;
  // Without a path, the one Deno names (`…: open '/x/y'`), if any.
  const file = path ?? /: \w+ '([^']+)'$/.exec(err.message)?.[1];
  if (
    err instanceof RangeError && /allocation failed|out of memory|Invalid array buffer length/i
      .test(err.message)
  ) {
    return new FlashlmError(`out of memory (${err.message}): ${OS_ADVICE.ENOMEM.slice(15)}`, {
      file,
      kind: "io",
      cause: err,
    });
  }
  const code = osErrorCode(err);
  if (code === "ENOENT") return new FlashlmError(missing, { file, kind: "io", cause: err });
  const advice = code !== undefined ? OS_ADVICE[code] : undefined;
  return advice !== undefined
    ? new FlashlmError(advice, { file, kind: "io", cause: err })
    : undefined;
}

/**
 * Whether `err` is a broken pipe (the reader of our output went away).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { isBrokenPipe } from "./errors.ts";
 * assert.ok(isBrokenPipe(new Error("Broken pipe (os error 32)")));
 * assert.ok(!isBrokenPipe(new Error("No space left on device (os error 28)")));
 * ```
 */
export function isBrokenPipe(err: unknown): boolean {
  // (Deno's class where there is one: the Bun shim's Deno may lack it, and Node's errors carry `code`.)
  const brokenPipe = typeof Deno !== "undefined" ? Deno.errors?.BrokenPipe : undefined;
  return (brokenPipe !== undefined && err instanceof brokenPipe) || osErrorCode(err) === "EPIPE";
}
