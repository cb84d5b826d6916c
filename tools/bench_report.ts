/**
 * What `flashlm bench` measured, as the paper shows it: Table 2 (what each configuration
 * reads from flash per token) and Table 3 (latency per token, broken down) as text, and
 * the latency breakdown as a stacked bar chart (SVG).
 *
 * @module
 */

import { ARCHITECTURE_NAMES, type ModelConfig } from "../core/config.ts";
import type { Budget } from "../core/memory_sizes.ts";
import type { ConfigResult } from "./bench_configs.ts";
import { stackedBarChart } from "./svg_chart.ts";

// ---------------------------------------------------------------------------
// The report

/** Everything a bench run measured. */
export interface BenchReport {
  /** The bundled model file. */
  model: string;
  /** Its unbundled copy, when a configuration needed it. */
  split: string | null;
  /** Whether the model's weights are synthetic (`make-model`). */
  synthetic: boolean;
  /** The model's dimensions and storage dtype. */
  config: {
    /** `ModelConfig.architecture` (reports written before it was recorded: OPT). */
    architecture?: ModelConfig["architecture"];
    dModel: number;
    dFfn: number;
    nLayers: number;
    vocabSize: number;
    dtype: string;
  };
  /** The DRAM budget as given. */
  memory: Budget;
  /** The DRAM budget in bytes (every configuration's). */
  budgetBytes: number;
  /** The model's weights as stored on flash (what a percentage budget is of). */
  modelBytes: number;
  /** Tokens measured per configuration (after the prompt). */
  tokens: number;
  /** Runs per configuration (each row is the median one). */
  rounds: number;
  /** The prompt text. */
  prompt: string;
  /** When the run ended (ISO 8601). */
  date: string;
  /** The machine: CPUs, available memory, 1-minute load average, kernel release. */
  machine: { cpus: number; memAvailableBytes: number; loadAverage: number; kernel: string };
  /** One result per configuration, in run order. */
  results: ConfigResult[];
  /** flashlm (its full configuration) total latency relative to the baselines (< 1: flashlm faster). */
  summary: Record<string, number>;
}

// ---------------------------------------------------------------------------
// Tables and chart

/**
 * The report as text: Table 2 (what each configuration reads) and Table 3 (latency
 * breakdown) of the paper, then the notes that qualify them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatBenchReport } from "./bench_report.ts";
 * import { emptyPerToken } from "./bench_configs.ts";
 * const row = (name: "naive" | "flashlm", label: string, ioMs: number, totalMs: number) => ({
 *   name, label, description: "", path: "m.flm", note: "", predictor: null, backend: "pread",
 *   evictMethod: "fadvise" as const, budgetBytes: 1e9, memory: {}, promptTokens: 4,
 *   measuredTokens: 8, mbPerSec: 2000, tokensPerSec: 1000 / totalMs, peakRssBytes: 5e8,
 *   loadPeakRssBytes: 6e8, generated: [], loadAverage: [0.5, 0.7] as [number, number], threads: 1,
 *   perToken: { ...emptyPerToken(), bytes: 2e6, readerBytes: 2e6, reads: 40, ioMs, totalMs },
 * });
 * const report = {
 *   model: "/models/m.flm", split: null, synthetic: false,
 *   config: { dModel: 64, dFfn: 256, nLayers: 2, vocabSize: 1256, dtype: "f16" },
 *   memory: { kind: "ffn-percent" as const, percent: 50 }, budgetBytes: 1e9, modelBytes: 4e9, tokens: 8,
 *   rounds: 1, prompt: "a", date: "2026-01-01T00:00:00.000Z",
 *   machine: { cpus: 2, memAvailableBytes: 1e10, loadAverage: 0.7, kernel: "6.1" },
 *   results: [row("naive", "naive", 20, 40), row("flashlm", "flashlm", 2, 10)],
 *   summary: { "flashlm/naive": 0.25 },
 * };
 * const text = formatBenchReport(report);
 * // Table 3: threads, I/O, I/O wait, memory management, checks, compute (total - I/O wait -
 * // memory - checks), total, tokens/s, peak RSS
 * assert.match(text, /^flashlm +1 +2\.00 +0\.00 +0\.00 +0\.00 +10\.00 +10\.00 +100\.00 +500 /m);
 * assert.match(text, /^ {2}naive 0\.250$/m);
 * ```
 */
