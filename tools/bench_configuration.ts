/**
 * One configuration of `flashlm bench`, run in this process (the bench runs each in a
 * child of its own, `tools/bench_child.ts`): load the model, build the configuration's FFN
 * (`tools/bench_setups.ts`), evict the file from the page cache, run the prompt, then
 * measure `tokens` greedy tokens.
 *
 * @module
 */

import { evictFromPageCache } from "../io/page_cache.ts";
import { FlashlmError } from "../io/errors.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { planFromFile } from "../core/engine.ts";
import { fixedBytes, measureRuntime, modelFootprint } from "../core/memory_sizes.ts";
import { tokenizerFromFiles } from "../core/tokenizer_files.ts";
import { Transformer } from "../core/transformer.ts";
import { loadResidentWeights } from "../core/weights.ts";
import {
  type BenchConfigSpec,
  configOf,
  type ConfigResult,
  type ConfigRunSpec,
  emptyPerToken,
  type PerToken,
} from "./bench_configs.ts";
import {
  kernelReadBytes,
  loadAverage,
  procStatusBytes,
  resetPeakRss,
  runQueueWaitNs,
} from "./bench_probes.ts";
import { CONFIG_SETUPS } from "./bench_setups.ts";

// ---------------------------------------------------------------------------
// One configuration

