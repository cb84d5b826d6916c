/**
 * `bench io`: the I/O profile of *LLM in a Flash* Figure 2b, for flashlm's reader.
 *
 * Random reads of one chunk size, aligned to it, over a large file with a cold page
 * cache, swept over chunk size (4 KiB → 1 MiB) × reads in flight (1 → 64), for every
 * reader backend. When `fio` is installed, it runs at the same points in the same
 * invocation, twice: buffered `psync` with as many jobs as reads in flight (what a
 * thread pool of blocking reads can do) and `O_DIRECT` `io_uring` with that queue
 * depth (what the disk can do). Results: a table (our MB/s and the ratio to fio), a
 * JSON file and one SVG line chart per source (throughput vs chunk size, one line per
 * depth).
 *
 * Each point reads every chunk of the file at most once (a random permutation, like
 * fio's random map), for `seconds` or until the file is exhausted. Our reader runs
 * with coalescing off, so it issues exactly the reads fio does. `io-uring` points run
 * in a fresh Deno process each: io_uring's kernel worker threads belong to the
 * submitting thread and outlive a reader, so in one process a point would inherit the
 * workers of a deeper point before it (the backend then falls back to its slower strict
 * mode, `io/read_backends.ts`).
 *
 * The pieces: one point of our reader, here or in a child (`bench_io_point.ts`), one point
 * of fio (`bench_io_fio.ts`), the table, JSON and charts (`bench_io_report.ts`).
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import { evictFromPageCache, type EvictMethod } from "../io/page_cache.ts";
import { availableBackends, type BackendName } from "../io/read_backends.ts";
import { Rng } from "../core/sampler.ts";
import { formatByteSize } from "./byte_size.ts";
import {
  type BenchPoint,
  BUN_SOURCE,
  bunExecPath,
  childPoint,
  failedPoint,
  measureRandomReads,
} from "./bench_io_point.ts";
import { commandVersion, FIO_SOURCES, fioPoint } from "./bench_io_fio.ts";
import {
  type BenchIoReport,
  benchIoTableHeader,
  benchIoTableRow,
  writeBenchIoReport,
} from "./bench_io_report.ts";

// ---------------------------------------------------------------------------
// The test file

/**
 * Make sure `path` exists with at least `size` bytes: write it once (random bytes,
 * to a temp file, fsynced, renamed) when absent. An existing smaller file is a `usage`
 * error. Returns its size and whether it was written now.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ensureBenchFile } from "./bench_io.ts";
 * const dir = await Deno.makeTempDir();
 * const made = await ensureBenchFile(`${dir}/data.bin`, 100_000);
 * assert.deepEqual(made, { size: 100_000, created: true });
 * assert.equal((await ensureBenchFile(`${dir}/data.bin`, 50_000)).created, false);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function ensureBenchFile(
  path: string,
  size: number,
  onProgress?: (done: number, total: number) => void,
): Promise<{ size: number; created: boolean }> {
  try {
    const existing = (await Deno.stat(path)).size;
    if (existing < size) {
      throw new FlashlmError(
        `bench file has ${existing} bytes, fewer than --size ${size}; delete it or pass a smaller --size`,
        { file: path, kind: "usage" },
      );
    }
    return { size: existing, created: false };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const tmp = `${path}.tmp-${Deno.pid}`;
  const block = new Uint8Array(8 << 20); // (8 MiB) random bytes, refilled per block
  const words = new Uint32Array(block.buffer);
  const rng = new Rng(0x9e3779b9);
  try {
    using file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    for (let done = 0; done < size;) {
      for (let i = 0; i < words.length; i++) words[i] = rng.next() * 2 ** 32; // a whole uint32
      const n = Math.min(block.length, size - done);
      for (let w = 0; w < n;) w += await file.write(block.subarray(w, n));
      done += n;
      onProgress?.(done, size);
    }
    await file.syncData();
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new FlashlmError(`cannot write the bench file (${(e as Error).message})`, {
      file: path,
      kind: "io",
      cause: e,
    });
  }
  return { size, created: true };
}

// ---------------------------------------------------------------------------
// Options and results

/** Options of {@linkcode benchIo}. */
export interface BenchIoOptions {
  /** The file to read (created with random bytes when absent). */
  file: string;
  /** Size of the file to create. Default 2 GiB. */
  size?: number;
  /** Chunk sizes in bytes. Default 4 KiB, 8 KiB, ..., 1 MiB. */
  chunkSizes?: number[];
  /** Reads in flight. Default 1, 2, 4, ..., 64. */
  depths?: number[];
  /** Reader backends to measure. Default every available one. */
  backends?: BackendName[];
  /** Run fio at the same points when it is installed. Default true. */
  fio?: boolean;
  /** Seconds per point (less when the file is exhausted first). Default 1. */
  seconds?: number;
  /**
   * Measure every point this many times, sources taking turns, and keep each source's
   * best (for shared, noisy machines). Default 1.
   */
  repeat?: number;
  /** How to empty the page cache before each point. Default `"auto"`. */
  cold?: "auto" | EvictMethod;
  /** Directory for `bench-io.json` and the SVG charts; none when absent. */
  outDir?: string;
  /** Seed of the random offsets. Default 1. */
  seed?: number;
  /**
   * A command that runs Bun (e.g. `["bun"]` or `["npx", "-y", "bun@1"]`), or `"auto"`
   * for `bun` when it is on the PATH: the `node-fs` backend is then also measured under
   * Bun, as source `bun-node-fs`. Default: no Bun.
   */
  bun?: string[] | "auto";
  /** Receives each line of the report as it is measured (default: nothing). */
  onLine?: (line: string) => void;
}

