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
 * @module
 */

import process from "node:process";
import { FlashlmError } from "../io/errors.ts";
import { evictFromPageCache, type EvictMethod } from "../io/page_cache.ts";
import { availableBackends, type BackendName } from "../io/read_backends.ts";
import { FlashReader, ReadBatch } from "../io/reader.ts";
import { lineChart } from "./svg_chart.ts";
import { Rng } from "../core/sampler.ts";

// ---------------------------------------------------------------------------
// Sizes

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1e3,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1e6,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1e9,
};

/**
 * Parse a byte size: a number with an optional unit, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`
 * (powers of 1024) or `KB`/`MB`/`GB` (powers of 1000). A bad size is a `usage` error.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseByteSize } from "./bench_io.ts";
 * assert.equal(parseByteSize("2GiB"), 2 ** 31);
 * assert.equal(parseByteSize("32k"), 32768);
 * assert.equal(parseByteSize("1000"), 1000);
 * ```
 */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  const value = m && unit !== undefined ? Math.round(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new FlashlmError(`bad size "${text}" (write e.g. 4096, 32KiB, 2GiB)`, { kind: "usage" });
  }
  return value;
}

/**
 * `bytes` as a short binary size: `4K`, `128K`, `1M`, `2G`, or plain bytes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatByteSize } from "./bench_io.ts";
 * assert.equal(formatByteSize(32768), "32K");
 * assert.equal(formatByteSize(2 ** 31), "2G");
 * ```
 */
