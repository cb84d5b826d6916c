/**
 * A strict command-line parser: unknown flags, missing values and bad numbers are
 * one-line errors, never ignored. The parsed flags are typed from their specs: an
 * `{ type: "integer" }` flag reads as `number | undefined`, one with a `default` as
 * `number`, a boolean as `boolean`, a string with `choices` as the union of them.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// Flag specs and the types they give

/** How a flag's value is read. */
export type FlagType = FlagSpec["type"];

/** What every flag has. */
interface FlagBase {
  /** One-line description for `--help`. */
  help: string;
  /**
   * The default `--help` shows when the command (or the library it calls) decides it:
   * the flag then reads as undefined when absent.
   */
  shownDefault?: string;
}

/** A flag whose value is text. */
export interface StringFlagSpec extends FlagBase {
  /** Value type. */
  type: "string";
  /** Allowed values. */
  choices?: readonly string[];
  /** Value when absent (parseArgs applies it, `--help` shows it). */
  default?: string;
  /** The flag may be given several times; its value is the list of them (empty when absent). */
  multiple?: true;
}

/** A flag whose value is a number (`integer`: a whole one). */
export interface NumberFlagSpec extends FlagBase {
  /** Value type. */
  type: "number" | "integer";
  /** Smallest allowed number. */
  min?: number;
  /** Largest allowed number. */
  max?: number;
  /** Value when absent (parseArgs applies it, `--help` shows it). */
  default?: number;
}

/** A flag that is on or off: `--name`, `--name=false`. */
export interface BooleanFlagSpec extends FlagBase {
  /** Value type. */
  type: "boolean";
  /** Value when absent: false unless given (its help says what absence means). */
  default?: boolean;
}

/** One flag of a command. */
export type FlagSpec = StringFlagSpec | NumberFlagSpec | BooleanFlagSpec;

/** The flags of a command by name (without dashes). */
export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

/** The value type of one flag: boolean, number, the union of its choices, or string. */
export type FlagValue<S extends FlagSpec> = S extends { type: "boolean" } ? boolean
  : S extends { multiple: true } ? string[]
  : S extends { type: "number" | "integer" } ? number
  : S extends { choices: readonly (infer C)[] } ? C
  : string;

/** The parsed flags of `F`: undefined when absent, unless boolean or with a default. */
export type ParsedFlags<F extends FlagSpecs> = {
  -readonly [K in keyof F]: F[K] extends { type: "boolean" } | { default: unknown } | {
    multiple: true;
  } ? FlagValue<F[K]>
    : FlagValue<F[K]> | undefined;
};

/** A parsed command line. */
export interface ParsedArgs<F extends FlagSpecs> {
  /** Positional arguments in order. */
  positional: string[];
  /** Flag values by name (without dashes). */
  flags: ParsedFlags<F>;
}

// ---------------------------------------------------------------------------
// Parsing

/**
 * Parse `argv` against `flags`. Accepts `--name value`, `--name=value`, and bare
 * `--name` for booleans; `--` ends flags. Absent flags get their `default` (booleans:
 * false).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseArgs } from "./args.ts";
 * const args = parseArgs(["model.flm", "--max-tokens", "8", "--greedy"], {
 *   "max-tokens": { type: "integer", help: "tokens", min: 0 },
 *   greedy: { type: "boolean", help: "argmax" },
 *   seed: { type: "integer", help: "random seed", default: 1 },
 *   mode: { type: "string", help: "mode", choices: ["dense", "naive"] },
 *   stop: { type: "string", help: "stop string", multiple: true },
 * });
 * assert.equal(args.positional[0], "model.flm");
 * const tokens: number | undefined = args.flags["max-tokens"];
 * const seed: number = args.flags.seed;
 * const mode: "dense" | "naive" | undefined = args.flags.mode;
 * assert.deepEqual([tokens, seed, mode, args.flags.greedy], [8, 1, undefined, true]);
 * const stops: string[] = args.flags.stop;
 * assert.deepEqual(stops, []);
 * const twice = parseArgs(["--stop", "a", "--stop=b"], { stop: { type: "string", help: "", multiple: true } });
 * assert.deepEqual(twice.flags.stop, ["a", "b"]);
 * ```
 */
