/**
 * `fio` beside `bench io`: the same random reads at the same points, run by fio twice —
 * buffered `psync` with as many jobs as reads in flight (what a thread pool of blocking
 * reads can do) and `O_DIRECT` `io_uring` with that queue depth (what the disk can do).
 *
 * @module
 */

import { type BenchPoint, failedPoint } from "./bench_io_point.ts";

// ---------------------------------------------------------------------------
// One point of fio

/** The fio variants run beside our backends. */
export const FIO_SOURCES = ["fio-psync", "fio-uring-direct"] as const;

/**
 * `<command> --version`, or null when it does not run (e.g. fio or Bun is not installed).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { commandVersion } from "./bench_io_fio.ts";
 * assert.equal(await commandVersion(["no-such-command-here"]), null);
 * assert.match((await commandVersion([Deno.execPath()]))!, /^deno \d/);
 * ```
 */
export async function commandVersion(command: string[]): Promise<string | null> {
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
 * import { fioArgs } from "./bench_io_fio.ts";
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

/**
 * One point measured by fio (`source` is one of {@linkcode FIO_SOURCES}); a failed point
 * with fio's first line of error when it fails or is not installed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fioPoint } from "./bench_io_fio.ts";
 * const point = await fioPoint("fio-psync", "/nonexistent/file", 1 << 20, 4096, 2, 1);
 * assert.match(point.error ?? "", /^fio failed: /);
 * ```
 */
export async function fioPoint(
  source: string,
  file: string,
  fileSize: number,
  chunk: number,
  depth: number,
  seconds: number,
): Promise<BenchPoint> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("fio", {
      args: fioArgs(source, file, fileSize, chunk, depth, seconds),
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    return failedPoint(source, chunk, depth, `fio failed: ${(e as Error).message}`);
  }
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
    return failedPoint(source, chunk, depth, `fio failed: ${err}`);
  }
}
