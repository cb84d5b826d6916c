/**
 * `flashlm generate`: stream text from a model (the default command; with no model,
 * the embedded demo model in sparse mode).
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import {
  checkOutputPath,
  type CommandSpec,
  endProgress,
  endStdoutLine,
  info,
  Interrupted,
  onCtrlC,
  progress,
  usage,
  write,
  writeJson,
} from "./common.ts";
import {
  describeModel,
  MODEL_FLAGS,
  modelLoadOptions,
  SAMPLING_FLAGS,
  samplingOptions,
} from "./generation_flags.ts";
import { loadModel } from "../core/engine.ts";
import { describePlan } from "../core/memory_plan.ts";
import { Generation, type GenerationStats, summarize, uncachedWarning } from "../core/generate.ts";
import { FlashlmError } from "../io/errors.ts";
import { ensureDemoModel } from "../tools/demo_model.ts";

/** The prompt when none is given. */
const DEFAULT_PROMPT = "Once upon a time";

/** Usage, summary, examples and flags of `generate`. */
export const spec = {
  usage: "flashlm generate [model] [options]",
  summary: "generate text (the default command); model is a .flm file or an HF directory",
  examples: [
    "flashlm",
    'flashlm generate tiny.flm --prompt "The history of the city" --max-tokens 32',
    'echo "The history of the city" | flashlm generate tiny.flm --prompt - --stop "."',
    "flashlm generate tiny.flm --prompt-file prompt.txt --repeat-penalty 1.3 --json",
    "flashlm generate tiny.flm --mode dense --temperature 0.8 --top-p 0.9 --seed 1",
  ],
  flags: {
    prompt: {
      type: "string",
      help: "text to continue (- reads it from stdin)",
      shownDefault: `"${DEFAULT_PROMPT}"`,
    },
    "prompt-file": { type: "string", help: "read the text to continue from this file" },
    "max-tokens": { type: "integer", help: "most tokens to generate", default: 64, min: 0 },
    ...SAMPLING_FLAGS,
    context: {
      type: "integer",
      help: "KV cache length in tokens (at most the model's maximum positions)",
      shownDefault: "prompt + max tokens",
      min: 1,
    },
    "context-shift": {
      type: "boolean",
      help: "when the context is full, drop the oldest half (first token kept) and go on; " +
        "OPT's positions are absolute, so the kept half is run again (off: stop there)",
    },
    ...MODEL_FLAGS,
    json: {
      type: "boolean",
      help: 'stdout as NDJSON: {"type":"token",…} per token, then {"type":"summary",…}',
    },
    stats: {
      type: "string",
      help: "write per-token telemetry and the summary as JSON to this file",
    },
  },
  progress: true,
} as const satisfies CommandSpec;

/** Generate from the model (or the demo model) and stream the text to stdout. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length > 1) {
    throw usage(`generate takes one model, got ${positional.length} arguments`);
  }
  if (flags.prompt !== undefined && flags["prompt-file"] !== undefined) {
    throw usage("give --prompt or --prompt-file, not both");
  }
  if (flags.stats !== undefined) await checkOutputPath(flags.stats, "--stats");
  const prompt = await readPrompt(flags.prompt, flags["prompt-file"]);
  let path = positional[0];
  if (path === undefined) {
    info(
      "flashlm: no model given: using the embedded demo model (synthetic weights made from a " +
        "word-pair table of a short public-domain text, not a trained model; pass a .flm file " +
        "or HF directory for a real one)",
    );
    path = await ensureDemoModel(undefined, undefined, (share) => {
      progress("building the demo model (once)", Math.round(share * 100), 100, "", false);
    });
    endProgress();
  }
  const maxTokens = flags["max-tokens"];
  const model = await loadModel(
    path,
    modelLoadOptions(flags, (tokenizer) => tokenizer.encode(prompt).length + maxTokens),
  );
  const ctrlC = onCtrlC();
  try {
    if (model.plan) info(describePlan(model.plan));
    const skippedAtLoad = model.transformer.ffn.stats.neuronsCorrupt; // dense mode reads all now
    if (skippedAtLoad > 0) {
      info(
        `flashlm: ${skippedAtLoad} corrupt FFN bundles left out while loading (--on-corrupt skip)`,
      );
    }
    const sampling = samplingOptions(flags);
    const gen = new Generation(model, prompt, {
      ...sampling,
      maxTokens,
      telemetry: flags.stats !== undefined,
      contextShift: flags["context-shift"],
      signal: ctrlC.signal,
    });
    const context = model.transformer.contextLength;
    info(describeModel(model, (sampling.temperature ?? 0) > 0 ? sampling.seed : null));
    if (gen.promptIds.length + maxTokens > context) {
      info(
        `flashlm: note: the prompt's ${gen.promptIds.length} tokens + --max-tokens ${maxTokens} ` +
          `exceed the context of ${context} positions: ` +
          (flags["context-shift"]
            ? "the oldest half is dropped each time it is full (--context-shift)"
            : `generation stops when it is full (--context-shift goes on past it)`),
      );
    }
    const out = new TextEncoder();
    let text = "";
    if (!flags.json) write(out.encode(prompt));
    let warned = false;
    for await (const token of gen) {
      text += token.text;
      if (flags.json) {
        const id = token.id >= 0 ? token.id : null;
        const line = { type: "token", id, text: token.text, position: token.position };
        write(out.encode(JSON.stringify(line) + "\n"));
      } else {
        write(out.encode(token.text));
      }
      const warning = warned ? null : uncachedWarning(gen.stats.ffn, gen.stats.forwardPasses);
      if (warning !== null) {
        endStdoutLine();
        info(warning);
        warned = true;
      }
    }
    if (flags.json) {
      write(
        out.encode(
          JSON.stringify(summaryRecord(gen.stats, model.mode, sampling.seed, text)) + "\n",
        ),
      );
    } else {
      write(out.encode("\n"));
    }
    info(summarize(gen.stats, model.mode));
    if (flags.stats !== undefined) {
      await writeJson(flags.stats, {
        model: path,
        mode: model.mode,
        seed: sampling.seed,
        plan: model.plan,
        stats: gen.stats,
      });
      info(`flashlm: telemetry written to ${flags.stats}`);
    }
    if (gen.stats.stopReason === "interrupted") throw new Interrupted();
  } finally {
    ctrlC.dispose();
    model.close();
  }
}

/** The last line of `--json`: what the run did, without the per-token telemetry. */
function summaryRecord(
  stats: GenerationStats,
  mode: string,
  seed: number,
  text: string,
): Record<string, unknown> {
  const { perToken: _, ...rest } = stats;
  return {
    type: "summary",
    mode,
    seed,
    text,
    tokensPerSecond: stats.generatedTokens / Math.max(stats.decodeMs / 1000, 1e-9),
    ...rest,
  };
}

/**
 * The prompt: `--prompt` (`-` reads stdin to its end), `--prompt-file`, or the default.
 * A trailing newline of a file or of stdin is dropped (as `$(cat file)` would).
 */
export async function readPrompt(
  prompt: string | undefined,
  promptFile: string | undefined,
): Promise<string> {
  if (promptFile !== undefined) {
    const text = await Deno.readTextFile(promptFile).catch((e) => {
      const why = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
      throw new FlashlmError(`cannot read the prompt file (${why})`, {
        file: promptFile,
        kind: "io",
      });
    });
    return text.replace(/\r?\n$/, "");
  }
  if (prompt === "-") {
    const text = await new Response(Deno.stdin.readable).text();
    return text.replace(/\r?\n$/, "");
  }
  return prompt ?? DEFAULT_PROMPT;
}
