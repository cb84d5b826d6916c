/**
 * `flashlm chat`: an interactive loop over stdin. The KV cache is kept between turns, so a
 * turn runs only its own new tokens; `/reset` empties it, `/stats` prints the figures,
 * Ctrl-D (end of input) quits, Ctrl-C stops with the summary.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import {
  checkOutputPath,
  type CommandSpec,
  info,
  Interrupted,
  onCtrlC,
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
import type { ChatMessage } from "../core/chat_template.ts";
import { type LoadedModel, loadModel } from "../core/engine.ts";
import type { Tokenizer } from "../core/tokenizer.ts";
import { type ChatFormat, chatFormatFromFiles } from "../core/tokenizer_files.ts";
import { describePlan } from "../core/memory_plan.ts";
import { Generation, type GenerationStats, summarize } from "../core/generate.ts";

/** Usage, summary, examples and flags of `chat`. */
export const spec = {
  usage: "flashlm chat <model> [options]",
  summary: "chat on stdin: one line per turn, the KV cache kept between turns; " +
    "/reset, /stats, Ctrl-D quits",
  examples: [
    "flashlm chat tiny.flm",
    "flashlm chat tiny.flm --max-tokens 32 --stop . --repeat-penalty 1.3",
    'printf "The city\\n/stats\\n" | flashlm chat tiny.flm --max-tokens 8',
  ],
  flags: {
    "max-tokens": { type: "integer", help: "most tokens per reply", default: 64, min: 1 },
    ...SAMPLING_FLAGS,
    context: {
      type: "integer",
      help: "KV cache length in tokens (when full, the oldest half is dropped, the first " +
        "token kept, and the rest run again)",
      shownDefault: "the model's maximum positions",
      min: 2,
    },
    ...MODEL_FLAGS,
    stats: {
      type: "string",
      help: "write every turn's figures as JSON to this file when the chat ends",
    },
  },
} as const satisfies CommandSpec;

// ---------------------------------------------------------------------------
// How a conversation becomes model text

/**
 * OPT has no chat template: the conversation is plain text the model continues, each user
 * turn on a new line and each reply right after it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { plainTextChat } from "./chat.ts";
 * import { buildByteLevelVocab } from "../core/gpt2_bpe.ts";
 * import { OptTokenizer } from "../core/tokenizer.ts";
 * const tokenizer = OptTokenizer.fromFiles(buildByteLevelVocab(100).vocabJson, null, "vocab.json");
 * const chat = plainTextChat(tokenizer);
 * const messages = [
 *   { role: "user", content: "The city" },
 *   { role: "assistant", content: " is old." },
 *   { role: "user", content: "The river" },
 * ];
 * assert.equal(chat.render(messages), "The city is old.\nThe river");
 * assert.deepEqual(chat.encode(messages), tokenizer.encode("The city is old.\nThe river"));
 * ```
 */
export function plainTextChat(tokenizer: Tokenizer): ChatFormat {
  const render = (messages: ChatMessage[]): string =>
    messages.map((m, i) => (m.role === "user" && i > 0 ? `\n${m.content}` : m.content)).join("");
  return { render, encode: (messages) => tokenizer.encode(render(messages)) };
}

/**
 * The chat format of `model`, and how to name it: the `chat_template` of its
 * tokenizer_config.json when it has one (chat-tuned Llama-family models), else plain text
 * (OPT, base models: the model continues the conversation's text).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { chatFormat } from "./chat.ts";
 * import type { LoadedModel } from "../core/engine.ts";
 * import { tokenizerFromFiles } from "../core/tokenizer_files.ts";
 * const enc = new TextEncoder();
 * const files = new Map([
 *   ["tokenizer.json", enc.encode(JSON.stringify({
 *     model: { type: "BPE", vocab: { "<s>": 0, "H": 1, "i": 2, "Hi": 3, "[": 4, "]": 5 }, merges: ["H i"] },
 *   }))],
 *   ["tokenizer_config.json", enc.encode(JSON.stringify({
 *     bos_token: "<s>",
 *     chat_template: "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}",
 *   }))],
 * ]);
 * const tokenizer = tokenizerFromFiles(files, "m");
 * const model = { path: "m", tokenizer, tokenizerFiles: files } as unknown as LoadedModel;
 * const { format, name } = chatFormat(model);
 * assert.match(name, /chat template/);
 * assert.equal(format.render([{ role: "user", content: "Hi" }]), "<s>[Hi]");
 * const plain = chatFormat({ ...model, tokenizerFiles: new Map() } as unknown as LoadedModel);
 * assert.match(plain.name, /^plain text/);
 * ```
 */
export function chatFormat(model: LoadedModel): { format: ChatFormat; name: string } {
  const template = chatFormatFromFiles(model.tokenizerFiles, model.path, model.tokenizer);
  if (template) {
    return { format: template, name: "the model's chat template (tokenizer_config.json)" };
  }
  return {
    format: plainTextChat(model.tokenizer),
    name: "plain text (the model continues your text; it has no chat template)",
  };
}

/** How many leading ids `a` and `b` share. */
function sharedPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

