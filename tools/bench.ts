/**
 * `flashlm bench <model.flm>`: every baseline of *LLM in a Flash* (Tables 2 and 3)
 * measured in one run, on one machine, on the same prompt:
 *
 * | configuration  | FFN weights come from                                                |
 * | -------------- | -------------------------------------------------------------------- |
 * | dense-DRAM     | DRAM, all loaded before the run (f32; f16 when f32 does not fit)     |
 * | naive          | flash, every byte of every layer every token                         |
 * | hybrid         | DRAM for the first neurons of each layer the budget pays for, flash  |
 * |                | for the rest                                                         |
 * | page-cache     | buffered reads of every layer every token; the page cache keeps the  |
 * |                | budget's share                                                       |
 * | predictor only | flash, the predicted neurons, nothing kept between tokens (k = 0),   |
 * |                | unbundled layout                                                     |
 * | + windowing    | flash, only neurons the last k tokens did not use, unbundled layout  |
 * | + bundling     | the same with row-column bundles: the paper's full method            |
 * | flashlm        | bundles, lowest decaying activation count evicted, missing neurons   |
 * |                | read above the load threshold: flashlm's default                     |
 *
 * Each configuration runs in its own child process (`tools/bench_child.ts`), so peak
 * RSS is per configuration, with the model file evicted from the page cache after
 * loading. Flash configurations evict it again after every token (outside the timed
 * part), so every byte they read comes from the disk — as with the paper's uncached
 * reads — and the page cache never holds more than the budget.
 *
 * The pieces: the configurations (`bench_configs.ts`), how each builds its FFN
 * (`bench_setups.ts`), one configuration measured (`bench_configuration.ts`), the child
 * process (`bench_child.ts`), the tables and chart (`bench_report.ts`); this file runs
 * them all and writes the report.
 *
 * @module
 */

import { evictFromPageCache } from "../io/page_cache.ts";
import { atomicWriteFile, readExactly, writeAll } from "../io/atomic_write.ts";
import { FlashlmError } from "../io/errors.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { type FlashHeader, parseFlashHeader, PREAMBLE_BYTES } from "../core/flash_format.ts";
import { rewriteWithLayout } from "../core/flash_write.ts";
import type { ModelConfig } from "../core/config.ts";
import type { Budget } from "../core/memory_sizes.ts";
import { modelBytesOnFlash } from "../core/memory_sizes.ts";
import {
  BENCH_CONFIGS,
  type BenchConfigName,
  configOf,
  type ConfigResult,
  type ConfigRunSpec,
} from "./bench_configs.ts";
import { runInChild } from "./bench_child.ts";
import { loadAverage, memAvailable } from "./bench_probes.ts";
import { benchChart, type BenchReport, formatBenchReport } from "./bench_report.ts";

// ---------------------------------------------------------------------------
// The whole run

/** Options of {@linkcode runBench}. */
export interface BenchOptions {
  /** The bundled flashlm model. */
  model: string;
  /** DRAM budget of hybrid, page-cache and the sparse configurations. */
  memory: Budget;
  /** Tokens to measure after the prompt. Default 16. */
  tokens?: number;
  /**
   * Runs of every configuration, taken in turn (1, 2, ..., 1, 2, ...); each row is its
   * configuration's median run by total latency. Default 1.
   */
  rounds?: number;
  /** Prompt text. */
  prompt: string;
  /** Where bench.json, bench.txt and bench.svg go (and the split copy unless `split` is given). */
  outDir: string;
  /** The unbundled copy to use (made in `outDir` when absent). */
  split?: string;
  /**
   * Closest-friend copies of the model (`flashlm stats --friends`): with them the friends
   * rows run (by default only then).
   */
  friends?: { withHot?: string; noHot?: string };
  /** Configurations to run (default all). */
  configs?: BenchConfigName[];
  /** Reads in flight. Default 32. */
  readerDepth?: number;
  /** Threads the kernels run on in every configuration, this one included. Default 1. */
  threads?: number;
  /** Predictor choice of the sparse configurations. Default auto. */
  predictor?: "auto" | "file" | "oracle";
  /** Progress and result lines. */
  onLine?: (line: string) => void;
}