export function formatByteSize(bytes: number): string {
  for (const [unit, size] of [["G", 1024 ** 3], ["M", 1024 ** 2], ["K", 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}

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
  let s = 0x9e3779b9; // xorshift32 state
  try {
    using file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    for (let done = 0; done < size;) {
      for (let i = 0; i < words.length; i++) {
        s ^= s << 13;
        s ^= s >>> 17;
        s ^= s << 5;
        words[i] = s;
      }
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

/** The fio variants run beside our backends. */
export const FIO_SOURCES = ["fio-psync", "fio-uring-direct"] as const;

/** One measured point. */
export interface BenchPoint {
  /** A reader backend name, `bun-node-fs`, or one of {@linkcode FIO_SOURCES}. */
  source: string;
  /** Bytes per read. */
  chunkBytes: number;
  /** Reads in flight (fio: jobs for psync, iodepth for io_uring). */
  depth: number;
  /** Throughput in MB/s (10^6 bytes per second); `NaN` when it failed. The best of `samples`. */
  mbps: number;
  /** MB/s of every repetition, when {@linkcode BenchIoOptions.repeat} was used. */
  samples?: number[];
  /** Bytes read. */
  bytes: number;
  /** Seconds measured. */
  seconds: number;
  /** Why it failed, when it did. */
  error?: string;
}

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
  const fio = options.fio === false ? null : await fioVersion();
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
  say(tableHeader(sources));

  const broken = new Set<string>(); // Bun and fio variants that failed once are not retried
  /** One cold measurement of one source (same seed: same offsets for every source). */
  const measurePoint = async (
    source: string,
    chunk: number,
    depth: number,
    seed: number,
  ): Promise<BenchPoint> => {
    if (broken.has(source)) return failed(source, chunk, depth, "skipped after an earlier failure");
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
      say(tableRow(sources, row, chunk, depth));
    }
  }
  for (const p of report.points) if (p.error) say(`${p.source}: ${p.error}`);
  if (options.outDir) await writeReport(report, options.outDir);
  return report;
}

function failed(source: string, chunk: number, depth: number, error: string): BenchPoint {
  return { source, chunkBytes: chunk, depth, mbps: NaN, bytes: 0, seconds: 0, error };
}

// ---------------------------------------------------------------------------
// One point of our reader (any runtime: no Deno API)

/** What {@linkcode measureRandomReads} measures. */
export interface RandomReadsOptions {
  /** The file. */
  file: string;
  /** Reader backend. */
  backend: BackendName;
  /** Bytes per read (offsets are multiples of it). */
  chunkBytes: number;
  /** Reads in flight. */
  depth: number;
  /** Stop after this many seconds (or when every chunk was read once). */
  seconds: number;
  /** Seed of the random order of the chunks. */
  seed: number;
}

/**
 * Random reads of `chunkBytes` through a {@linkcode FlashReader} with `depth` in
 * flight and coalescing off: the chunks of the file in a random order, each at most
 * once, for `seconds`. Uses no `Deno.*` API, so Bun can run it. Empties no cache.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { measureRandomReads } from "./bench_io.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(1 << 20));
 * const point = await measureRandomReads({
 *   file: path, backend: "fs-pool", chunkBytes: 4096, depth: 4, seconds: 0.05, seed: 1,
 * });
 * assert(point.mbps > 0 && point.bytes % 4096 === 0);
 * await Deno.remove(path);
 * ```
 */
export async function measureRandomReads(options: RandomReadsOptions): Promise<BenchPoint> {
  const { backend, chunkBytes: chunk, depth, seconds } = options;
  let reader: FlashReader;
  try {
    reader = await FlashReader.open(options.file, {
      backend,
      depth,
      coalesce: false,
      maxChunkBytes: Math.max(chunk, 1 << 20),
    });
  } catch (e) {
    return failed(backend, chunk, depth, (e as Error).message);
  }
  try {
    const chunks = Math.floor(reader.fileSize / chunk);
    if (chunks < 1) return failed(backend, chunk, depth, "file smaller than one chunk");
    // A random permutation of the chunks: each is read at most once.
    const rng = mulberry32(options.seed);
    const order = new Uint32Array(chunks); // (chunks)
    for (let i = 0; i < chunks; i++) order[i] = i;
    for (let i = chunks - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    // Batches of 16 reads per lane, so lanes rarely wait on a batch's last reads.
    const perBatch = Math.max(64, 16 * depth);
    const slots = Math.max(1, Math.min(perBatch, Math.floor((64 << 20) / chunk)));
    const dest = new Uint8Array(slots * chunk); // (slots, chunk) reused round robin
    const batch = new ReadBatch(perBatch);
    let next = 0;
    const t0 = performance.now();
    let elapsed = 0;
    while (next < chunks && elapsed < seconds) {
      batch.clear();
      for (let j = 0; j < perBatch && next < chunks; j++, next++) {
        batch.add(order[next] * chunk, chunk, dest, (j % slots) * chunk);
      }
      await reader.read(batch);
      elapsed = (performance.now() - t0) / 1000;
    }
    const bytes = reader.stats.bytes;
    return {
      source: backend,
      chunkBytes: chunk,
      depth,
      mbps: bytes / elapsed / 1e6,
      bytes,
      seconds: elapsed,
    };
  } catch (e) {
    return failed(backend, chunk, depth, (e as Error).message);
  } finally {
    reader.close();
  }
}

/** Deterministic uniform numbers in [0, 1). */
function mulberry32(seed: number): () => number {
  const rng = new Rng(seed); // mulberry32, as everywhere in flashlm
  return () => rng.next();
}

// ---------------------------------------------------------------------------
// One point under Bun: this file run as a script

/** The source name of the `node-fs` backend measured under Bun. */
export const BUN_SOURCE = "bun-node-fs";

/** The Bun executable itself (`process.execPath`), so npx is not run per point. */
async function bunExecPath(bun: string[]): Promise<string[]> {
  try {
    const out = await new Deno.Command(bun[0], {
      args: [...bun.slice(1), "-e", "console.log(process.execPath)"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const path = new TextDecoder().decode(out.stdout).trim();
    return out.success && path ? [path] : bun;
  } catch {
    return bun;
  }
}

/**
 * One point measured by `command` (Bun, or a fresh Deno) running this file as a script
 * with `backend`; the point is named `source` in the report (`bun-node-fs` for Bun).
 */
async function childPoint(
  command: string[],
  backend: BackendName,
  file: string,
  chunk: number,
  depth: number,
  seconds: number,
  seed: number,
): Promise<BenchPoint> {
  const source = backend === "node-fs" ? BUN_SOURCE : backend;
  const script = new URL(import.meta.url).pathname;
  const args = [
    ...command.slice(1),
    script,
    "point",
    file,
    `${chunk}`,
    `${depth}`,
    `${seconds}`,
    `${seed}`,
    backend,
  ];
  try {
    const out = await new Deno.Command(command[0], { args, stdout: "piped", stderr: "piped" })
      .output();
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    const point = JSON.parse(lines[lines.length - 1]) as BenchPoint;
    point.source = source;
    point.mbps = point.mbps ?? NaN;
    return point;
  } catch (e) {
    const who = backend === "node-fs" ? "bun" : "deno";
    return failed(source, chunk, depth, `${who} failed: ${(e as Error).message}`);
  }
}

// `bun io/bench_io.ts point <file> <chunk> <depth> <seconds> <seed> [backend]`: one point as
// JSON (backend default node-fs; Deno runs io-uring points this way).
if (import.meta.main && process.argv.includes("point")) {
  const [file, chunk, depth, seconds, seed, backend] = process.argv.slice(
    process.argv.indexOf("point") + 1,
  );
  const point = await measureRandomReads({
    file,
    backend: (backend ?? "node-fs") as BackendName,
    chunkBytes: Number(chunk),
    depth: Number(depth),
    seconds: Number(seconds),
    seed: Number(seed),
  });
  console.log(JSON.stringify({ ...point, mbps: Number.isFinite(point.mbps) ? point.mbps : null }));
}

// ---------------------------------------------------------------------------
// One point of fio

/** `fio --version`, or null when fio is not installed. */
function fioVersion(): Promise<string | null> {
  return commandVersion(["fio"]);
}

/** `<command> --version`, or null when it does not run. */
async function commandVersion(command: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command(command[0], {
      args: [...command.slice(1), "--version"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/**
 * The fio command line of one point: random reads of `chunk` bytes, `depth` at once,
 * for `seconds` or until the file is read once.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fioArgs } from "./bench_io.ts";
 * const args = fioArgs("fio-psync", "/tmp/f", 1 << 30, 32768, 16, 1);
 * assert(args.includes("--ioengine=psync") && args.includes("--numjobs=16"));
 * ```
 */
export function fioArgs(
  source: string,
  file: string,
  fileSize: number,
  chunk: number,
  depth: number,
  seconds: number,
): string[] {
  const common = [
    "--name=flashlm",
    `--filename=${file}`,
    "--readonly",
    "--rw=randread",
    `--bs=${chunk}`,
    `--runtime=${seconds}`,
    "--invalidate=1",
    "--group_reporting",
    "--output-format=json",
  ];
  if (source === "fio-psync") {
    // depth jobs, each over its own slice of the file (no chunk is read twice).
    const slice = Math.floor(fileSize / depth / chunk) * chunk;
    return [
      ...common,
      "--ioengine=psync",
      "--direct=0",
      `--numjobs=${depth}`,
      `--size=${slice}`,
      `--offset_increment=${slice}`,
    ];
  }
  return [
    ...common,
    "--ioengine=io_uring",
    "--direct=1",
    `--iodepth=${depth}`,
    "--numjobs=1",
    `--size=${Math.floor(fileSize / chunk) * chunk}`,
  ];
}

async function fioPoint(
  source: string,
  file: string,
  fileSize: number,
  chunk: number,
  depth: number,
  seconds: number,
): Promise<BenchPoint> {
  const out = await new Deno.Command("fio", {
    args: fioArgs(source, file, fileSize, chunk, depth, seconds),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  try {
    const json = JSON.parse(text.slice(text.indexOf("{")));
    const read = json.jobs[0].read;
    const bytes = Number(read.io_bytes);
    const ms = Number(read.runtime);
    if (!out.success || !(bytes > 0) || !(ms > 0)) throw new Error("no bytes read");
    return {
      source,
      chunkBytes: chunk,
      depth,
      mbps: Number(read.bw_bytes) / 1e6,
      bytes,
      seconds: ms / 1000,
    };
  } catch {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n")[0] || "no output";
    return failed(source, chunk, depth, `fio failed: ${err}`);
  }
}

// ---------------------------------------------------------------------------
// Report: table, JSON, SVG

function tableHeader(sources: string[]): string {
  const cols = ["chunk", "depth", ...sources.map((s) => s + " MB/s")];
  for (const fio of FIO_SOURCES) {
    if (!sources.includes(fio)) continue;
    const short = fio === "fio-psync" ? "psync" : "uring";
    cols.push(`best/${short}`);
    if (sources.includes(BUN_SOURCE)) cols.push(`bun/${short}`);
  }
  return cols.map((c, i) => c.padStart(i < 2 ? 6 : Math.max(10, c.length))).join(" ");
}

function tableRow(sources: string[], row: BenchPoint[], chunk: number, depth: number): string {
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
 * import { formatBenchIoTable } from "./bench_io.ts";
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
  const lines = [tableHeader(report.sources)];
  const keys = [...new Set(report.points.map((p) => `${p.chunkBytes}/${p.depth}`))];
  for (const key of keys) {
    const [chunk, depth] = key.split("/").map(Number);
    const row = report.sources.map((s) =>
      report.points.find((p) => p.source === s && p.chunkBytes === chunk && p.depth === depth) ??
        failed(s, chunk, depth, "missing")
    );
    lines.push(tableRow(report.sources, row, chunk, depth));
  }
  return lines.join("\n");
}

/**
 * Write `bench-io.json` (the report), `bench-io.txt` (the table),
 * `bench-io-<source>.svg` (throughput vs chunk size, one line per depth) and
 * `bench-io-depth<d>.svg` (the same at the largest depth d, one line per source) into `dir`.
 */
async function writeReport(report: BenchIoReport, dir: string): Promise<void> {
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
