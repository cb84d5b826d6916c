#!/usr/bin/env -S deno run -A
/**
 * The flashlm command line.
 *
 *   deno run -A cli.ts                          generate with the embedded demo model
 *   deno run -A cli.ts generate <model> --prompt "…"
 *   deno run -A cli.ts convert <hf-dir> <out.flm>
 *   deno run -A cli.ts inspect <model.flm>
 *   deno run -A cli.ts verify <model.flm>
 *   deno run -A cli.ts bench io <file>             the flash reader vs fio, cold cache
 *   deno run -A cli.ts bench <model.flm> --memory 50%   naive, hybrid, page cache, DRAM, flashlm
 *   deno run -A cli.ts make-model --shape opt-6.7b --out m.flm   synthetic OPT-shaped model
 *
 * Each command lives in `cli/<command>.ts`; this file finds the command, runs it, and
 * turns errors into one line on stderr and a non-zero exit (2 for usage errors, 1 for
 * bad files and failed I/O, 70 for bugs); `--debug` adds the stack trace. A closed stdout
 * (`generate | head`) ends the command quietly with exit 0.
 *
 * @module
 */

import { type Command, command, endProgress, helpText, StdoutClosed, usage } from "./cli/common.ts";
import * as bench from "./cli/bench.ts";
import * as convert from "./cli/convert.ts";
import * as evalCommand from "./cli/eval.ts";
import * as generate from "./cli/generate.ts";
import * as inspect from "./cli/inspect.ts";
import * as makeModel from "./cli/make_model.ts";
import * as pull from "./cli/pull.ts";
import * as stats from "./cli/stats.ts";
import * as trainPredictor from "./cli/train_predictor.ts";
import * as verify from "./cli/verify.ts";
import { FlashlmError, osError } from "./io/errors.ts";

// ---------------------------------------------------------------------------
// The commands, in the order `--help` lists them

const COMMANDS: Record<string, Command> = {
  generate: command(generate),
  convert: command(convert),
  "train-predictor": command(trainPredictor),
  eval: command(evalCommand),
  inspect: command(inspect),
  verify: command(verify),
  stats: command(stats),
  "make-model": command(makeModel),
  pull: command(pull),
  bench: command(bench),
};

function mainHelp(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.spec.summary}`);
  return [
    "flashlm: run language models whose weights stay on flash (LLM in a Flash, Alizadeh et al. 2024)",
    "",
    "usage: deno run -A cli.ts [command] [args] [options]",
    "",
    "commands:",
    ...rows,
    "",
    "`deno run -A cli.ts <command> --help` shows a command's options and examples.",
  ].join("\n");
}

// ---------------------------------------------------------------------------
// main

/** Run the CLI with `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes("--debug");
  try {
    if (argv[0] === "help" || argv[0] === "--help" || argv[0] === "-h") {
      const topic = argv[1] !== undefined && Object.hasOwn(COMMANDS, argv[1])
        ? COMMANDS[argv[1]]
        : undefined;
      console.log(topic ? helpText(topic.spec) : mainHelp());
      return 0;
    }
    let name = "generate";
    let rest = argv;
    if (argv.length && Object.hasOwn(COMMANDS, argv[0])) {
      name = argv[0];
      rest = argv.slice(1);
    } else if (argv.length && !argv[0].startsWith("-") && !(await exists(argv[0]))) {
      throw usage(
        `unknown command or missing model ${JSON.stringify(argv[0])} (commands: ${
          Object.keys(COMMANDS).join(", ")
        })`,
      );
    }
    await COMMANDS[name].main(rest);
    return 0;
  } catch (caught) {
    // stdout's reader went away (`generate | head`): stop quietly, as a finished command.
    if (caught instanceof StdoutClosed) return 0;
    endProgress();
    // An OS condition (disk full, read-only, out of memory, …) is the user's to fix, not a bug.
    const e = osError(caught) ?? caught;
    if (e instanceof FlashlmError) {
      console.error(`flashlm: error: ${e.message}`);
      if (debug) console.error(e.stack);
      return e.kind === "usage" ? 2 : 1;
    }
    const err = e as Error;
    console.error(
      `flashlm: internal error: ${err?.message ?? String(e)}${
        debug ? "" : " (run with --debug for the stack trace)"
      }`,
    );
    if (debug) console.error(err?.stack);
    return 70;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