/**
 * Run every configuration in its own child process and gather the results; writes
 * bench.json, bench.txt (the tables) and bench.svg (latency breakdown) to `outDir`.
 *
 * @example The naive baseline of a tiny synthetic model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runBench } from "./bench.ts";
 * import { makeSyntheticModel } from "./make_model.ts";
 * const dir = await Deno.makeTempDir();
 * await makeSyntheticModel(`${dir}/tiny.flm`, { shape: "tiny", sparsity: 0.9, dtype: "f32" });
 * const report = await runBench({
 *   model: `${dir}/tiny.flm`, memory: { kind: "ffn-percent", percent: 50 }, tokens: 1,
 *   prompt: "a b", outDir: `${dir}/bench`, configs: ["naive"],
 * });
 * assert.equal(report.results[0].perToken.bytes, 2 * 256 * 2 * 64 * 4); // every FFN byte
 * assert.match(await Deno.readTextFile(`${dir}/bench/bench.txt`), /^Table 3/m);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const say = options.onLine ?? (() => {});
  const friends = {
    withHot: options.friends?.withHot ?? null,
    noHot: options.friends?.noHot ?? null,
  };
  const friendFile = (layout: string): string | null | undefined =>
    layout === "friends"
      ? friends.withHot
      : layout === "friends-no-hot"
      ? friends.noHot
      : undefined;
  const names = options.configs ??
    BENCH_CONFIGS.filter((c) => friendFile(c.layout) !== null).map((c) => c.name);
  for (const name of names) {
    const { layout } = configOf(name);
    if (friendFile(layout) === null) {
      throw new FlashlmError(`configuration ${name} needs a friend-bundled copy (--${layout})`, {
        kind: "usage",
      });
    }
  }
  for (const f of [friends.withHot, friends.noHot]) {
    if (f !== null) await checkFriendCopy(f, options.model);
  }
  const model = await readHeader(options.model); // header only: the children load the weights
  if (model.header.ffn.layout !== "row-column-bundles") {
    throw new FlashlmError("bench needs the bundled model (the split copy is made from it)", {
      file: options.model,
      kind: "usage",
    });
  }
  await Deno.mkdir(options.outDir, { recursive: true });
  let split: string | null = options.split ?? null;
  if (names.some((n) => configOf(n).layout === "split") && split === null) {
    split = `${options.outDir}/${baseName(options.model).replace(/\.flm$/, "")}.split.flm`;
    if (!(await isSplitCopyOf(split, options.model))) {
      say(`writing the unbundled (split) copy ${split} ...`);
      await rewriteWithLayout(await FlashModelFile.open(options.model), split, "split");
    }
  }
  const tokens = options.tokens ?? 16;
  const rounds = options.rounds ?? 1;
  const runs = new Map<BenchConfigName, ConfigResult[]>(names.map((n) => [n, []]));
  for (let round = 0; round < rounds; round++) {
    for (const name of names) {
      runs.get(name)!.push(await runOnce(name, round));
    }
  }
  // Each configuration's median run (by total latency) stands for it.
  const results: ConfigResult[] = names.map((name) => {
    const all = runs.get(name)!;
    const ran = all.filter((r) => !r.skipped);
    if (ran.length === 0) return all[0];
    const sorted = [...ran].sort((a, b) => a.perToken.totalMs - b.perToken.totalMs);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    median.roundTotalsMs = ran.map((r) => r.perToken.totalMs);
    return median;
  });

  async function runOnce(name: BenchConfigName, round: number): Promise<ConfigResult> {
    await evictFromPageCache(options.model);
    if (split) await evictFromPageCache(split);
    for (const f of [friends.withHot, friends.noHot]) if (f) await evictFromPageCache(f);
    say(`running ${name}${rounds > 1 ? ` (round ${round + 1} of ${rounds})` : ""} ...`);
    const spec: ConfigRunSpec = {
      name,
      model: options.model,
      split,
      friends,
      memory: options.memory,
      tokens,
      prompt: options.prompt,
      readerDepth: options.readerDepth,
      threads: options.threads,
      predictor: options.predictor,
      verbose: true,
    };
    const result = await runInChild(spec);
    say(
      result.skipped
        ? `  ${name}: skipped: ${result.skipped}`
        : `  ${name}: ${result.perToken.totalMs.toFixed(1)} ms/token, ` +
          `${(result.perToken.bytes / 1e6).toFixed(3)} MB/token from flash`,
    );
    return result;
  }
  const byName = new Map(results.map((r) => [r.name, r]));
  const naive = byName.get("naive"), dense = byName.get("dense-DRAM");
  for (const r of results) {
    if (r.skipped) continue;
    if (naive && !naive.skipped) r.ratioToNaive = r.perToken.totalMs / naive.perToken.totalMs;
    if (dense && !dense.skipped) r.ratioToDense = r.perToken.totalMs / dense.perToken.totalMs;
  }
  const flashlm = byName.get("flashlm") ?? byName.get("bundling");
  const summary: Record<string, number> = {};
  if (flashlm && !flashlm.skipped) {
    for (const r of results) {
      if (!r.skipped && r !== flashlm) {
        summary[`flashlm/${r.name}`] = flashlm.perToken.totalMs / r.perToken.totalMs;
      }
    }
  }
  const budgetBytes = results.find((r) => !r.skipped && r.budgetBytes > 0)?.budgetBytes ?? 0;
  const report: BenchReport = {
    model: options.model,
    split,
    synthetic: model.header.metadata.synthetic === "true",
    config: {
      architecture: model.config.architecture,
      dModel: model.config.dModel,
      dFfn: model.config.dFfn,
      nLayers: model.config.nLayers,
      vocabSize: model.config.vocabSize,
      dtype: model.header.dtype,
    },
    memory: options.memory,
    budgetBytes,
    modelBytes: modelBytesOnFlash(model.config, model.header.dtype),
    tokens,
    rounds,
    prompt: options.prompt,
    date: new Date().toISOString(),
    machine: {
      cpus: navigator.hardwareConcurrency,
      memAvailableBytes: memAvailable(),
      loadAverage: loadAverage(),
      kernel: Deno.osRelease(),
    },
    results,
    summary,
  };
  const text = formatBenchReport(report);
  await writeText(`${options.outDir}/bench.json`, JSON.stringify(report, null, 1) + "\n");
  await writeText(`${options.outDir}/bench.txt`, text);
  await writeText(`${options.outDir}/bench.svg`, benchChart(report));
  return report;
}

/** Refuse a file that is not a friend-bundled copy of the same model shape. */
async function checkFriendCopy(path: string, source: string): Promise<void> {
  const [{ header, config }, model] = [await readHeader(path), await readHeader(source)];
  if (!header.metadata.friendClusters) {
    throw new FlashlmError("is not a friend-bundled copy (make one with `stats --friends`)", {
      file: path,
      kind: "usage",
    });
  }
  if (
    JSON.stringify(config) !== JSON.stringify(model.config) || header.dtype !== model.header.dtype
  ) {
    throw new FlashlmError(`is not a copy of ${source} (another shape or dtype)`, {
      file: path,
      kind: "usage",
    });
  }
}

