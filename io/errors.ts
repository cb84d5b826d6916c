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
