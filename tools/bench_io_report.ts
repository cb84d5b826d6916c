/**
 * What `bench io` measured, as a table (MB/s per source, and the best of our backends as
 * a share of each fio variant), a JSON file and SVG line charts.
 *
 * @module
 */

import type { EvictMethod } from "../io/page_cache.ts";
import { type BenchPoint, BUN_SOURCE, failedPoint } from "./bench_io_point.ts";
import { FIO_SOURCES } from "./bench_io_fio.ts";
import { formatByteSize } from "./byte_size.ts";
import { lineChart } from "./svg_chart.ts";

// ---------------------------------------------------------------------------
// The report

/** Everything {@linkcode benchIo} measured. */
export interface BenchIoReport {
  /** The file read. */
  file: string;
  /** Its size in bytes. */
  fileSize: number;
  /** How the page cache was emptied before each point. */
  evictMethod: EvictMethod;
  /** `fio --version`, or null when fio was not run. */
  fio: string | null;
  /** `bun --version`, or null when Bun was not run. */
  bun: string | null;
  /** Runtime, CPU count and load when the run started (the machine may be shared). */
  environment: { runtime: string; cpus: number; loadavg: number[]; date: string };
  /** Sources in column order: our Deno backends, Bun, then the fio variants run. */
  sources: string[];
  /** Every point. */
  points: BenchPoint[];
}

// ---------------------------------------------------------------------------
// Table

/**
 * The table's header line: chunk, depth, MB/s per source, then the best of our backends
 * (and Bun, when measured) as a share of each fio variant.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { benchIoTableHeader } from "./bench_io_report.ts";
 * assert.deepEqual(benchIoTableHeader(["pread", "fio-psync"]).trim().split(/ +/), [
 *   "chunk", "depth", "pread", "MB/s", "fio-psync", "MB/s", "best/psync",
 * ]);
 * ```
 */
export function benchIoTableHeader(sources: string[]): string {
  const cols = ["chunk", "depth", ...sources.map((s) => s + " MB/s")];
  for (const fio of FIO_SOURCES) {
    if (!sources.includes(fio)) continue;
    const short = fio === "fio-psync" ? "psync" : "uring";
    cols.push(`best/${short}`);
    if (sources.includes(BUN_SOURCE)) cols.push(`bun/${short}`);
  }
  return cols.map((c, i) => c.padStart(i < 2 ? 6 : Math.max(10, c.length))).join(" ");
}

/**
 * One line of the table: the points of every source at one chunk size and depth, in the
 * order of `sources`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { benchIoTableRow } from "./bench_io_report.ts";
 * const point = (source: string, mbps: number) =>
 *   ({ source, chunkBytes: 4096, depth: 8, mbps, bytes: 1, seconds: 1 });
 * const row = [point("pread", 300), point("fio-psync", 400)];
 * const line = benchIoTableRow(["pread", "fio-psync"], row, 4096, 8);
 * assert.deepEqual(line.trim().split(/ +/), ["4K", "8", "300", "400", "75%"]);
 * ```
 */
export function benchIoTableRow(
  sources: string[],
  row: BenchPoint[],
  chunk: number,
  depth: number,
): string {
  const cells = [formatByteSize(chunk).padStart(6), String(depth).padStart(6)];
  sources.forEach((s, i) => {
    const width = Math.max(10, (s + " MB/s").length);
    cells.push((Number.isFinite(row[i].mbps) ? row[i].mbps.toFixed(0) : "-").padStart(width));
  });
  const best = bestOfOurs(row);
  const bun = row.find((r) => r.source === BUN_SOURCE);
  const percent = (ratio: number): string =>
    (Number.isFinite(ratio) ? `${(ratio * 100).toFixed(0)}%` : "-").padStart(10);
  for (const fio of FIO_SOURCES) {
    const p = row.find((r) => r.source === fio);
    if (!p) continue;
    cells.push(percent(best / p.mbps));
    if (bun) cells.push(percent(bun.mbps / p.mbps));
  }
  return cells.join(" ");
}

/** Best MB/s among our Deno backends at one point. */
function bestOfOurs(row: BenchPoint[]): number {
  const ours = row.filter((p) =>
    !p.source.startsWith("fio-") && p.source !== BUN_SOURCE && Number.isFinite(p.mbps)
  );
  return ours.length ? Math.max(...ours.map((p) => p.mbps)) : NaN;
}

