/**
 * The memory budget: with `--memory`, the process's peak resident set (VmHWM in
 * /proc/self/status, measured in a child process) stays within the budget plus a stated
 * constant overhead across a 500-token generation; and the planner's numbers are the bytes
 * the loaded model actually holds.
 *
 * The overhead is measured, not guessed: a baseline child loads the same modules, reads the
 * model's header and tokenizer, builds the tokenizer and encodes a prompt, and reports its
 * own VmHWM. The allowed peak is budget + baseline + {@linkcode SLACK_BYTES} (V8 heap growth
 * and per-token garbage between collections).
 *
 * This file is also the child: `deno run -A tests/rss_test.ts child <baseline|generate> <model> [budget]`
 * prints one JSON line.
 */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { buildSyntheticHfModel } from "../tools/demo_model.ts";
import { loadModel } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { parseFlashHeader, PREAMBLE_BYTES } from "../core/flash_format.ts";
import { rewriteWithPredictor } from "../core/flash_write.ts";
import { Generation } from "../core/generate.ts";
import { fixedBytes, parseBudget } from "../core/memory_plan.ts";
import { LowRankPredictor, serializePredictor } from "../core/predictor.ts";
import { Rng } from "../core/sampler.ts";
import type { SparseFlashFfn } from "../core/sparse_ffn.ts";
import { OptTokenizer } from "../core/tokenizer.ts";
import { readExactly } from "../io/atomic_write.ts";
import { fixture } from "./fixtures.ts";

/** Allowed peak beyond budget + the measured overhead: run-to-run variation (GC timing). */
const SLACK_BYTES = 8 << 20;
const BUDGET = "ffn:25%";
const TOKENS = 500;
const PROMPT = "Once upon a time";

// ---------------------------------------------------------------------------
// The child

/** A field of /proc/self/status in bytes (e.g. VmHWM), or -1 where there is no /proc. */
function procStatusBytes(field: string): number {
  try {
    const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
      l.startsWith(`${field}:`)
    );
    const kb = Number(line?.split(/\s+/)[1]);
    return Number.isFinite(kb) ? kb * 1024 : -1;
  } catch {
    return -1;
  }
}

/** Header and tokenizer only: what every run needs besides the weights. */
async function baseline(path: string): Promise<Record<string, number>> {
  const f = await Deno.open(path);
  try {
    const size = (await f.stat()).size;
    const preamble = new Uint8Array(PREAMBLE_BYTES);
    await readExactly(f, preamble, 0, path);
    const prefix = new Uint8Array(
      PREAMBLE_BYTES + new DataView(preamble.buffer).getUint32(12, true),
    );
    await readExactly(f, prefix, 0, path);
    const { header } = parseFlashHeader(prefix, size, path);
    const tok = new Uint8Array(header.tokenizer.vocabLength + header.tokenizer.mergesLength);
    await readExactly(f, tok, header.tokenizer.offset, path);
    const text = new TextDecoder();
    const tokenizer = OptTokenizer.fromFiles(
      text.decode(tok.subarray(0, header.tokenizer.vocabLength)),
      text.decode(tok.subarray(header.tokenizer.vocabLength)),
      path,
    );
    return { promptTokens: tokenizer.encode(PROMPT).length };
  } finally {
    f.close();
  }
}

/** Sparse generation under the budget, as `cli.ts generate <model> --memory <budget>` runs it. */
async function generate(path: string, budget: string): Promise<Record<string, number>> {
  const model = await loadModel(path, { mode: "sparse", memory: parseBudget(budget) });
  try {
    const gen = new Generation(model, PROMPT, { maxTokens: TOKENS, stopAtEos: false });
    let tokens = 0;
    for await (const t of gen) if (t.id >= 0) tokens++;
    const plan = model.plan!;
    return {
      tokens,
      budgetBytes: plan.budgetBytes,
      plannedBytes: fixedBytes(plan.footprint) + plan.ffnCacheBytes,
      denseBytes: fixedBytes(plan.footprint) + plan.footprint.ffnAll,
    };
  } finally {
    model.close();
  }
}

