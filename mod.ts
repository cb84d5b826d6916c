/**
 * flashlm: run language models whose weights do not fit in memory, by the method of
 * *LLM in a Flash* (Alizadeh et al., ACL 2024). Attention, embeddings and the KV cache
 * stay in DRAM; the FFN streams from flash as row-column bundles.
 *
 * This module only re-exports; each file documents one mechanism.
 *
 * @example Convert a Hugging Face OPT checkpoint and generate from flash
 * ```ts ignore
 * import { convertHfToFlash, Generation, loadModel } from "@flashlm/flashlm";
 * await convertHfToFlash("opt-125m/", "opt-125m.flm");
 * const model = await loadModel("opt-125m.flm", { mode: "naive" });
 * for await (const token of new Generation(model, "The capital of France is")) {
 *   console.log(token.text);
 * }
 * model.close();
 * ```
 *
 * @module
 */

export * from "./io/errors.ts";
export * from "./core/config.ts";
export * from "./core/tokenizer.ts";
export { buildByteLevelVocab, bytesToUnicode } from "./core/gpt2_bpe.ts";
export * from "./core/weights.ts";
export * from "./core/hf_model.ts";
export * from "./core/bundling.ts";
export * from "./core/flash_format.ts";
export * from "./core/flash_file.ts";
export * from "./core/flash_write.ts";
export * from "./core/convert.ts";
export * from "./core/ffn.ts";
export * from "./core/transformer.ts";
export * from "./core/engine.ts";
export * from "./core/sampler.ts";
export * from "./core/generate.ts";
export * from "./tools/demo_model.ts";
export * from "./core/memory_plan.ts";
export * from "./core/neuron_store.ts";
export * from "./core/window.ts";
export * from "./core/predictor.ts";
export * from "./core/sparse_ffn.ts";
export * from "./core/train/train_predictor.ts";
export * from "./core/baselines.ts";
export * from "./tools/bench.ts";
export * from "./tools/make_model.ts";
export * from "./io/reader.ts";
export * from "./io/read_backends.ts";
export { ffiAllowed, type RuntimeName, runtimeName } from "./io/runtime.ts";
export * from "./io/page_cache.ts";
export * from "./tools/bench_io.ts";
export * from "./tools/svg_chart.ts";
export * from "./io/safetensors.ts";
export * from "./io/safetensors_read.ts";
export * from "./io/safetensors_write.ts";
export * from "./io/atomic_write.ts";
export * from "./io/crc32.ts";
export * from "./tools/hub.ts";
export * from "./kernels/mod.ts";
