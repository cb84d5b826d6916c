#!/usr/bin/env -S deno run -A
/**
 * The flashlm command line.
 *
 *   flashlm                                  generate with the embedded demo model
 *   flashlm generate <model> --prompt "…"
 *   flashlm chat <model>
 *   flashlm convert <hf-dir> <out.flm>
 *   flashlm inspect <model.flm>
 *   flashlm verify <model.flm>
 *   flashlm bench io <file>                  the flash reader vs fio, cold cache
 *   flashlm bench <model.flm> --memory 50%   naive, hybrid, page cache, DRAM, flashlm
 *   flashlm make-model --shape opt-6.7b --out m.flm   synthetic OPT-shaped model
 *
 * `flashlm` is this file installed as a command (README: Quick start):
 * `deno install -g -A -n flashlm --config deno.json cli.ts` from a checkout, or
 * `deno install -g -A -n flashlm jsr:@flashlm/flashlm/cli`; `deno run -A cli.ts` runs it
 * in place.
 *
 * Each command lives in `cli/<command>.ts`; this file finds the command, runs it, and
 * turns errors into one line on stderr and a non-zero exit (2 for usage errors, 1 for
 * bad files and failed I/O, 70 for bugs); `--debug` adds the stack trace. A closed stdout
 * (`generate | head`) ends the command quietly with exit 0.
 *
 * @module
 */

import {
  type Command,
  command,
  endProgress,
  helpText,
  Interrupted,
  StdoutClosed,
  usage,
} from "./cli/common.ts";
import * as bench from "./cli/bench.ts";
import * as chat from "./cli/chat.ts";
import * as convert from "./cli/convert.ts";
import * as evalCommand from "./cli/eval.ts";
import * as generate from "./cli/generate.ts";
import * as inspect from "./cli/inspect.ts";
import * as makeModel from "./cli/make_model.ts";
import * as pull from "./cli/pull.ts";
import * as stats from "./cli/stats.ts";
import * as trainPredictor from "./cli/train_predictor.ts";
import * as verify from "./cli/verify.ts";
import { wrap } from "./cli/args.ts";
import { FlashlmError, osError } from "./io/errors.ts";

// ---------------------------------------------------------------------------
// The commands, in the order `--help` lists them

const COMMANDS: Record<string, Command> = {
  generate: command(generate),
  chat: command(chat),
  convert: command(convert),
  "train-predictor": command(trainPredictor),
  eval: command(evalCommand),
  inspect: command(inspect),
  verify: command(verify),
  stats: command(stats),
  "make-model": command(makeModel),
  pull: command(pull),
  bench: command(bench),
  "bench io": command({ spec: bench.ioSpec, run: bench.runIo }),
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length)) + 2;
  const rows = Object.entries(COMMANDS).map(([name, c]) =>
    `  ${name.padEnd(width)}${wrap(c.spec.summary, 98 - width, width + 2)}`
  );
  return [
    "flashlm: run language models whose weights stay on flash (LLM in a Flash, Alizadeh et al. 2024)",
    "",
    "usage: flashlm [command] [args] [options]",
    "",
    "commands:",
    ...rows,
    "",
    "`flashlm <command> --help` shows a command's options and examples.",
    "With no command, flashlm generates with the embedded demo model.",
  ].join("\n");
}

/** The command `argv` names (`bench io` is two words) and the rest of the line. */
function findCommand(argv: readonly string[]): { name: string; rest: string[] } | null {
  const two = argv.slice(0, 2).join(" ");
  if (argv.length >= 2 && Object.hasOwn(COMMANDS, two)) return { name: two, rest: argv.slice(2) };
  if (argv.length >= 1 && Object.hasOwn(COMMANDS, argv[0])) {
    return { name: argv[0], rest: argv.slice(1) };
  }
  return null;
}

// ---------------------------------------------------------------------------
// main

/** Run the CLI with `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes("--debug");
  try {
    if (argv[0] === "help" || argv[0] === "--help" || argv[0] === "-h") {
      const topic = findCommand(argv.slice(1));
      console.log(topic ? helpText(COMMANDS[topic.name].spec) : mainHelp());
      return 0;
    }
    let name = "generate";
    let rest = argv;
    const found = findCommand(argv);
    if (found) {
      ({ name, rest } = found);
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
    // Ctrl-C: the command stopped cleanly and printed its summary; 130 as a shell reports it.
    if (caught instanceof Interrupted) return 130;
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