if (import.meta.main && Deno.args[0] === "child") {
  const [, what, path, budget] = Deno.args;
  const result = what === "baseline" ? await baseline(path) : await generate(path, budget);
  console.log(
    JSON.stringify({ ...result, vmHWM: procStatusBytes("VmHWM"), vmRSS: procStatusBytes("VmRSS") }),
  );
  Deno.exit(0);
}

// ---------------------------------------------------------------------------
// Fixture: an OPT model of 46 MB in dense DRAM, f32 storage, with a (random) low-rank predictor

/**
 * The model (46 MB in dense DRAM: 512 wide, FFN 4096, 2 layers), or with `tiny` the same
 * code paths on a model of 2 MB, whose run measures the overhead that does not scale with
 * the model (runtime, modules, tokenizer, compiled code, V8 heap growth while generating).
 * Built once into the shared test fixtures.
 */
async function getModel(size: "big" | "tiny"): Promise<string> {
  const recipe = { name: `rss-${size}`, options: { size }, builtBy: import.meta.url };
  return `${await fixture(recipe, (dir) => buildModel(dir, size))}/model.flm`;
}

/** Build the model of `size` into `dir` as `model.flm`, with nothing else left there. */
async function buildModel(dir: string, size: "big" | "tiny"): Promise<void> {
  const big = size === "big";
  const config = await buildSyntheticHfModel(`${dir}/hf`, {
    dModel: big ? 512 : 32,
    dFfn: big ? 4096 : 128,
    nLayers: 2,
    nHeads: big ? 8 : 4,
    maxPositions: 520,
    extraTokens: 200,
    seed: 4,
  });
  await convertHfToFlash(`${dir}/hf`, `${dir}/plain.flm`, { dtype: "f32" });
  // A random predictor: memory is all this test looks at, not its accuracy.
  const { dModel, dFfn, nLayers } = config;
  const rng = new Rng(5);
  const rank = Math.min(32, dModel);
  const layers = Array.from({ length: nLayers }, () => ({
    rank,
    dModel,
    dFfn,
    a: Float32Array.from({ length: rank * dModel }, () => rng.normal() / Math.sqrt(dModel)),
    b: Float32Array.from({ length: dFfn * rank }, () => rng.normal() / Math.sqrt(rank)),
    c: Float32Array.from({ length: dFfn }, () => -2 + 0.3 * rng.normal()), // about 3% predicted active
    threshold: 0.5,
  }));
  const { meta, bytes } = serializePredictor(new LowRankPredictor(layers));
  await rewriteWithPredictor(await FlashModelFile.open(`${dir}/plain.flm`), `${dir}/model.flm`, {
    meta,
    bytes,
    report: null,
  });
  await Deno.remove(`${dir}/hf`, { recursive: true });
  await Deno.remove(`${dir}/plain.flm`);
}

async function child(args: string[]): Promise<Record<string, number>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "child", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

const mb = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

// ---------------------------------------------------------------------------
// Tests

const haveProc = Deno.build.os === "linux";
if (!haveProc) console.warn("ignoring the peak-RSS test: it reads /proc/self/status (Linux only)");

