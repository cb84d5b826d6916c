#!/usr/bin/env -S deno run -A
/**
 * The flashlm command line.
 *
 *   deno run -A cli.ts                          generate with the embedded demo model
 *   deno run -A cli.ts generate <model> --prompt "…"
 *   deno run -A cli.ts convert <hf-dir> <out.flm>
 *   deno run -A cli.ts inspect <model.flm>
 *   deno run -A cli.ts verify <model.flm>
 *
 * Errors are one line on stderr and a non-zero exit (2 for usage errors, 1 for bad
 * files and failed I/O); `--debug` adds the stack trace.
 *
 * @module
 */

import { type FlagSpec, formatFlags, parseArgs } from "./core/cli_args.ts";
import { convertHfToFlash } from "./core/convert.ts";
import { ensureDemoModel } from "./core/demo_model.ts";
import { loadModel, type Mode, MODES } from "./core/engine.ts";
import { FlashlmError } from "./core/errors.ts";
import { FlashModelFile, verifyFfn } from "./core/flash_format.ts";
import { Generation, summarize } from "./core/generate.ts";

// ---------------------------------------------------------------------------
// Commands and their flags

interface Command {
  usage: string;
  summary: string;
  examples: string[];
  flags: Record<string, FlagSpec>;
  run: (positional: string[], flags: Record<string, string | number | boolean>) => Promise<void>;
}

const COMMON: Record<string, FlagSpec> = {
  help: { type: "boolean", help: "show this help" },
  debug: { type: "boolean", help: "print stack traces on errors" },
};

const COMMANDS: Record<string, Command> = {
  generate: {
    usage: "flashlm generate [model] [options]",
    summary: "generate text (the default command); model is a .flm file or an HF directory",
    examples: [
      "deno run -A cli.ts",
      'deno run -A cli.ts generate model.flm --prompt "The history of the city" --max-tokens 32',
      "deno run -A cli.ts generate model.flm --mode dense --temperature 0.8 --top-p 0.9 --seed 1",
    ],
    flags: {
      prompt: { type: "string", help: "text to continue", default: '"Once upon a time"' },
      "max-tokens": { type: "integer", help: "most tokens to generate", default: "64", min: 0 },
      temperature: { type: "number", help: "0 = greedy", default: "0", min: 0, max: 100 },
      "top-k": {
        type: "integer",
        help: "sample from the k most likely (0 = all)",
        default: "0",
        min: 0,
      },
      "top-p": { type: "number", help: "nucleus sampling mass", default: "1", min: 1e-6, max: 1 },
      seed: { type: "integer", help: "random seed", default: "0" },
      mode: {
        type: "string",
        help: "dense: all weights in DRAM; naive: read every FFN bundle from flash per token",
        default: "naive for .flm, dense for HF dirs",
        choices: MODES,
      },
      context: {
        type: "integer",
        help: "KV cache length in tokens",
        default: "model maximum",
        min: 1,
      },
      depth: { type: "integer", help: "flash reads in flight", default: "32", min: 1, max: 1024 },
      ...COMMON,
    },
    run: runGenerate,
  },
  convert: {
    usage: "flashlm convert <hf-dir> <out.flm> [options]",
    summary: "convert a Hugging Face OPT checkpoint into a flashlm file (row-column bundled FFN)",
    examples: ["deno run -A cli.ts convert ../shared/models/tiny-opt-wikitext2 tiny.flm"],
    flags: {
      dtype: {
        type: "string",
        help: "storage dtype of the weights",
        default: "f16",
        choices: ["f16", "f32"],
      },
      ...COMMON,
    },
    run: runConvert,
  },
  inspect: {
    usage: "flashlm inspect <model.flm>",
    summary: "print the architecture and the file layout of a flashlm file",
    examples: ["deno run -A cli.ts inspect tiny.flm"],
    flags: { ...COMMON },
    run: runInspect,
  },
  verify: {
    usage: "flashlm verify <model.flm>",
    summary: "check every section's checksum, FFN included",
    examples: ["deno run -A cli.ts verify tiny.flm"],
    flags: { ...COMMON },
    run: runVerify,
  },
};

// ---------------------------------------------------------------------------
// generate

async function runGenerate(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length > 1) {
    throw usage(`generate takes one model, got ${positional.length} arguments`);
  }
  let path = positional[0];
  let prompt = flags.prompt as string | undefined;
  if (path === undefined) {
    info(
      "flashlm: no model given: using the embedded demo model (synthetic random weights, so its text is gibberish; pass a .flm file or HF directory for real text)",
    );
    path = await ensureDemoModel();
    prompt ??= "Once upon a time";
  }
  prompt ??= "Once upon a time";
  const model = await loadModel(path, {
    mode: flags.mode as Mode | undefined,
    contextLength: flags.context as number | undefined,
    readerDepth: flags.depth as number | undefined,
  });
  try {
    const gen = new Generation(model, prompt, {
      maxTokens: (flags["max-tokens"] as number | undefined) ?? 64,
      temperature: flags.temperature as number | undefined,
      topK: flags["top-k"] as number | undefined,
      topP: flags["top-p"] as number | undefined,
      seed: flags.seed as number | undefined,
    });
    const c = model.config;
    info(
      `flashlm: ${path} · OPT ${c.nLayers} layers · d ${c.dModel} · FFN ${c.dFfn} · vocab ${c.vocabSize} · mode ${model.mode}` +
        (model.metadata.synthetic === "true" ? " · synthetic weights" : ""),
    );
    const out = new TextEncoder();
    write(out.encode(prompt));
    for await (const token of gen) write(out.encode(token.text));
    write(out.encode("\n"));
    info(summarize(gen.stats, model.mode));
  } finally {
    model.close();
  }
}

