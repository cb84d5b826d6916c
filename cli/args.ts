/**
 * A strict command-line parser: unknown flags, missing values and bad numbers are
 * one-line errors, never ignored.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

/** How a flag's value is read. */
export type FlagType = "string" | "number" | "integer" | "boolean";

/** One flag of a command. */
export interface FlagSpec {
  /** Value type. */
  type: FlagType;
  /** One-line description for `--help`. */
  help: string;
  /** Default shown in `--help` (the command applies it). */
  default?: string;
  /** Allowed values for strings. */
  choices?: readonly string[];
  /** Smallest allowed number. */
  min?: number;
  /** Largest allowed number. */
  max?: number;
}

/** A parsed command line. */
export interface ParsedArgs {
  /** Positional arguments in order. */
  positional: string[];
  /** Flag values by name (without dashes). */
  flags: Record<string, string | number | boolean>;
}

/**
 * Parse `argv` against `flags`. Accepts `--name value`, `--name=value`, and bare
 * `--name` for booleans; `--` ends flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseArgs } from "./args.ts";
 * const args = parseArgs(["model.flm", "--max-tokens", "8", "--greedy"], {
 *   "max-tokens": { type: "integer", help: "tokens", min: 0 },
 *   greedy: { type: "boolean", help: "argmax" },
 * });
 * assert(args.positional[0] === "model.flm" && args.flags["max-tokens"] === 8);
 * ```
 */
export function parseArgs(argv: string[], flags: Record<string, FlagSpec>): ParsedArgs {
  const out: ParsedArgs = { positional: [], flags: {} };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      out.positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--") || arg === "-") {
      if (arg.startsWith("-") && arg !== "-" && !/^-\d/.test(arg)) {
        throw usage(`unknown option ${shown(arg)} (options are written --name)`);
      }
      out.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = flags[name];
    if (!spec) {
      const known = Object.keys(flags).map((f) => "--" + f).join(", ");
      throw usage(`unknown option ${shown(`--${name}`)}${known ? ` (known: ${known})` : ""}`);
    }
    let raw: string;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else if (spec.type === "boolean") raw = "true";
    else {
      if (i + 1 >= argv.length) throw usage(`option --${name} needs a value`);
      raw = argv[++i];
    }
    out.flags[name] = convert(name, raw, spec);
  }
  return out;
}

function usage(message: string): FlashlmError {
  return new FlashlmError(message, { kind: "usage" });
}

/** A command-line word in an error message: as is when plain ASCII, else quoted (one line, cut). */
function shown(word: string): string {
  const text = /^[\x21-\x7e]*$/.test(word) ? word : JSON.stringify(word);
  return text.length > 60 ? `${text.slice(0, 60)}...` : text;
}

/** A value in an error message: always quoted, one line, cut. */
function quoted(raw: string): string {
  const text = JSON.stringify(raw);
  return text.length > 60 ? `${text.slice(0, 60)}..."` : text;
}

function convert(name: string, raw: string, spec: FlagSpec): string | number | boolean {
  switch (spec.type) {
    case "boolean":
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw usage(`option --${name} takes true or false, got ${quoted(raw)}`);
    case "string":
      if (spec.choices && !spec.choices.includes(raw)) {
        throw usage(
          `option --${name} must be one of ${spec.choices.join(", ")}, got ${quoted(raw)}`,
        );
      }
      return raw;
    case "number":
    case "integer": {
      const value = raw.trim() === "" ? NaN : Number(raw);
      if (!Number.isFinite(value)) {
        throw usage(`option --${name} needs a number, got ${quoted(raw)}`);
      }
      if (spec.type === "integer" && !Number.isSafeInteger(value)) {
        throw usage(`option --${name} needs a whole number, got ${quoted(raw)}`);
      }
      if (spec.min !== undefined && value < spec.min) {
        throw usage(`option --${name} must be at least ${spec.min}, got ${shown(raw)}`);
      }
      if (spec.max !== undefined && value > spec.max) {
        throw usage(`option --${name} must be at most ${spec.max}, got ${shown(raw)}`);
      }
      return value;
    }
  }
}

/**
 * The `--help` lines of a set of flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatFlags } from "./args.ts";
 * const text = formatFlags({ seed: { type: "integer", help: "random seed", default: "0" } });
 * assert(text.includes("--seed"));
 * ```
 */
export function formatFlags(flags: Record<string, FlagSpec>): string {
  const rows = Object.entries(flags).map(([name, spec]) => {
    const value = spec.type === "boolean"
      ? ""
      : spec.choices
      ? ` <${spec.choices.join("|")}>`
      : ` <${spec.type}>`;
    const def = spec.default !== undefined ? ` (default ${spec.default})` : "";
    return [`  --${name}${value}`, spec.help + def];
  });
  const width = Math.max(0, ...rows.map((r) => r[0].length)) + 2;
  return rows.map(([a, b]) => a.padEnd(width) + b).join("\n");
}