/**
 * Run one configuration in this process: load, build its FFN, evict the file from the
 * page cache, run the prompt then `tokens` greedy tokens, and measure those tokens.
 *
 * @example Every FFN byte of a tiny model, read once per token
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runConfiguration } from "./bench_configuration.ts";
 * import { makeSyntheticModel } from "./make_model.ts";
 * const dir = await Deno.makeTempDir();
 * await makeSyntheticModel(`${dir}/tiny.flm`, { shape: "tiny", sparsity: 0.9, dtype: "f32" });
 * const r = await runConfiguration({
 *   name: "naive", model: `${dir}/tiny.flm`, split: null,
 *   memory: { kind: "ffn-percent", percent: 50 }, tokens: 2, prompt: "a b",
 * });
 * assert.equal(r.measuredTokens, 2);
 * assert.equal(r.perToken.bytes, 2 * 256 * 2 * 64 * 4); // 2 layers of 256 bundles, f32
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function runConfiguration(spec: ConfigRunSpec): Promise<ConfigResult> {
  const config = configOf(spec.name);
  const path = {
    "row-column-bundles": spec.model,
    split: spec.split,
    friends: spec.friends?.withHot ?? null,
    "friends-no-hot": spec.friends?.noHot ?? null,
  }[config.layout];
  if (!path) {
    throw new FlashlmError(
      config.layout === "split"
        ? `configuration ${spec.name} needs the unbundled (split) copy of the model`
        : `configuration ${spec.name} needs a friend-bundled copy (--${config.layout})`,
      { kind: "usage" },
    );
  }
  const loadBefore = loadAverage();
  const runtime = measureRuntime(); // before the model is loaded
  const file = await FlashModelFile.open(path);
  const c = file.config;
  const tokenizer = tokenizerFromFiles(file.tokenizerFiles, path);
  const threads = spec.threads ?? 1;
  const resident = await loadResidentWeights(c, file, { shared: threads > 1 });
  file.releaseResident();
  (globalThis as { gc?: () => void }).gc?.(); // free the f16 copy now (children run with --expose-gc)
  let promptIds = tokenizer.encode(spec.prompt);
  if (promptIds.length + spec.tokens > c.maxPositions) {
    promptIds = promptIds.slice(0, Math.max(1, c.maxPositions - spec.tokens));
  }
  const contextLength = Math.min(c.maxPositions, promptIds.length + spec.tokens);

  // The budget, in bytes, as the sparse planner reads it (same number in every child
  // that reads the same file).
  const predictor = spec.predictor === "oracle" || !file.header.predictor ? "oracle" : "file";
  const budgetBytes = planFromFile(file, { memory: spec.memory, predictor }, contextLength, runtime)
    .budgetBytes;
  const setup = await CONFIG_SETUPS[spec.name]({
    spec,
    path,
    file,
    resident,
    contextLength,
    depth: spec.readerDepth ?? 32,
    budgetBytes,
    runtime,
    fixed: fixedBytes(modelFootprint(c, file.dtype, 0, contextLength, { threads })),
    // one layer as read (and reordered, split layout): what naive and hybrid read into
    layerBuffers: (file.layout === "split" ? 2 : 1) * c.dFfn * file.bundleBytes,
  });
  if ("skipped" in setup) return skippedResult(spec, config, path, setup.skipped);
  const { ffn, reader, afterToken } = setup;

  const transformer = new Transformer(resident, ffn, contextLength, "f16", { threads });
  const evictMethod = await evictFromPageCache(path);
  const loadPeakRssBytes = procStatusBytes("VmHWM");
  resetPeakRss();

  // The run: the prompt's passes (warm-up), then `tokens` measured passes, each
  // feeding the previous greedy token.
  const sum = emptyPerToken();
  const generated: number[] = [];
  let next = promptIds[0];
  const passes = promptIds.length + spec.tokens; // positions 0 .. passes - 1
  let measured = 0;
  // Counters before each pass (copied into, so the loop allocates nothing).
  const stats0 = { ...ffn.stats };
  const reader0 = reader ? { ...reader.stats } : null;
  try {
    for (let pos = 0; pos < passes; pos++) {
      Object.assign(stats0, ffn.stats);
      if (reader) Object.assign(reader0!, reader.stats);
      const attention0 = transformer.residentMs;
      const kernel0 = kernelReadBytes();
      const wait0 = runQueueWaitNs();
      const t0 = performance.now();
      const logits = await transformer.forward(next, pos);
      const totalMs = performance.now() - t0;
      const waitMs = (runQueueWaitNs() - wait0) / 1e6;
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      const prompt = pos < promptIds.length;
      next = pos + 1 < promptIds.length ? promptIds[pos + 1] : best;
      if (pos + 1 >= promptIds.length) generated.push(best);
      if (!prompt) {
        const s = ffn.stats;
        measured++;
        sum.waitMs += waitMs;
        sum.bytes += s.bytesRead - stats0.bytesRead;
        sum.readerBytes += reader ? reader.stats.bytes - reader0!.bytes : 0;
        sum.diskBytes += reader ? reader.stats.diskBytes - reader0!.diskBytes : 0;
        sum.reads += reader ? reader.stats.reads - reader0!.reads : 0;
        sum.kernelReadBytes += kernelReadBytes() - kernel0;
        sum.ioMs += s.ioMs - stats0.ioMs;
        sum.ioWaitMs += s.ioWaitMs - stats0.ioWaitMs;
        sum.memoryMs += s.memoryMs - stats0.memoryMs;
        sum.ffnComputeMs += s.computeMs - stats0.computeMs;
        sum.checkMs += s.checkMs - stats0.checkMs;
        sum.predictorMs += s.predictorMs - stats0.predictorMs;
        sum.otherMs += transformer.residentMs - attention0;
        sum.totalMs += totalMs;
        sum.neuronsLoaded += s.neuronsLoaded - stats0.neuronsLoaded;
        sum.neuronsPredicted += s.neuronsPredicted - stats0.neuronsPredicted;
      }
      if (spec.verbose) {
        console.error(
          `  [${spec.name}] pass ${pos + 1}/${passes}${prompt ? " (prompt)" : ""}: ${
            totalMs.toFixed(1)
          } ms` +
            ` (${waitMs.toFixed(1)} ms waiting for a CPU)`,
        );
      }
      await afterToken(); // outside the timed part
    }
  } finally {
    transformer.close();
  }
  const perToken = emptyPerToken();
  for (const key of Object.keys(perToken) as (keyof PerToken)[]) {
    perToken[key] = sum[key] / Math.max(measured, 1);
  }
  return {
    name: spec.name,
    label: config.label,
    description: config.description,
    path,
    note: setup.note,
    predictor: setup.predictor,
    backend: reader?.backend ?? null,
    threads,
    evictMethod,
    budgetBytes,
    memory: setup.memory,
    promptTokens: promptIds.length,
    measuredTokens: measured,
    perToken,
    mbPerSec: perToken.ioMs > 0 ? perToken.bytes / 1e6 / (perToken.ioMs / 1000) : 0,
    tokensPerSec: perToken.totalMs > 0 ? 1000 / perToken.totalMs : 0,
    peakRssBytes: procStatusBytes("VmHWM"),
    loadPeakRssBytes,
    generated,
    loadAverage: [loadBefore, loadAverage()],
  };
}

/**
 * The result of a configuration that could not run, saying why.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { skippedResult } from "./bench_configuration.ts";
 * import { configOf } from "./bench_configs.ts";
 * const spec = {
 *   name: "dense-DRAM" as const, model: "m.flm", split: null,
 *   memory: { kind: "model-percent" as const, percent: 50 }, tokens: 1, prompt: "a",
 * };
 * const r = skippedResult(spec, configOf("dense-DRAM"), "m.flm", "does not fit in DRAM");
 * assert.equal(r.skipped, "does not fit in DRAM");
 * assert.equal(r.measuredTokens, 0);
 * ```
 */
export function skippedResult(
  spec: ConfigRunSpec,
  config: BenchConfigSpec,
  path: string,
  why: string,
): ConfigResult {
  return {
    name: spec.name,
    label: config.label,
    description: config.description,
    skipped: why,
    path,
    note: why,
    predictor: null,
    backend: null,
    threads: spec.threads ?? 1,
    evictMethod: "none",
    budgetBytes: 0,
    memory: {},
    promptTokens: 0,
    measuredTokens: 0,
    perToken: emptyPerToken(),
    mbPerSec: 0,
    tokensPerSec: 0,
    peakRssBytes: procStatusBytes("VmHWM"),
    loadPeakRssBytes: procStatusBytes("VmHWM"),
    generated: [],
    loadAverage: [loadAverage(), loadAverage()],
  };
}
