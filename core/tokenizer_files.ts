/**
 * A model folder's tokenizer, whatever its kind, chosen by the files present:
 *
 * | files | tokenizer |
 * |---|---|
 * | `tokenizer.json` | Hugging Face BPE (Llama 3, Qwen2, SmolLM2, TinyLlama, Mistral): core/hf_tokenizer.ts |
 * | `tokenizer.model` | SentencePiece BPE (Llama 2): core/sentencepiece.ts |
 * | `vocab.json` + `merges.txt` | GPT-2 byte-level BPE with the model's ids (OPT): core/tokenizer.ts |
 * | `tokenizer.bin` | llama2.c's export of a SentencePiece vocabulary: core/sentencepiece.ts |
 *
 * The first that is present wins. `tokenizer_config.json` (else `special_tokens_map.json`) says
 * which tokens are BOS and EOS (`bos_token`, `eos_token`, as text or `{content}` objects) and
 * whether prompts start with BOS (`add_bos_token`).
 *
 * {@linkcode chatFormatFromFiles} gives the model's chat template, when it has one.
 *
 * The files are taken as a map name -> bytes, so a converted model can carry them inside its
 * own file and rebuild the same tokenizer; {@linkcode readTokenizerFiles} reads them from a folder.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { FlashlmError, ioError, showValue } from "../io/errors.ts";
import { type ChatMessage, chatTemplateFromConfig } from "./chat_template.ts";
import { escapeRegex } from "./hf_pretokenize.ts";
import { HfTokenizer, type HfTokenizerOptions } from "./hf_tokenizer.ts";
import { SentencePieceTokenizer } from "./sentencepiece.ts";
import type { SpecialTokenOverrides } from "./sentencepiece_files.ts";
import { OptTokenizer, type Tokenizer } from "./tokenizer.ts";

/**
 * The files a model folder's tokenizer may consist of (each optional), in the order they are
 * considered.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TOKENIZER_FILE_NAMES } from "./tokenizer_files.ts";
 * assert.ok(TOKENIZER_FILE_NAMES.includes("tokenizer.model"));
 * ```
 */
export const TOKENIZER_FILE_NAMES: readonly string[] = [
  "tokenizer.json",
  "tokenizer.model",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "tokenizer.bin",
];

const UTF8 = new TextDecoder();

