/**
 * flashlm: run language models whose weights do not fit in memory, by the method of
 * *LLM in a Flash* (Alizadeh et al., ACL 2024). Attention, embeddings and the KV cache
 * stay in DRAM; the FFN streams from flash as row-column bundles, guided by a low-rank
 * predictor of each token's active neurons and a window of recent neurons kept in DRAM.
 *
 * This module is the curated API: load and generate, convert and pull checkpoints,
 * train the predictor, evaluate, plan a DRAM budget, and the pieces of the method for
 * reading and teaching. The kernels have their own entry point (`@flashlm/flashlm/kernels`),
 * and so has pulling from the Hugging Face hub (`@flashlm/flashlm/hub`).
 *
 * @example Generate four tokens from the demo model, streaming its FFN from flash
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ensureDemoModel, Generation, loadModel } from "./mod.ts";
 * const model = await loadModel(await ensureDemoModel(), { mode: "naive" });
 * const ids: number[] = [];
 * for await (const token of new Generation(model, "Once upon a time", { maxTokens: 4 })) {
 *   ids.push(token.id);
 * }
 * model.close();
 * assert.equal(ids.length, 4);
 * ```
 *
 * @module
 */

// Loading and generating
export { type LoadedModel, loadModel, type LoadOptions, type Mode } from "./core/engine.ts";
export {
  type GeneratedToken,
  type GenerateOptions,
  Generation,
  type GenerationStats,
  type TokenTelemetry,
} from "./core/generate.ts";
export type { SamplerOptions } from "./core/sampler.ts";
export { type KvDtype, Transformer, type TransformerOptions } from "./core/transformer.ts";
export type { LayerWeights, ResidentPrecision, ResidentWeights } from "./core/weights.ts";
export type { WeightDtype, WeightMatrix } from "./kernels/weights.ts";
export { KernelPool, type KernelPoolOptions, type SharedView } from "./kernels/pool.ts";
export type { FfnProvider, FfnStats } from "./core/ffn.ts";
export type { ModelConfig } from "./core/config.ts";
export { OptTokenizer, type Tokenizer, TokenStreamDecoder } from "./core/tokenizer.ts";

// Checkpoints: Hugging Face directories
export { convertHfToFlash, type ConvertOptions } from "./core/convert.ts";
export type { StorageDtype } from "./core/flash_format.ts";

// Training the predictor, evaluating the sparse model
export {
  type LayerReport,
  type PredictorReport,
  trainPredictor,
  type TrainPredictorOptions,
} from "./core/train/train_predictor.ts";
export {
  type EvalOptions,
  type EvalResult,
  evaluate,
  formatEvalReport,
  perplexity,
  type PerplexityResult,
} from "./core/eval.ts";

// The DRAM budget
export {
  type Budget,
  type HeldPrecision,
  type ModelFootprint,
  parseBudget,
  type RuntimeOverhead,
} from "./core/memory_sizes.ts";
export type { LoadCurve, WindowStats } from "./core/row_split.ts";
export type { FfnMemory } from "./core/memory_use.ts";
export {
  describePlan,
  type MemoryLines,
  type MemoryPlan,
  type PlanInput,
  planMemory,
} from "./core/memory_plan.ts";
export type { PredictorMetrics } from "./core/train/fit.ts";
export type { LayerMeasurements, PlanMeasurements } from "./core/predictor.ts";

// Reading from flash
export { FlashReader, ReadBatch, type ReadStats } from "./io/reader.ts";

// Errors
export { FlashlmError, type FlashlmErrorKind } from "./io/errors.ts";

// Synthetic models
export {
  buildSyntheticHfModel,
  ensureDemoModel,
  type SyntheticModelOptions,
} from "./tools/demo_model.ts";