export function formatBenchReport(report: BenchReport): string {
  const ok = report.results.filter((r) => !r.skipped);
  const f = (v: number | undefined, digits: number): string =>
    v === undefined || !Number.isFinite(v) ? "-" : v.toFixed(digits);
  const mb = (
    b: number,
  ): string => (b / 1e6 >= 100 ? (b / 1e6).toFixed(0) : (b / 1e6).toPrecision(3));
  const table = (head: string[], rows: string[][]): string[] => {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]): string =>
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
    return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)];
  };
  const c = report.config;
  const budget = report.memory.kind === "bytes"
    ? `${(report.memory.bytes / 1e9).toFixed(2)} GB`
    : report.memory.kind === "model-percent"
    ? `${report.memory.percent}% of the model on flash`
    : `resident part + ${report.memory.percent}% of the FFN`;
  const out: string[] = [
    `flashlm bench: ${report.model}${
      report.synthetic ? " (SYNTHETIC weights: random, made by make-model)" : ""
    }`,
    `  ${
      ARCHITECTURE_NAMES[c.architecture ?? "opt"]
    } ${c.nLayers} layers · d ${c.dModel} · FFN ${c.dFfn} · vocab ${c.vocabSize} · ${c.dtype} on flash · ` +
    `budget ${budget} = ${Math.round(report.budgetBytes)} B = ${
      (report.budgetBytes / 1e6).toFixed(2)
    } MB = ${(100 * report.budgetBytes / report.modelBytes).toFixed(1)}% of the ${
      (report.modelBytes / 1e6).toFixed(2)
    } MB model on flash (weights held at their stored precision)`,
    `  ${report.tokens} greedy tokens measured after a ${
      ok[0]?.promptTokens ?? "?"
    }-token prompt · ` +
    ((report.rounds ?? 1) > 1
      ? `${report.rounds} rounds, configurations in turn, each row its median run · `
      : "") +
    `${report.machine.cpus} CPUs · load average ${
      report.machine.loadAverage.toFixed(1)
    } at the end · ${report.date}`,
    "",
    "Table 2 (what each configuration moves from flash, per token)",
    ...table(
      ["configuration", "flash→DRAM MB", "reads", "MB/s", "I/O ms", "disk MB (kernel)"],
      ok.map((r) => [
        r.label,
        mb(r.perToken.bytes),
        f(r.perToken.reads, 0),
        r.perToken.bytes > 0 ? f(r.mbPerSec, 0) : "-",
        f(r.perToken.ioMs, 2),
        mb(r.perToken.kernelReadBytes),
      ]),
    ),
    "",
    "Table 3 (latency per token, ms)",
    ...table(
      [
        "configuration",
        "threads",
        "I/O",
        "I/O wait",
        "mem mgmt",
        "checks",
        "compute",
        "total",
        "tokens/s",
        "peak RSS MB",
        "vs naive",
        "vs dense",
        "CPU wait",
      ],
      ok.map((r) => [
        r.label,
        String(r.threads ?? 1),
        f(r.perToken.ioMs, 2),
        f(ioWait(r), 2),
        f(r.perToken.memoryMs, 2),
        f(r.perToken.checkMs, 2),
        f(r.perToken.totalMs - ioWait(r) - r.perToken.memoryMs - r.perToken.checkMs, 2),
        f(r.perToken.totalMs, 2),
        f(r.tokensPerSec, 2),
        f(r.peakRssBytes / 1e6, 0),
        r.ratioToNaive === undefined ? "-" : `${f(r.ratioToNaive, 3)}x`,
        r.ratioToDense === undefined ? "-" : `${f(r.ratioToDense, 2)}x`,
        f(r.perToken.waitMs, 2),
      ]),
    ),
    "",
    "I/O = from issuing a layer's reads to knowing they are done; I/O wait = the part of it compute waited for",
    "  (flashlm computes the neurons already in DRAM while the reads are in flight; naive and the baselines wait",
    "  for all of it). compute = total - I/O wait - memory management - checks: FFN kernels, predictor,",
    "  attention, embeddings, lm_head. threads = threads the kernels ran on (workers over shared memory).",
    "checks = each bundle read checked against its checksum, and for NaN/Inf, in the same pass.",
    "CPU wait = time the main thread was ready to run but other processes held the CPUs (/proc/thread-self/schedstat);",
    "  it is inside the other columns (mostly compute). Peak RSS = VmHWM while generating (reset after loading).",
    "flash→DRAM MB = bytes the reader delivered; for page-cache most are served by the page cache (its MB/s",
    "  is then a memory copy): disk MB (kernel) is what really came from storage (/proc/self/io read_bytes).",
    "Notes per configuration:",
    ...report.results.map((r) =>
      `  ${r.label}: ${r.skipped ? `SKIPPED: ${r.skipped}` : r.note || r.description}` +
      (r.roundTotalsMs && r.roundTotalsMs.length > 1
        ? ` · total ms/token per round ${r.roundTotalsMs.map((t) => f(t, 1)).join(", ")}`
        : "") +
      (r.predictor ? ` · ${r.predictor}` : "") +
      (r.backend ? ` · reader ${r.backend}` : "") +
      (r.skipped
        ? ""
        : ` · cache emptied by ${r.evictMethod} · load avg ${f(r.loadAverage[0], 1)}→${
          f(r.loadAverage[1], 1)
        }`)
    ),
  ];
  const ratios = Object.entries(report.summary);
  if (ratios.length) {
    const flashlm = ok.find((r) => r.name === "flashlm") ?? ok.find((r) => r.name === "bundling")!;
    const net = (r: ConfigResult): number => r.perToken.totalMs - r.perToken.waitMs;
    out.push(
      `flashlm (${flashlm.label}) total latency relative to each configuration (< 1: flashlm faster):`,
      "  " + ratios.map(([k, v]) => `${k.replace("flashlm/", "")} ${v.toFixed(3)}`).join(" · "),
      "  the same without CPU wait: " +
        ok.filter((r) => r !== flashlm).map((r) =>
          `${r.name} ${(net(flashlm) / net(r)).toFixed(3)}`
        ).join(" · "),
    );
  }
  return out.join("\n") + "\n";
}