/** Whether `split` exists and is the split copy of `source` made after `source` was last written. */
async function isSplitCopyOf(split: string, source: string): Promise<boolean> {
  try {
    const [s, t] = [await Deno.stat(split), await Deno.stat(source)];
    if ((s.mtime?.getTime() ?? 0) < (t.mtime?.getTime() ?? 0)) return false;
    const { header } = await readHeader(split);
    return header.ffn.layout === "split" && header.metadata.layoutOf === source;
  } catch {
    return false;
  }
}

/** The validated header and config of a flashlm file, without reading its sections. */
async function readHeader(path: string): Promise<{ header: FlashHeader; config: ModelConfig }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new FlashlmError((e as Error).message, { file: path, kind: "io", cause: e });
  }
  try {
    const size = (await file.stat()).size;
    const preamble = new Uint8Array(Math.min(PREAMBLE_BYTES, size));
    await readExactly(file, preamble, 0, path);
    const jsonLength = size >= PREAMBLE_BYTES
      ? new DataView(preamble.buffer).getUint32(12, true)
      : 0;
    const prefix = new Uint8Array(Math.min(size, PREAMBLE_BYTES + jsonLength));
    await readExactly(file, prefix, 0, path);
    return parseFlashHeader(prefix, size, path);
  } finally {
    file.close();
  }
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function writeText(path: string, text: string): Promise<void> {
  await atomicWriteFile(path, (f) => writeAll(f, new TextEncoder().encode(text)));
}
