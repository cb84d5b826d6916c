/**
 * What the commands share: the command shape and its `--help` text, the flags every
 * command takes, the sparse-mode flags of generate, eval and inspect, and the output
 * helpers (text on stdout, progress and notes on stderr).
 *
 * @module
 */

import { RESIDENT_PRECISIONS } from "../core/weights.ts";
import { ON_CORRUPT } from "../core/bundle_check.ts";
import { type FlagSpecs, formatFlags, parseArgs, type ParsedFlags, wrap } from "./args.ts";
import type { LoadOptions } from "../core/engine.ts";
import { parseBudget } from "../core/memory_sizes.ts";
import { DEFAULT_LOAD_RECALL } from "../core/predictor.ts";
import { FlashlmError, ioError, isBrokenPipe, osError } from "../io/errors.ts";
import { atomicWriteFile, writeAll } from "../io/atomic_write.ts";

// ---------------------------------------------------------------------------
// Commands

/** What `--help` says about a command, and its flags (without the common ones). */
export interface CommandSpec {
  /** The usage line. */
  usage: string;
  /** One line for the command list. */
  summary: string;
  /** Full command lines shown under `examples:`. */
  examples: readonly string[];
  /** The command's own flags; {@linkcode COMMON} is added after them. */
  flags: FlagSpecs;
  /** Lines printed between the options and the examples (e.g. what an output's columns mean). */
  notes?: readonly string[];
  /** The command shows progress (so it takes `--quiet`). */
  progress?: boolean;
}

/** A command module: its spec and its run function over the typed flags. */
export interface CommandModule<S extends CommandSpec> {
  /** Usage, summary, examples and flags. */
  spec: S;
  /** Check the arguments, call core/tools, print. */
  run(positional: string[], flags: ParsedFlags<S["flags"]>): Promise<void>;
}

/** A command ready to run on its part of the command line. */
export interface Command {
  /** Usage, summary and examples of `--help`. */
  spec: CommandSpec;
  /** Parse `argv` against the command's flags (and {@linkcode COMMON}), then run or print help. */
  main(argv: string[]): Promise<void>;
}

/** Flags every command takes. */
export const COMMON = {
  help: { type: "boolean", help: "show this help" },
  debug: { type: "boolean", help: "print stack traces on errors" },
} as const satisfies FlagSpecs;

/** `--quiet`, which the commands that show progress take. */
const QUIET = {
  quiet: { type: "boolean", help: "no progress bars or progress lines on stderr" },
} as const satisfies FlagSpecs;

/** A command's flags as parsed: its own, `--quiet` if it shows progress, then {@linkcode COMMON}. */
function allFlags(spec: CommandSpec): FlagSpecs {
  return { ...spec.flags, ...(spec.progress ? QUIET : {}), ...COMMON };
}

/**
 * Bind a command module's spec to its run function (and `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { command } from "./common.ts";
 * let said = "";
 * const hello = command({
 *   spec: {
 *     usage: "hello <name>",
 *     summary: "greet",
 *     examples: [],
 *     flags: { times: { type: "integer", help: "how often", default: 1 } },
 *   },
 *   run: (positional, flags) => {
 *     said = `hello ${positional[0]}`.repeat(flags.times);
 *     return Promise.resolve();
 *   },
 * });
 * await hello.main(["you", "--times", "2"]);
 * assert.equal(said, "hello youhello you");
 * ```
 */
export function command<const S extends CommandSpec>(module: CommandModule<S>): Command {
  const { spec } = module;
  return {
    spec,
    async main(argv: string[]): Promise<void> {
      const parsed = parseArgs(argv, allFlags(spec));
      // The flags of the spec, and --quiet when it shows progress (parsed by allFlags).
      const flags = parsed.flags as ParsedFlags<S["flags"] & typeof QUIET & typeof COMMON>;
      progressQuiet = flags.quiet === true;
      if (flags.help) console.log(helpText(spec));
      else await module.run(parsed.positional, flags);
    },
  };
}

/**
 * A command's `--help`: usage, summary, options and examples.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { helpText } from "./common.ts";
 * const text = helpText({ usage: "hello", summary: "greet", examples: ["hello you"], flags: {} });
 * assert.match(text, /^hello\n\ngreet\n\noptions:\n  --help +show this help\n/);
 * assert.ok(text.endsWith("examples:\n  hello you"));
 * ```
 */
