/**
 * What `flashlm bench` reads about its own process and the machine from Linux's /proc:
 * peak resident set, bytes read from storage, time spent waiting for a CPU, load and
 * available memory. Each probe answers 0 (or NaN, Infinity: see each) where /proc is
 * missing, so the bench runs, with less to say, elsewhere.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// This process

/**
 * A field of /proc/self/status in bytes (e.g. `VmHWM`, the peak resident set), 0 where
 * unavailable.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { procStatusBytes } from "./bench_probes.ts";
 * assert.ok(procStatusBytes("VmHWM") > 0 || Deno.build.os !== "linux");
 * assert.equal(procStatusBytes("NoSuchField"), 0);
 * ```
 */
export function procStatusBytes(field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
      Deno.readTextFileSync("/proc/self/status"),
    );
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Reset VmHWM to the current resident set (Linux: write 5 to /proc/self/clear_refs);
 * false where that is not possible.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { procStatusBytes, resetPeakRss } from "./bench_probes.ts";
 * if (resetPeakRss()) {
 *   assert.ok(procStatusBytes("VmHWM") <= procStatusBytes("VmRSS") + (1 << 20));
 * }
 * ```
 */
export function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * Bytes this process has caused to be read from storage (/proc/self/io `read_bytes`,
 * readahead included), 0 if unknown.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { kernelReadBytes } from "./bench_probes.ts";
 * const before = kernelReadBytes();
 * assert.ok(Number.isInteger(before) && before >= 0);
 * assert.ok(kernelReadBytes() >= before);
 * ```
 */
export function kernelReadBytes(): number {
  try {
    const m = /^read_bytes:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/io"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Nanoseconds this thread has waited on a run queue, runnable while other processes held
 * the CPUs (/proc/thread-self/schedstat), 0 if unknown.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runQueueWaitNs } from "./bench_probes.ts";
 * const before = runQueueWaitNs();
 * assert.ok(before >= 0 && runQueueWaitNs() >= before);
 * ```
 */
export function runQueueWaitNs(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[1]) || 0;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------
// The machine

/**
 * The 1-minute load average (/proc/loadavg), NaN if unknown.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadAverage } from "./bench_probes.ts";
 * assert.ok(loadAverage() >= 0 || Deno.build.os !== "linux");
 * ```
 */
export function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

/**
 * `MemAvailable` from /proc/meminfo in bytes, Infinity when unknown.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { memAvailable } from "./bench_probes.ts";
 * assert.ok(memAvailable() > 0);
 * ```
 */
export function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/meminfo"));
    return m ? Number(m[1]) * 1024 : Infinity;
  } catch {
    return Infinity;
  }
}