Deno.test({
  name:
    "with --memory the peak RSS of a 500-token generation stays within budget + the measured overhead + 8 MiB",
  ignore: !haveProc,
  fn: async () => {
    const [big, tiny] = [await getModel("big"), await getModel("tiny")];
    const base = await child(["baseline", big]);
    const overhead = await child(["generate", tiny, BUDGET]);
    const run = await child(["generate", big, BUDGET]);
    assert.equal(run.tokens, TOKENS);
    assert.equal(overhead.tokens, TOKENS);
    const allowed = run.budgetBytes + overhead.vmHWM + SLACK_BYTES;
    console.log(
      `budget ${BUDGET} = ${mb(run.budgetBytes)} (planned ${
        mb(run.plannedBytes)
      }; dense would hold ` +
        `${mb(run.denseBytes)})\n` +
        `constant overhead: runtime + modules + tokenizer ${
          mb(base.vmHWM)
        }; the same ${TOKENS}-token ` +
        `generation on a ${mb(overhead.denseBytes)} model peaks at ${mb(overhead.vmHWM)}\n` +
        `peak during ${TOKENS} tokens ${mb(run.vmHWM)} = budget + ${
          mb(run.vmHWM - run.budgetBytes)
        }; ` +
        `allowed ${mb(allowed)} (budget + ${mb(overhead.vmHWM)} + ${mb(SLACK_BYTES)})`,
    );
    // The bound must be able to fail: holding the rest of the FFN would break it.
    assert.ok(
      run.budgetBytes + SLACK_BYTES < run.denseBytes,
      "the bound is tighter than dense mode",
    );
    assert.ok(run.vmHWM <= allowed, `peak ${mb(run.vmHWM)} is over ${mb(allowed)}`);
  },
});

/** Distinct buffers reachable from `root` (typed arrays count their whole ArrayBuffer). */
function reachableBytes(root: unknown): number {
  const buffers = new Set<ArrayBufferLike>();
  const visited = new Set<unknown>();
  const stack: unknown[] = [root];
  while (stack.length) {
    const v = stack.pop();
    if (v === null || typeof v !== "object" || visited.has(v)) continue;
    visited.add(v);
    if (ArrayBuffer.isView(v)) buffers.add(v.buffer);
    else if (v instanceof ArrayBuffer) buffers.add(v);
    else if (v instanceof Map || v instanceof Set) stack.push(...v.values());
    else {for (const k of Object.getOwnPropertyNames(v)) {
        stack.push((v as Record<string, unknown>)[k]);
      }}
  }
  let total = 0;
  for (const b of buffers) total += b.byteLength;
  return total;
}

Deno.test("the memory plan is what the loaded sparse model holds: stores, KV cache, resident weights, predictor", async () => {
  const path = await getModel("big");
  const model = await loadModel(path, { mode: "sparse", memory: parseBudget(BUDGET) });
  const plan = model.plan!;
  const f = plan.footprint;
  const ffn = model.transformer.ffn as SparseFlashFfn;
  const stores = ffn.stores.reduce((sum, s) => sum + s.byteSize(), 0);
  assert.equal(stores, plan.ffnCacheBytes, "neuron stores");
  assert.equal(
    reachableBytes(ffn.stores),
    plan.ffnCacheBytes,
    "every array of the stores is counted",
  );
  assert.deepEqual(ffn.stores.map((s) => s.capacity), plan.rowsPerLayer);
  const resident = reachableBytes(model.transformer.weights);
  const residentPlanned = f.embeddings + f.attention + f.normsAndBiases;
  assert.ok(
    resident >= residentPlanned && resident <= residentPlanned + 64 * 64,
    `resident weights ${resident} B, planned ${residentPlanned} B (f32 views may pin 64-byte alignment padding)`,
  );
  const state =
    (model.transformer as unknown as { s: { keyCache: Float32Array; valueCache: Float32Array } }).s;
  assert.equal(state.keyCache.byteLength + state.valueCache.byteLength, f.kvCache, "KV cache");
  const predictor = (ffn as unknown as { predictor: LowRankPredictor }).predictor;
  assert.equal(predictor.byteSize(), f.predictor, "predictor");
  // Everything the model holds (the tokenizer's tables are part of the measured baseline).
  const held = reachableBytes({ ...model, tokenizer: null });
  const planned = fixedBytes(f) + plan.ffnCacheBytes;
  console.log(
    `planned ${mb(planned)} of a ${mb(plan.budgetBytes)} budget; the model holds ${mb(held)} ` +
      `(${mb(held - planned)} beyond the plan: reader scratch, the predictor's serialized copy)`,
  );
  assert.ok(
    held <= plan.budgetBytes,
    `the model holds ${mb(held)}, over the ${mb(plan.budgetBytes)} budget`,
  );
  model.close();
});