export function parseArgs<const F extends FlagSpecs>(argv: string[], flags: F): ParsedArgs<F> {
  const positional: string[] = [];
  const values: Record<string, string | number | boolean | string[]> = {};
  for (const [name, spec] of Object.entries(flags)) {
    if (spec.type === "string" && spec.multiple) values[name] = [];
    else if (spec.default !== undefined) values[name] = spec.default;
    else if (spec.type === "boolean") values[name] = false;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--") || arg === "-") {
      if (arg.startsWith("-") && arg !== "-" && !/^-\d/.test(arg)) {
        throw usage(`unknown option ${shown(arg)} (options are written --name)`);
      }
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = Object.hasOwn(flags, name) ? flags[name] : undefined;
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
    const value = convert(name, raw, spec);
    const list = values[name];
    if (spec.type === "string" && spec.multiple && Array.isArray(list)) list.push(String(value));
    else values[name] = value;
  }
  // Each value was converted by its own spec (or is its spec's default): the one place
  // the runtime record meets the type computed from the specs.
  return { positional, flags: values as ParsedFlags<F> };
}

// ---------------------------------------------------------------------------
// Values and errors

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

// ---------------------------------------------------------------------------
// Help

/**
 * The `--help` lines of a set of flags: name, value type or choices, help and default
 * (a boolean's help says what its absence means, so its default is not shown).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatFlags } from "./args.ts";
 * const text = formatFlags({
 *   seed: { type: "integer", help: "random seed", default: 0 },
 *   context: { type: "integer", help: "KV cache length", shownDefault: "model maximum" },
 * });
 * assert.equal(
 *   text,
 *   "  --seed <integer>     random seed (default 0)\n" +
 *     "  --context <integer>  KV cache length (default model maximum)",
 * );
 * ```
 */
export function formatFlags(flags: FlagSpecs): string {
  const rows = Object.entries(flags).map(([name, spec]) => {
    const value = spec.type === "boolean"
      ? ""
      : spec.type === "string" && spec.choices
      ? ` <${spec.choices.join("|")}>`
      : spec.type === "string" && spec.multiple
      ? ` <string>…`
      : ` <${spec.type}>`;
    const shownDefault = spec.type === "boolean"
      ? spec.shownDefault
      : spec.shownDefault ?? (spec.default !== undefined ? String(spec.default) : undefined);
    const def = shownDefault !== undefined ? ` (default ${shownDefault})` : "";
    return [`  --${name}${value}`, spec.help + def];
  });
  // The descriptions start in one column, past the option names that fit; a longer name (a
  // long list of choices) has its description on the next line, in the same column.
  const fitting = rows.map((r) => r[0].length).filter((n) => n <= MAX_NAME_COLUMN);
  const width = Math.max(0, ...fitting) + 2;
  return rows.map(([a, b]) => {
    const text = wrap(b, HELP_WIDTH - width, width);
    return a.length + 2 <= width ? a.padEnd(width) + text : `${a}\n${" ".repeat(width)}${text}`;
  }).join("\n");
}

/** Option names (with their value) longer than this put their description on the next line. */
const MAX_NAME_COLUMN = 36;

/** Lines of `--help` are wrapped to this many columns. */
const HELP_WIDTH = 100;

/**
 * `text` wrapped at spaces to lines of at most `columns` (at least 20; a longer word stays
 * whole), the lines after the first indented by `indent` spaces.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { wrap } from "./args.ts";
 * assert.equal(wrap("aaaa bbbb cccc dddd eeee", 20, 2), "aaaa bbbb cccc dddd\n  eeee");
 * assert.equal(wrap("short", 80, 4), "short");
 * ```
 */
export function wrap(text: string, columns: number, indent: number): string {
  const width = Math.max(columns, 20);
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  return lines.join("\n" + " ".repeat(indent));
}