/**
 * The report as a table: one row per (chunk, depth), MB/s per source, and the best of
 * our Deno backends (and Bun, when run) as a percentage of each fio variant.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatBenchIoTable } from "./bench_io_report.ts";
 * const table = formatBenchIoTable({
 *   file: "f", fileSize: 1, evictMethod: "none", fio: "fio-3.33", bun: null,
 *   environment: { runtime: "deno", cpus: 2, loadavg: [0, 0, 0], date: "" },
 *   sources: ["fs-pool", "fio-psync"],
 *   points: [
 *     { source: "fs-pool", chunkBytes: 32768, depth: 16, mbps: 900, bytes: 1, seconds: 1 },
 *     { source: "fio-psync", chunkBytes: 32768, depth: 16, mbps: 1000, bytes: 1, seconds: 1 },
 *   ],
 * });
 * assert(table.includes("90%"));
 * ```
 */
export function formatBenchIoTable(report: BenchIoReport): string {
  const lines = [benchIoTableHeader(report.sources)];
  const keys = [...new Set(report.points.map((p) => `${p.chunkBytes}/${p.depth}`))];
  for (const key of keys) {
    const [chunk, depth] = key.split("/").map(Number);
    const row = report.sources.map((s) =>
      report.points.find((p) => p.source === s && p.chunkBytes === chunk && p.depth === depth) ??
        failedPoint(s, chunk, depth, "missing")
    );
    lines.push(benchIoTableRow(report.sources, row, chunk, depth));
  }
  return lines.join("\n");
}

/**
 * Write `bench-io.json` (the report), `bench-io.txt` (the table),
 * `bench-io-<source>.svg` (throughput vs chunk size, one line per depth) and
 * `bench-io-depth<d>.svg` (the same at the largest depth d, one line per source) into `dir`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { writeBenchIoReport } from "./bench_io_report.ts";
 * const dir = await Deno.makeTempDir();
 * await writeBenchIoReport({
 *   file: "f", fileSize: 1 << 20, evictMethod: "none", fio: null, bun: null,
 *   environment: { runtime: "deno", cpus: 2, loadavg: [0, 0, 0], date: "" },
 *   sources: ["pread"],
 *   points: [{ source: "pread", chunkBytes: 4096, depth: 1, mbps: NaN, bytes: 0, seconds: 0 }],
 * }, dir);
 * const json = JSON.parse(await Deno.readTextFile(`${dir}/bench-io.json`));
 * assert.equal(json.points[0].mbps, null); // NaN is written as null
 * assert.ok((await Deno.readTextFile(`${dir}/bench-io-pread.svg`)).startsWith("<svg"));
 * assert.ok((await Deno.readTextFile(`${dir}/bench-io-depth1.svg`)).startsWith("<svg"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeBenchIoReport(report: BenchIoReport, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const json = JSON.stringify(
    report,
    (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v),
    2,
  );
  await Deno.writeTextFile(`${dir}/bench-io.json`, json + "\n");
  await Deno.writeTextFile(`${dir}/bench-io.txt`, formatBenchIoTable(report) + "\n");
  const chunks = [...new Set(report.points.map((p) => p.chunkBytes))].sort((a, b) => a - b);
  const depths = [...new Set(report.points.map((p) => p.depth))].sort((a, b) => a - b);
  for (const source of report.sources) {
    const svg = lineChart({
      title: `random reads, cold cache: ${source} (${formatByteSize(report.fileSize)} file)`,
      xLabel: "chunk size",
      yLabel: "MB/s",
      xLog: true,
      xTicks: chunks.map((c) => ({ value: c, label: formatByteSize(c) })),
      series: depths.map((d) => ({
        name: `${d} in flight`,
        points: chunks.map((c): [number, number] => [
          c,
          report.points.find((p) => p.source === source && p.chunkBytes === c && p.depth === d)
            ?.mbps ?? NaN,
        ]),
      })),
    });
    await Deno.writeTextFile(`${dir}/bench-io-${source}.svg`, svg);
  }
  const depth = depths[depths.length - 1];
  const svg = lineChart({
    title: `random reads, cold cache, ${depth} in flight (${formatByteSize(report.fileSize)} file)`,
    xLabel: "chunk size",
    yLabel: "MB/s",
    xLog: true,
    xTicks: chunks.map((c) => ({ value: c, label: formatByteSize(c) })),
    series: report.sources.map((source) => ({
      name: source,
      points: chunks.map((c): [number, number] => [
        c,
        report.points.find((p) => p.source === source && p.chunkBytes === c && p.depth === depth)
          ?.mbps ?? NaN,
      ]),
    })),
  });
  await Deno.writeTextFile(`${dir}/bench-io-depth${depth}.svg`, svg);
}
