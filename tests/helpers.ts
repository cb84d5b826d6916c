/** Shared test helpers: tiny synthetic models in temp dirs, the real model's location, the CLI. */

import { buildSyntheticHfModel, type SyntheticModelOptions } from "../tools/demo_model.ts";
import type { LoadedModel } from "../core/engine.ts";

/**
 * The shared real checkpoint: `../shared/models/tiny-opt-wikitext2` beside the repository
 * (found from this file, so it does not depend on where the checkout is or on the cwd).
 */
export const REAL_MODEL_DIR =
  new URL("../../shared/models/tiny-opt-wikitext2", import.meta.url).pathname;

/** Held-out WikiText-2 text beside the repository (`../shared/data`), for the real model. */
export const HELDOUT_TEXT =
  new URL("../../shared/data/wikitext2-heldout.txt", import.meta.url).pathname;

/** Whether `path` exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Shared fixtures already reported missing (each is reported once per module load). */
const reportedMissing = new Set<string>();

/**
 * Whether every one of `paths` (files or folders of a shared fixture outside the repository)
 * exists. When some do not, prints one line naming them, so that a test declared with
 * `ignore: !haveSharedFixture(...)` is visibly ignored rather than silently passed.
 */
export function haveSharedFixture(...paths: string[]): boolean {
  const missing = paths.filter((path) => !exists(path));
  const unreported = missing.filter((path) => !reportedMissing.has(path));
  if (unreported.length > 0) {
    for (const path of unreported) reportedMissing.add(path);
    console.warn(`ignoring the tests that need ${unreported.join(", ")}: absent on this machine`);
  }
  return missing.length === 0;
}

/** Whether the real model is here (its config, weights, tokenizer and reference.json). */
export function haveRealModel(): boolean {
  if (!exists(REAL_MODEL_DIR)) return haveSharedFixture(REAL_MODEL_DIR);
  return haveSharedFixture(
    ...["config.json", "model.safetensors", "vocab.json", "merges.txt", "reference.json"].map(
      (name) => `${REAL_MODEL_DIR}/${name}`,
    ),
  );
}

/** Options of the tiny models the tests build. */
export const TINY: SyntheticModelOptions = {
  dModel: 32,
  dFfn: 128,
  nLayers: 2,
  nHeads: 4,
  maxPositions: 64,
  extraTokens: 200,
  seed: 7,
};

/** Build a tiny synthetic HF model in a fresh temp dir; returns the dir. */
export async function tinyHfModel(options: SyntheticModelOptions = {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-test-" });
  await buildSyntheticHfModel(dir, { ...TINY, ...options });
  return dir;
}

/** Logits after each token of `ids` (copies), run through `model` from position 0. */
export async function logitsPerPosition(
  model: LoadedModel,
  ids: number[],
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let pos = 0; pos < ids.length; pos++) {
    out.push((await model.transformer.forward(ids[pos], pos)).slice());
  }
  return out;
}

/** Largest |a - b| over two arrays of the same length. */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A deterministic prompt of `n` token ids below `vocab`, starting with </s> (2). */
export function promptIds(n: number, vocab: number): number[] {
  const ids = [2];
  for (let i = 1; i < n; i++) ids.push(4 + ((i * 37 + 11) % (vocab - 4)));
  return ids;
}

/** Run cli.ts in a child Deno with `args`; returns exit code, stdout and stderr. */
export async function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