/** A special token's text: a string, `{content: string}`, or null/absent. */
function tokenText(value: unknown): string | null | undefined {
  if (value === null) return null;
  if (typeof value === "string") return value;
  if (typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

/** What tokenizer_config.json (or special_tokens_map.json) says, checked. */
function readConfig(files: ReadonlyMap<string, Uint8Array>, source: string): HfTokenizerOptions {
  const options: HfTokenizerOptions = {};
  for (const name of ["special_tokens_map.json", "tokenizer_config.json"]) {
    const bytes = files.get(name);
    if (bytes === undefined) continue;
    const file = join(source, name);
    let json: unknown;
    try {
      json = JSON.parse(UTF8.decode(bytes).replace(/^\uFEFF/, ""));
    } catch (err) {
      const detail = (err as Error).message.replace(/\s+/g, " ").slice(0, 200);
      throw new FlashlmError(`not valid JSON (${detail})`, { file, cause: err });
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new FlashlmError("not a JSON object", { file });
    }
    const config = json as Record<string, unknown>;
    const set = (key: "bosToken" | "eosToken" | "padToken" | "unkToken", field: string): void => {
      if (!(field in config)) return;
      const text = tokenText(config[field]);
      if (text === undefined) {
        throw new FlashlmError(
          `${field} is ${showValue(config[field])}, expected a string, {"content": ...} or null`,
          { file, kind: "config" },
        );
      }
      options[key] = text;
    };
    set("bosToken", "bos_token");
    set("eosToken", "eos_token");
    set("padToken", "pad_token");
    set("unkToken", "unk_token");
    if ("add_bos_token" in config) {
      if (typeof config.add_bos_token !== "boolean") {
        throw new FlashlmError(
          `add_bos_token is ${showValue(config.add_bos_token)}, expected true or false`,
          { file, kind: "config" },
        );
      }
      options.addBos = config.add_bos_token;
    }
  }
  return options;
}

/**
 * The tokenizer made of a model's tokenizer files (see the module doc for which is used).
 *
 * @param files File name (one of {@linkcode TOKENIZER_FILE_NAMES}) -> its bytes.
 * @param source The folder (or container) the files come from, to name them in errors.
 * @returns The tokenizer.
 * @throws {FlashlmError} naming the file when it is malformed or unsupported, or `source` when
 *   no tokenizer is among the files.
 *
 * @example A Llama-style tokenizer.json with a tokenizer_config.json
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tokenizerFromFiles } from "./tokenizer_files.ts";
 * const enc = new TextEncoder();
 * const files = new Map([
 *   ["tokenizer.json", enc.encode(JSON.stringify({
 *     model: { type: "BPE", vocab: { "<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4 }, merges: ["a b"] },
 *     added_tokens: [{ id: 0, content: "<s>", special: true }, { id: 1, content: "</s>", special: true }],
 *   }))],
 *   ["tokenizer_config.json", enc.encode('{"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>"}')],
 * ]);
 * const tok = tokenizerFromFiles(files, "demo");
 * assert.deepEqual(tok.encode("abab"), [0, 4, 4]);
 * assert.equal(tok.eosId, 1);
 * assert.throws(() => tokenizerFromFiles(new Map(), "demo"), /^FlashlmError: demo: no tokenizer/);
 * ```
 */
export function tokenizerFromFiles(
  files: ReadonlyMap<string, Uint8Array>,
  source: string,
): Tokenizer {
  const config = readConfig(files, source);
  const json = files.get("tokenizer.json");
  if (json !== undefined) {
    return HfTokenizer.fromJson(UTF8.decode(json), join(source, "tokenizer.json"), config);
  }
  const overrides: SpecialTokenOverrides = {
    addBos: config.addBos,
    bosToken: config.bosToken,
    eosToken: config.eosToken,
  };
  const model = files.get("tokenizer.model");
  if (model !== undefined) {
    return SentencePieceTokenizer.fromModelFile(model, join(source, "tokenizer.model"), overrides);
  }
  const vocab = files.get("vocab.json");
  if (vocab !== undefined) {
    const merges = files.get("merges.txt");
    return OptTokenizer.fromFiles(
      UTF8.decode(vocab),
      merges === undefined ? null : UTF8.decode(merges),
      join(source, "vocab.json"),
    );
  }
  const bin = files.get("tokenizer.bin");
  if (bin !== undefined) {
    return SentencePieceTokenizer.fromLlama2cFile(
      bin,
      join(source, "tokenizer.bin"),
      undefined,
      overrides,
    );
  }
  throw new FlashlmError(
    "no tokenizer: none of tokenizer.json, tokenizer.model, vocab.json (with merges.txt) or " +
      "tokenizer.bin (llama2.c) is there",
    { file: source, kind: "config" },
  );
}

/** A model's chat format: its chat template, with its BOS and EOS text filled in. */
export interface ChatFormat {
  /**
   * The prompt text of a conversation, ending with the start of an assistant turn when
   * `addGenerationPrompt` (templates write BOS themselves).
   */
  render(messages: ChatMessage[], addGenerationPrompt?: boolean): string;
  /**
   * The prompt ids of a conversation: the rendered text with its BOS and EOS text as those
   * ids (a tokenizer encodes such text as plain characters) and the rest encoded without an
   * added BOS, as transformers' `apply_chat_template(tokenize=True)` does.
   */
  encode(messages: ChatMessage[], addGenerationPrompt?: boolean): number[];
}

/**
 * The chat format in a model's tokenizer files: `tokenizer_config.json`'s `chat_template`, with
 * `bos_token` and `eos_token` from the same files, encoding with `tokenizer`; null when there is
 * no template.
 *
 * @throws {FlashlmError} naming the file when the config or its template is malformed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { chatFormatFromFiles, tokenizerFromFiles } from "./tokenizer_files.ts";
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
 * const chat = chatFormatFromFiles(files, "m", tokenizerFromFiles(files, "m"));
 * assert.equal(chat?.render([{ role: "user", content: "Hi" }]), "<s>[Hi]");
 * assert.deepEqual(chat?.encode([{ role: "user", content: "Hi" }]), [0, 4, 3, 5]);
 * ```
 */
export function chatFormatFromFiles(
  files: ReadonlyMap<string, Uint8Array>,
  source: string,
  tokenizer: Tokenizer,
): ChatFormat | null {
  const bytes = files.get("tokenizer_config.json");
  if (bytes === undefined) return null;
  const template = chatTemplateFromConfig(
    UTF8.decode(bytes),
    join(source, "tokenizer_config.json"),
  );
  if (template === null) return null;
  const { bosToken, eosToken } = readConfig(files, source);
  const render = (messages: ChatMessage[], addGenerationPrompt = false): string =>
    template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: bosToken ?? "",
      eos_token: eosToken ?? "",
    });
  const specials = new Map<string, number>();
  if (bosToken && tokenizer.bosId >= 0) specials.set(bosToken, tokenizer.bosId);
  if (eosToken && tokenizer.eosId >= 0) specials.set(eosToken, tokenizer.eosId);
  const encode = (messages: ChatMessage[], addGenerationPrompt = false): number[] => {
    const text = render(messages, addGenerationPrompt);
    const ids: number[] = [];
    let last = 0;
    if (specials.size > 0) {
      const pattern = [...specials.keys()].map(escapeRegex);
      for (const match of text.matchAll(new RegExp(pattern.join("|"), "g"))) {
        if (match.index! > last) {
          ids.push(...tokenizer.encode(text.slice(last, match.index), { addBos: false }));
        }
        ids.push(specials.get(match[0])!);
        last = match.index! + match[0].length;
      }
    }
    if (last < text.length) ids.push(...tokenizer.encode(text.slice(last), { addBos: false }));
    return ids;
  };
  return { render, encode };
}

/**
 * The tokenizer files present in a folder, by name (absent ones are left out).
 *
 * @throws {FlashlmError} (kind "io") naming the file when one exists but cannot be read.
 */
export async function readTokenizerFiles(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of TOKENIZER_FILE_NAMES) {
    const path = join(dir, name);
    try {
      files.set(name, new Uint8Array(await readFile(path))); // node:fs, so Bun runs it too
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ENOENT" || code === "ENOTDIR") continue;
      throw ioError("cannot read tokenizer file", path, err);
    }
  }
  return files;
}

/**
 * The tokenizer of a model folder: {@linkcode readTokenizerFiles} then
 * {@linkcode tokenizerFromFiles}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadTokenizer } from "./tokenizer_files.ts";
 * await assert.rejects(loadTokenizer("/no/such/model"), /\/no\/such\/model: no tokenizer/);
 * ```
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  return tokenizerFromFiles(await readTokenizerFiles(dir), dir);
}
