/**
 * One point of `bench io` measured by flashlm's reader: random reads of one chunk size
 * with a number of reads in flight, over a file whose page cache the caller emptied. In
 * this process ({@linkcode measureRandomReads}), or in a child ({@linkcode childPoint}):
 * Bun, to measure the `node-fs` backend under Bun, or a fresh Deno for `io-uring` (see
 * `tools/bench_io.ts`). Run as a script, this file measures one point and prints it as
 * JSON:
 *
 *   bench_io_point.ts point <file> <chunk> <depth> <seconds> <seed> [backend]
 *
 * (backend default `node-fs`). It uses no `Deno.*` API, so Bun runs it without the shim.
 *
 * @module
 */

import process from "node:process";
import { fileURLToPath } from "node:url";
import type { BackendName } from "../io/read_backends.ts";
import { FlashReader, ReadBatch } from "../io/reader.ts";
import { Rng } from "../core/sampler.ts";

// ---------------------------------------------------------------------------
// A point

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

/**
 * A point that failed (its MB/s is `NaN`), and why.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { failedPoint } from "./bench_io_point.ts";
 * const p = failedPoint("fio-psync", 4096, 8, "fio failed: no output");
 * assert.ok(Number.isNaN(p.mbps));
 * assert.equal(p.error, "fio failed: no output");
 * ```
 */
export function failedPoint(
  source: string,
  chunk: number,
  depth: number,
  error: string,
): BenchPoint {
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
 * import { measureRandomReads } from "./bench_io_point.ts";
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
    return failedPoint(backend, chunk, depth, (e as Error).message);
  }
  try {
    const chunks = Math.floor(reader.fileSize / chunk);
    if (chunks < 1) return failedPoint(backend, chunk, depth, "file smaller than one chunk");
    // A random permutation of the chunks: each is read at most once.
    const rng = new Rng(options.seed);
    const order = new Uint32Array(chunks); // (chunks)
    for (let i = 0; i < chunks; i++) order[i] = i;
    for (let i = chunks - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
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
    return failedPoint(backend, chunk, depth, (e as Error).message);
  } finally {
    reader.close();
  }
}

// ---------------------------------------------------------------------------
// A point in a child process: Bun, or a fresh Deno

/** The source name of the `node-fs` backend measured under Bun. */
export const BUN_SOURCE = "bun-node-fs";

/**
 * The executable a command that runs Bun starts (its `process.execPath`), so that `npx`
 * is not run again for every point; `bun` itself when that cannot be found out.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bunExecPath } from "./bench_io_point.ts";
 * assert.deepEqual(await bunExecPath(["no-such-bun-here"]), ["no-such-bun-here"]);
 * ```
 */
export async function bunExecPath(bun: string[]): Promise<string[]> {
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
 * with `backend`; the point is named `bun-node-fs` when Bun measures `node-fs`, else
 * after its backend.
 *
 * @example A point of the `fs-pool` backend, measured by a fresh Deno
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { childPoint } from "./bench_io_point.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(1 << 20));
 * const deno = [Deno.execPath(), "run", "--allow-read"];
 * const point = await childPoint(deno, "fs-pool", path, 4096, 2, 0.05, 1);
 * assert.equal(point.source, "fs-pool");
 * assert.ok(point.mbps > 0 && point.bytes % 4096 === 0);
 * await Deno.remove(path);
 * ```
 */
export async function childPoint(
  command: string[],
  backend: BackendName,
  file: string,
  chunk: number,
  depth: number,
  seconds: number,
  seed: number,
): Promise<BenchPoint> {
  const source = backend === "node-fs" ? BUN_SOURCE : backend;
  const args = [
    ...command.slice(1),
    fileURLToPath(import.meta.url),
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
    return failedPoint(source, chunk, depth, `${who} failed: ${(e as Error).message}`);
  }
}

// The script: one point as JSON on stdout (NaN MB/s as null).
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