export function helpText(spec: CommandSpec): string {
  return [
    `${spec.usage}\n\n${wrap(spec.summary, 100, 0)}\n`,
    "options:",
    formatFlags(allFlags(spec)),
    ...(spec.notes ? ["", ...spec.notes] : []),
    "\nexamples:",
    ...spec.examples.map((e) => "  " + e),
  ].join("\n");
}

/**
 * A usage error (exit code 2).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { usage } from "./common.ts";
 * assert.equal(usage("verify needs one <model.flm>").kind, "usage");
 * ```
 */
export function usage(message: string): FlashlmError {
  return new FlashlmError(message, { kind: "usage" });
}

// ---------------------------------------------------------------------------
// The sparse-mode flags (generate, eval, inspect)

/** `--resident`, shared by generate and eval. */
export const RESIDENT_FLAG = {
  type: "string",
  help: "resident weights in DRAM at the file's precision, or expanded to f32",
  shownDefault: "stored",
  choices: RESIDENT_PRECISIONS,
} as const;

/** `--depth`, shared by the commands that read a model's FFN from flash. */
export const DEPTH_FLAG = {
  type: "integer",
  help: "flash reads in flight",
  shownDefault: "32",
  min: 1,
  max: 1024,
} as const;

/** `--threads`, shared by the commands that run a model. */
export const THREADS_FLAG = {
  type: "integer",
  help: "threads the kernels run on (linear layers, attention, the FFN), this one " +
    "included: workers over shared memory, results bit-identical to 1",
  shownDefault: "the machine's cores",
  min: 1,
  max: 256,
} as const;

/** `--on-corrupt`, shared by generate and eval. */
export const ON_CORRUPT_FLAG = {
  type: "string",
  help: "an FFN bundle read that fails its checksum or holds a NaN/Inf: stop with an error " +
    "naming the file, layer and neuron, or skip that neuron and count it in the summary",
  shownDefault: "error",
  choices: ON_CORRUPT,
} as const;

/** Flags of the paper's sparse mode. */
export const SPARSE_FLAGS = {
  memory: {
    type: "string",
    help: "DRAM budget for sparse mode, weights held at their stored precision: bytes (2GB, " +
      "512MiB), % of the model's weights on flash (50%), or ffn:<p>% (resident part, KV cache " +
      "and buffers + p% of the FFN's neurons, capped at 100%); the runtime's own memory is " +
      "stated beside it",
  },
  eviction: {
    type: "string",
    help: "which neurons leave a full neuron store: lowest decaying activation count, or the " +
      "paper's window of the last k tokens",
    shownDefault: "frequency",
    choices: ["frequency", "window"],
  },
  window: {
    type: "integer",
    help: "window size k; implies --eviction window (default: planned from the budget)",
    min: 1,
    max: 1 << 20,
  },
  "load-recall": {
    type: "number",
    help: "read a predicted neuron missing from DRAM only if it clears the threshold that " +
      "keeps this share of the truly active neurons (1 reads every predicted one, as the paper)",
    shownDefault: String(DEFAULT_LOAD_RECALL),
    min: 0.01,
    max: 1,
  },
  predictor: {
    type: "string",
    help: "sparse mode: the trained predictor in the file, or the perfect one (needs all of fc1)",
    shownDefault: "file",
    choices: ["file", "oracle"],
  },
} as const satisfies FlagSpecs;

/** The sparse flags as parsed, with the mode when the command has one. */
export type SparseFlags = ParsedFlags<typeof SPARSE_FLAGS> & { mode?: LoadOptions["mode"] };

/**
 * Mode, predictor, budget and window from the command line (`--memory` implies sparse).
 * With `machineBudget`, a run that gives no budget gets the one the engine chooses from
 * this machine (`memory: "machine"`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sparseOptions } from "./common.ts";
 * const flags = {
 *   memory: "ffn:50%",
 *   eviction: undefined,
 *   window: undefined,
 *   "load-recall": undefined,
 *   predictor: undefined,
 * };
 * assert.equal(sparseOptions(flags).mode, "sparse");
 * assert.throws(() => sparseOptions({ ...flags, mode: "dense" }), /apply to --mode sparse/);
 * assert.equal(sparseOptions({ ...flags, memory: undefined }, true).memory, "machine");
 * ```
 */