// ---------------------------------------------------------------------------
// The loop

/** Read turns from stdin until it ends or Ctrl-C; stream each reply to stdout. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("chat needs one model (a .flm file or HF directory)");
  if (flags.stats !== undefined) await checkOutputPath(flags.stats, "--stats");
  const model = await loadModel(positional[0], modelLoadOptions(flags, undefined));
  const ctrlC = onCtrlC();
  const turns: GenerationStats[] = [];
  const encoder = new TextEncoder();
  try {
    if (model.plan) info(describePlan(model.plan));
    const sampling = samplingOptions(flags);
    const { format, name } = chatFormat(model);
    const interactive = stdinIsTerminal();
    info(describeModel(model, (sampling.temperature ?? 0) > 0 ? sampling.seed : null));
    info(`flashlm chat: ${name}; /reset starts over, /stats shows figures, Ctrl-D quits`);
    let messages: ChatMessage[] = [];
    let cached: number[] = []; // the ids in the KV cache, position by position
    let interrupted = false;
    for await (const line of stdinLines(ctrlC.signal, interactive ? "> " : "")) {
      const text = line.trim();
      if (text === "") continue;
      if (text === "/reset") {
        messages = [];
        cached = [];
        info("flashlm chat: context cleared");
        continue;
      }
      if (text === "/stats") {
        info(chatStats(turns, cached.length, model));
        continue;
      }
      if (text.startsWith("/")) {
        info(`flashlm chat: unknown command ${text} (/reset, /stats; Ctrl-D quits)`);
        continue;
      }
      messages.push({ role: "user", content: text });
      // The whole conversation's ids: the KV cache keeps the prefix it shares with them
      // (everything but what the last reply's text re-tokenizes differently), and only the
      // rest is run.
      const ids = format.encode(messages, true);
      const keep = Math.min(sharedPrefix(cached, ids), ids.length - 1);
      const gen = new Generation(model, ids.slice(keep), {
        ...sampling,
        maxTokens: flags["max-tokens"],
        context: cached.slice(0, keep),
        contextShift: true,
        signal: ctrlC.signal,
        telemetry: flags.stats !== undefined,
      });
      let reply = "";
      for await (const token of gen) {
        reply += token.text;
        write(encoder.encode(token.text));
      }
      write(encoder.encode("\n"));
      messages.push({ role: "assistant", content: reply });
      cached = gen.cachedIds;
      turns.push(gen.stats);
      if (gen.stats.stopReason === "interrupted") {
        interrupted = true;
        break;
      }
    }
    interrupted ||= ctrlC.signal.aborted;
    info(chatStats(turns, cached.length, model));
    if (flags.stats !== undefined) {
      await writeJson(flags.stats, {
        model: model.path,
        mode: model.mode,
        seed: sampling.seed,
        plan: model.plan,
        turns,
      });
      info(`flashlm: telemetry written to ${flags.stats}`);
    }
    if (interrupted) throw new Interrupted();
  } finally {
    ctrlC.dispose();
    model.close();
  }
}

/** Whether stdin is a terminal (false where the runtime cannot say). */
function stdinIsTerminal(): boolean {
  try {
    return Deno.stdin.isTerminal();
  } catch {
    return false;
  }
}

/** `/stats`: the last turn's summary line and the chat's totals. */
function chatStats(turns: GenerationStats[], cached: number, model: LoadedModel): string {
  const tokens = turns.reduce((a, t) => a + t.generatedTokens, 0);
  const shifts = turns.reduce((a, t) => a + t.contextShifts, 0);
  const totals = `chat: ${turns.length} turn${turns.length === 1 ? "" : "s"} · ${tokens} ` +
    `tokens generated · context ${cached} of ${model.transformer.contextLength} positions used` +
    (shifts > 0 ? ` · ${shifts} context shifts` : "");
  return turns.length === 0
    ? totals
    : `last turn: ${summarize(turns[turns.length - 1], model.mode)}\n${totals}`;
}

/**
 * The lines of stdin, without their line ends, until it ends or `signal` aborts; `prompt`
 * is written to stderr before each one (on a terminal).
 */
async function* stdinLines(signal: AbortSignal, prompt: string): AsyncGenerator<string> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  const aborted = new Promise<null>((resolve) => {
    if (signal.aborted) resolve(null);
    signal.addEventListener("abort", () => resolve(null), { once: true });
  });
  const ask = (): void => {
    if (prompt) Deno.stderr.writeSync(new TextEncoder().encode(prompt));
  };
  let buffered = "";
  try {
    ask();
    for (;;) {
      const newline = buffered.indexOf("\n");
      if (newline >= 0) {
        const line = buffered.slice(0, newline).replace(/\r$/, "");
        buffered = buffered.slice(newline + 1);
        yield line;
        if (signal.aborted) return;
        ask();
        continue;
      }
      const chunk = await Promise.race([reader.read(), aborted]);
      if (chunk === null) return; // Ctrl-C while waiting for a line
      if (chunk.done) {
        if (buffered) yield buffered;
        if (prompt) info("");
        return;
      }
      buffered += chunk.value;
    }
  } finally {
    reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