// ---------------------------------------------------------------------------
// convert, inspect, verify

async function runConvert(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 2) throw usage("convert needs <hf-dir> and <out.flm>");
  const [src, out] = positional;
  const t0 = performance.now();
  await convertHfToFlash(src, out, {
    dtype: (flags.dtype as "f16" | "f32" | undefined) ?? "f16",
    onProgress: (done, total) => progress(`converting FFN layers`, done, total),
  });
  const size = (await Deno.stat(out)).size;
  info(
    `\nflashlm: wrote ${out} (${(size / 1e6).toFixed(1)} MB) in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
}

async function runInspect(positional: string[]): Promise<void> {
  if (positional.length !== 1) throw usage("inspect needs one <model.flm>");
  const file = await FlashModelFile.open(positional[0]);
  const c = file.config;
  const h = file.header;
  const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;
  const lines = [
    `file          ${file.path} (${mb(file.fileSize)}, format v${h.version}, dtype ${h.dtype})`,
    `architecture  ${c.architecture}: ${c.nLayers} layers, d_model ${c.dModel}, d_ffn ${c.dFfn}, ${c.nHeads} heads, vocab ${c.vocabSize}, ${c.maxPositions} positions, activation ${c.activation}, ${
      c.layerNormBefore ? "pre" : "post"
    }-LN`,
    `provenance    ${Object.entries(h.metadata).map(([k, v]) => `${k}=${v}`).join(", ") || "-"}`,
    `tokenizer     @${h.tokenizer.offset}: ${
      mb(h.tokenizer.vocabLength + h.tokenizer.mergesLength)
    }`,
    `resident      @${h.resident.offset}: ${
      mb(h.resident.length)
    } in ${h.resident.tensors.length} tensors (embeddings, attention, norms, biases: DRAM in every mode)`,
    `ffn           @${h.ffn.offset}: ${
      mb(h.ffn.length)
    }, ${h.ffn.layout}, ${h.ffn.bundleBytes} bytes per neuron bundle, ${c.dFfn} bundles x ${c.nLayers} layers`,
  ];
  console.log(lines.join("\n"));
}

async function runVerify(positional: string[]): Promise<void> {
  if (positional.length !== 1) throw usage("verify needs one <model.flm>");
  const file = await FlashModelFile.open(positional[0]); // header, tokenizer, resident
  const bad = await verifyFfn(file, (done, total) => progress("verifying FFN layers", done, total));
  info("");
  if (bad.length) {
    throw new FlashlmError(
      `FFN layer(s) ${bad.join(", ")} fail their checksum (the file is corrupt)`,
      {
        file: file.path,
      },
    );
  }
  console.log(
    `${file.path}: OK (header, tokenizer, resident and ${file.config.nLayers} FFN layers verified)`,
  );
}

// ---------------------------------------------------------------------------
// Output helpers

function write(bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += Deno.stdout.writeSync(bytes.subarray(done));
}

function info(line: string): void {
  console.error(line);
}

function progress(label: string, done: number, total: number): void {
  const width = 30;
  const filled = Math.round((done / total) * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  Deno.stderr.writeSync(new TextEncoder().encode(`\r${label} [${bar}] ${done}/${total}`));
}

function usage(message: string): FlashlmError {
  return new FlashlmError(message, { kind: "usage" });
}

function helpText(command: Command): string {
  return [
    `${command.usage}\n\n${command.summary}\n`,
    "options:",
    formatFlags(command.flags),
    "\nexamples:",
    ...command.examples.map((e) => "  " + e),
  ].join("\n");
}

function mainHelp(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`);
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
    let name = "generate";
    let rest = argv;
    if (argv[0] === "help" || argv[0] === "--help" || argv[0] === "-h") {
      const topic = argv[1] && COMMANDS[argv[1]];
      console.log(topic ? helpText(topic) : mainHelp());
      return 0;
    }
    if (argv.length && COMMANDS[argv[0]]) {
      name = argv[0];
      rest = argv.slice(1);
    } else if (argv.length && !argv[0].startsWith("-") && !(await exists(argv[0]))) {
      throw usage(
        `unknown command or missing model "${argv[0]}" (commands: ${
          Object.keys(COMMANDS).join(", ")
        })`,
      );
    }
    const command = COMMANDS[name];
    const { positional, flags } = parseArgs(rest, command.flags);
    if (flags.help) {
      console.log(helpText(command));
      return 0;
    }
    await command.run(positional, flags);
    return 0;
  } catch (e) {
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