export function sparseOptions(flags: SparseFlags, machineBudget = false): LoadOptions {
  const memory = flags.memory !== undefined ? parseBudget(flags.memory) : null;
  let mode = flags.mode;
  if (
    mode === undefined &&
    (memory || flags.window !== undefined || flags.predictor !== undefined ||
      flags["load-recall"] !== undefined)
  ) {
    mode = "sparse";
  }
  if (
    mode !== "sparse" &&
    (memory || flags.window !== undefined || flags["load-recall"] !== undefined)
  ) {
    throw usage(`--memory, --window and --load-recall apply to --mode sparse, not ${mode}`);
  }
  return {
    mode,
    // No budget given: the machine's (the engine runs sparse only if the file has a predictor).
    memory: memory ??
      (machineBudget && (mode === undefined || mode === "sparse") ? "machine" : null),
    windowK: flags.window,
    predictor: flags.predictor,
    eviction: flags.eviction,
    loadRecall: flags["load-recall"],
  };
}

// ---------------------------------------------------------------------------
// Output

/**
 * Thrown by {@linkcode write} when stdout's reader went away (`… | head`): the command stops
 * and flashlm exits 0 without an error line, as there is no one left to read its output.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { StdoutClosed } from "./common.ts";
 * assert.ok(new StdoutClosed() instanceof Error);
 * ```
 */
export class StdoutClosed extends Error {
  /** Make one; the message is only seen with --debug. */
  constructor() {
    super("stdout was closed by its reader");
    this.name = "StdoutClosed";
  }
}

/** Write all of `bytes` to stdout; throws {@linkcode StdoutClosed} on a broken pipe. */
export function write(bytes: Uint8Array): void {
  let done = 0;
  try {
    while (done < bytes.length) done += Deno.stdout.writeSync(bytes.subarray(done));
  } catch (err) {
    throw isBrokenPipe(err) ? new StdoutClosed() : err;
  }
  if (bytes.length > 0) stdoutLineOpen = bytes[bytes.length - 1] !== 0x0a;
}

let stdoutLineOpen = false; // the last text written to stdout did not end its line

/**
 * End a line of text left open on stdout when stdout is a terminal (where stderr's next
 * line would be glued to it); does nothing on a pipe or a file, whose text stays as written.
 *
 * @example
 * ```ts
 * import { endStdoutLine } from "./common.ts";
 * endStdoutLine(); // nothing written to stdout yet: writes nothing
 * ```
 */
export function endStdoutLine(): void {
  if (!stdoutLineOpen) return;
  stdoutLineOpen = false;
  try {
    if (Deno.stdout.isTerminal()) Deno.stdout.writeSync(new TextEncoder().encode("\n"));
  } catch { /* stdout gone: nothing to end */ }
}

/** A note for the user on stderr (stdout carries only the command's result); ends a bar. */
export function info(line: string): void {
  endProgress();
  console.error(line);
}

let progressOpen = false; // a bar is on stderr without its newline
let progressQuiet = false; // --quiet: no progress at all
let lastDraw = 0; // when the bar was last drawn (ms)
let lastLabel = ""; // the label of the last progress line or bar
let lastTenth = -1; // the last tenth written as a plain line

/**
 * How progress is shown now: a bar (stderr is a terminal), plain lines, or nothing
 * (`--quiet`). For commands with a bar of their own (pull's download bar).
 */
export function progressStyle(): "bar" | "lines" | "none" {
  return progressQuiet ? "none" : stderrIsTerminal() ? "bar" : "lines";
}

/** Whether stderr is a terminal (false when that cannot be known). */
function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/**
 * Progress on stderr: on a terminal a bar redrawn at most 10 times a second (and at the
 * end), with `suffix` (e.g. an ETA) after it; otherwise one plain line each time another
 * tenth of `total` is done, so a log file gets a dozen lines, not `\r` frames. Nothing
 * with `--quiet`. `counts`: show `done/total` (else only the share).
 */