// ---------------------------------------------------------------------------
// The sweep

const DEFAULT_CHUNKS = [4, 8, 16, 32, 64, 128, 256, 512, 1024].map((k) => k * 1024);
const DEFAULT_DEPTHS = [1, 2, 4, 8, 16, 32, 64];

/**
 * Run the sweep (see the module doc) and return what was measured; writes
 * `bench-io.json` and `bench-io-<source>.svg` into `outDir` when given.
 *
 * @example A tiny sweep without fio
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { benchIo } from "./bench_io.ts";
 * const dir = await Deno.makeTempDir();
 * const report = await benchIo({
 *   file: `${dir}/data.bin`, size: 1 << 20, chunkSizes: [4096], depths: [2],
 *   backends: ["fs-pool"], fio: false, seconds: 0.05,
 * });
 * assert.equal(report.points.length, 1);
 * assert(report.points[0].mbps > 0);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function benchIo(options: BenchIoOptions): Promise<BenchIoReport> {
  const say = options.onLine ?? (() => {});
  const chunkSizes = options.chunkSizes ?? DEFAULT_CHUNKS;
  const depths = options.depths ?? DEFAULT_DEPTHS;
  const backends = options.backends ?? availableBackends();
  const seconds = options.seconds ?? 1;
  const repeat = options.repeat ?? 1;
  const { size: fileSize, created } = await ensureBenchFile(
    options.file,
    options.size ?? 2 ** 31,
    (done, total) => {
      if (done === total || done % (256 << 20) === 0) {
        say(`writing ${options.file}: ${formatByteSize(done)} of ${formatByteSize(total)}`);
      }
    },
  );
  if (created) say(`wrote ${options.file} (${fileSize} random bytes)`);
  const fio = options.fio === false ? null : await commandVersion(["fio"]);
  const bun = options.bun === "auto"
    ? ((await commandVersion(["bun"])) ? ["bun"] : null)
    : options.bun ?? null;
  const bunVersion = bun ? await commandVersion(bun) : null;
  if (bun && !bunVersion) say(`warning: "${bun.join(" ")} --version" fails: Bun not measured`);
  const bunExe = bunVersion ? await bunExecPath(bun!) : null; // skips npx's start-up per point
  const sources = [...backends, ...(bunVersion ? [BUN_SOURCE] : []), ...(fio ? FIO_SOURCES : [])];
  const evictMethod = await evictFromPageCache(options.file, options.cold ?? "auto");
  const report: BenchIoReport = {
    file: options.file,
    fileSize,
    evictMethod,
    fio,
    bun: bunVersion,
    environment: {
      runtime: `deno ${Deno.version.deno}`,
      cpus: navigator.hardwareConcurrency,
      loadavg: Deno.loadavg(),
      date: new Date().toISOString(),
    },
    sources,
    points: [],
  };
  say(
    `bench io: ${options.file} (${formatByteSize(fileSize)}), cold cache by ${evictMethod}, ` +
      `${seconds} s per point (best of ${repeat}), fio ${fio ?? "not run"}, bun ${
        bunVersion ?? "not run"
      }, load ${
        report.environment.loadavg.map((l) => l.toFixed(2)).join(" ")
      } on ${report.environment.cpus} CPUs`,
  );
  if (evictMethod === "none") say("warning: cannot empty the page cache: results are warm");
  say(benchIoTableHeader(sources));

  const broken = new Set<string>(); // Bun and fio variants that failed once are not retried
  /** One cold measurement of one source (same seed: same offsets for every source). */
  const measurePoint = async (
    source: string,
    chunk: number,
    depth: number,
    seed: number,
  ): Promise<BenchPoint> => {
    if (broken.has(source)) {
      return failedPoint(source, chunk, depth, "skipped after an earlier failure");
    }
    await evictFromPageCache(options.file, evictMethod);
    if (source.startsWith("fio-")) {
      return await fioPoint(source, options.file, fileSize, chunk, depth, seconds);
    }
    if (source === BUN_SOURCE) {
      return await childPoint(bunExe!, "node-fs", options.file, chunk, depth, seconds, seed);
    }
    if (source === "io-uring") {
      const deno = [Deno.execPath(), "run", "--allow-read", "--allow-ffi"];
      return await childPoint(deno, "io-uring", options.file, chunk, depth, seconds, seed);
    }
    return await measureRandomReads({
      file: options.file,
      backend: source as BackendName,
      chunkBytes: chunk,
      depth,
      seconds,
      seed,
    });
  };
  for (const chunk of chunkSizes) {
    for (const depth of depths) {
      // Sources take turns, `repeat` rounds; each keeps its best round.
      const row: BenchPoint[] = [];
      for (let round = 0; round < repeat; round++) {
        const seed = (options.seed ?? 1) * 1_000_003 + chunk * 131 + depth * 7 + round;
        for (let s = 0; s < sources.length; s++) {
          const point = await measurePoint(sources[s], chunk, depth, seed);
          if (point.error && (sources[s].startsWith("fio-") || sources[s] === BUN_SOURCE)) {
            broken.add(sources[s]);
          }
          const best = row[s];
          if (!best) row[s] = { ...point, samples: [point.mbps] };
          else {
            best.samples!.push(point.mbps);
            if (!(point.mbps <= best.mbps)) row[s] = { ...point, samples: best.samples };
          }
        }
      }
      report.points.push(...row);
      say(benchIoTableRow(sources, row, chunk, depth));
    }
  }
  for (const p of report.points) if (p.error) say(`${p.source}: ${p.error}`);
  if (options.outDir) await writeBenchIoReport(report, options.outDir);
  return report;
}