/**
 * The latency breakdown per configuration as a stacked bar chart (SVG).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { benchChart } from "./bench_report.ts";
 * import { emptyPerToken } from "./bench_configs.ts";
 * const row = (name: "naive" | "flashlm", label: string, ioMs: number, totalMs: number) => ({
 *   name, label, description: "", path: "m.flm", note: "", predictor: null, backend: "pread",
 *   evictMethod: "fadvise" as const, budgetBytes: 1e9, memory: {}, promptTokens: 4,
 *   measuredTokens: 8, mbPerSec: 2000, tokensPerSec: 1000 / totalMs, peakRssBytes: 5e8,
 *   loadPeakRssBytes: 6e8, generated: [], loadAverage: [0.5, 0.7] as [number, number], threads: 1,
 *   perToken: { ...emptyPerToken(), bytes: 2e6, readerBytes: 2e6, reads: 40, ioMs, totalMs },
 * });
 * const report = {
 *   model: "/models/m.flm", split: null, synthetic: false,
 *   config: { dModel: 64, dFfn: 256, nLayers: 2, vocabSize: 1256, dtype: "f16" },
 *   memory: { kind: "ffn-percent" as const, percent: 50 }, budgetBytes: 1e9, modelBytes: 4e9, tokens: 8,
 *   rounds: 1, prompt: "a", date: "2026-01-01T00:00:00.000Z",
 *   machine: { cpus: 2, memAvailableBytes: 1e10, loadAverage: 0.7, kernel: "6.1" },
 *   results: [row("naive", "naive", 20, 40), row("flashlm", "flashlm", 2, 10)],
 *   summary: { "flashlm/naive": 0.25 },
 * };
 * const svg = benchChart(report);
 * assert.ok(svg.startsWith("<svg") && svg.includes("latency per token, m.flm"));
 * assert.ok(svg.includes("I/O wait (flash)") && svg.includes(">flashlm<"));
 * ```
 */
export function benchChart(report: BenchReport): string {
  const ok = report.results.filter((r) => !r.skipped);
  const name = report.model.slice(report.model.lastIndexOf("/") + 1);
  return stackedBarChart({
    title: `latency per token, ${name}${report.synthetic ? " (synthetic)" : ""}`,
    yLabel: "ms per token",
    bars: ok.map((r) => r.label),
    parts: [
      { name: "I/O wait (flash)", values: ok.map((r) => ioWait(r)) },
      { name: "memory mgmt", values: ok.map((r) => r.perToken.memoryMs) },
      { name: "bundle checks", values: ok.map((r) => r.perToken.checkMs) },
      { name: "FFN + predictor", values: ok.map((r) => r.perToken.ffnComputeMs) },
      {
        name: "attention + rest",
        values: ok.map((r) =>
          r.perToken.totalMs - ioWait(r) - r.perToken.memoryMs - r.perToken.checkMs -
          r.perToken.ffnComputeMs
        ),
      },
    ],
  });
}

/** Milliseconds per token compute waited on flash (a report written before I/O wait was measured: all its I/O). */
function ioWait(r: ConfigResult): number {
  return r.perToken.ioWaitMs ?? r.perToken.ioMs;
}