export function progress(
  label: string,
  done: number,
  total: number,
  suffix = "",
  counts = true,
): void {
  if (progressQuiet) return;
  const share = total > 0 ? Math.min(done / total, 1) : 1;
  if (label !== lastLabel) {
    lastLabel = label;
    lastTenth = -1;
  }
  if (!stderrIsTerminal()) {
    const tenth = Math.floor(share * 10);
    if (tenth === lastTenth) return;
    lastTenth = tenth;
    const count = counts ? ` (${done}/${total})` : "";
    console.error(
      `${label.trim()}: ${Math.round(share * 100)}%${count}${suffix ? " " + suffix : ""}`,
    );
    return;
  }
  const now = performance.now();
  if (done < total && now - lastDraw < 100) return;
  lastDraw = now;
  const width = 30;
  const filled = Math.round(share * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  const count = counts ? `${done}/${total}` : `${Math.round(share * 100)}%`;
  const line = `\r${label} [${bar}] ${count}${suffix ? " " + suffix : ""}\x1b[K`;
  Deno.stderr.writeSync(new TextEncoder().encode(line));
  progressOpen = true;
}

/**
 * End a progress bar left on stderr with a newline, and a line of text left open on a
 * terminal's stdout ({@linkcode endStdoutLine}), so the next line (an error) starts on its
 * own line; does nothing when neither is open.
 *
 * @example
 * ```ts
 * import { endProgress } from "./common.ts";
 * endProgress(); // no bar drawn: writes nothing
 * ```
 */
export function endProgress(): void {
  endStdoutLine();
  if (!progressOpen) return;
  progressOpen = false;
  try {
    Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  } catch { /* stderr gone too: nothing to end */ }
}

/**
 * Write `value` as indented JSON (one space) to `path`, atomically.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { writeJson } from "./common.ts";
 * const path = `${await Deno.makeTempDir()}/stats.json`;
 * await writeJson(path, { tokens: 3 });
 * assert.equal(await Deno.readTextFile(path), '{\n "tokens": 3\n}\n');
 * ```
 */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const json = JSON.stringify(value, null, 1);
  await atomicWriteFile(path, (f) => writeAll(f, new TextEncoder().encode(json + "\n")));
}

// ---------------------------------------------------------------------------
// Ctrl-C and output paths

/**
 * Thrown by a command that stopped on Ctrl-C after printing its summary: flashlm exits
 * 130 (128 + SIGINT, as a shell reports a process ended by Ctrl-C), without an error line.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Interrupted } from "./common.ts";
 * assert.ok(new Interrupted() instanceof Error);
 * ```
 */
export class Interrupted extends Error {
  /** Make one; the message is only seen with --debug. */
  constructor() {
    super("interrupted (Ctrl-C)");
    this.name = "Interrupted";
  }
}

/**
 * Turn Ctrl-C into an abort of the returned signal (the command stops cleanly, prints its
 * summary and writes its files); a second Ctrl-C exits at once with 130. Call the
 * returned `dispose` when the command ends.
 */
export function onCtrlC(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const handler = (): void => {
    if (controller.signal.aborted) Deno.exit(130);
    controller.abort();
  };
  try {
    Deno.addSignalListener("SIGINT", handler);
  } catch {
    // no signals here (a runtime without them): Ctrl-C ends the process as usual
    return { signal: controller.signal, dispose: () => {} };
  }
  return {
    signal: controller.signal,
    dispose: () => Deno.removeSignalListener("SIGINT", handler),
  };
}

/**
 * Check, before any work starts, that a file can be written at `path` (given by `flag`):
 * its directory exists and takes new files, and `path` is not a directory. Nothing is left
 * behind. Otherwise throws the one-line error a failed write would give, naming `path`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkOutputPath } from "./common.ts";
 * const dir = await Deno.makeTempDir();
 * await checkOutputPath(`${dir}/stats.json`, "--stats");
 * await assert.rejects(checkOutputPath(`${dir}/missing/stats.json`, "--stats"), /does not exist/);
 * await assert.rejects(checkOutputPath(dir, "--stats"), /--stats names a directory/);
 * assert.deepEqual([...Deno.readDirSync(dir)], []);
 * ```
 */
export async function checkOutputPath(path: string, flag: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : path.slice(0, slash) || "/";
  const isDirectory = await Deno.stat(path).then((s) => s.isDirectory, () => false);
  if (isDirectory) {
    throw new FlashlmError(`${flag} names a directory, not a file`, { file: path, kind: "io" });
  }
  let probe: string;
  try {
    probe = await Deno.makeTempFile({ dir, prefix: ".flashlm-probe-" });
  } catch (e) {
    throw osError(e, path, `its directory ${dir} does not exist`) ??
      ioError(`cannot write ${flag}`, path, e);
  }
  await Deno.remove(probe).catch(() => {});
}
