/**
 * Cold-cache control for measurements: push a file out of the operating system's page
 * cache before a "cold" run, and ask how much of it is cached.
 *
 * Two ways to evict, tried in this order by `"auto"`:
 * - `fadvise`: `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)` through Deno FFI (Linux;
 *   needs `--allow-ffi`). Drops only this file's clean pages, so the file is flushed first.
 * - `drop-caches`: write `3` to `/proc/sys/vm/drop_caches` (Linux, root). Drops every
 *   clean page of every file on the machine.
 *
 * On a virtual machine the host may cache the disk too; neither method reaches that.
 *
 * @module
 */

import { FlashlmError } from "./errors.ts";
import { cString, libc } from "./runtime.ts";

// ---------------------------------------------------------------------------
// Evicting

/** How a file was evicted from the page cache (`"none"`: it could not be). */
export type EvictMethod = "fadvise" | "drop-caches" | "none";

/** Linux `POSIX_FADV_DONTNEED`. */
const POSIX_FADV_DONTNEED = 4;

/**
 * Evict `path` from the page cache with `method` (`"auto"`: `fadvise`, else
 * `drop-caches`, else `"none"`) and return the method used. A forced method that
 * cannot work here is a `usage` {@linkcode FlashlmError}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { evictFromPageCache } from "./page_cache.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(1 << 16));
 * const method = await evictFromPageCache(path);
 * assert(["fadvise", "drop-caches", "none"].includes(method));
 * await Deno.remove(path);
 * ```
 */
export async function evictFromPageCache(
  path: string,
  method: "auto" | EvictMethod = "auto",
): Promise<EvictMethod> {
  if (method === "none") return "none";
  // Dirty pages cannot be dropped: write the file's pages out first.
  try {
    using file = await Deno.open(path, { read: true });
    await file.syncData();
  } catch (e) {
    throw new FlashlmError(`cannot open to evict from the page cache (${(e as Error).message})`, {
      file: path,
      kind: "io",
      cause: e,
    });
  }
  if (method === "auto" || method === "fadvise") {
    if (fadviseDontNeed(path)) return "fadvise";
    if (method === "fadvise") {
      throw new FlashlmError(
        "cannot evict with posix_fadvise (needs Linux and --allow-ffi)",
        { file: path, kind: "usage" },
      );
    }
  }
  if (await dropCaches()) return "drop-caches";
  if (method === "drop-caches") {
    throw new FlashlmError(
      "cannot write /proc/sys/vm/drop_caches (needs Linux and root)",
      { file: path, kind: "usage" },
    );
  }
  return "none";
}

/** `posix_fadvise(DONTNEED)` on the whole file; false when FFI or the call is unavailable. */
function fadviseDontNeed(path: string): boolean {
  const c = libc();
  if (c === null || c.posix_fadvise === null || Deno.build.os !== "linux") return false;
  const fd = c.open(cString(path), 0 /* O_RDONLY */);
  if (fd < 0) return false;
  try {
    return c.posix_fadvise(fd, 0n, 0n, POSIX_FADV_DONTNEED) === 0;
  } finally {
    c.close(fd);
  }
}

/** Drop every clean page on the machine; false when not permitted. */
async function dropCaches(): Promise<boolean> {
  if (Deno.build.os !== "linux") return false;
  try {
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Residency

/**
 * Fraction (0..1) of `path`'s pages now in the page cache, by `mmap` + `mincore`
 * through FFI; `null` when that is unavailable (no FFI, not Linux or macOS). An empty
 * file counts as fully resident.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { residentFraction } from "./page_cache.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(1 << 16));
 * const f = await residentFraction(path);
 * assert(f === null || (f >= 0 && f <= 1));
 * await Deno.remove(path);
 * ```
 */
export async function residentFraction(path: string): Promise<number | null> {
  const c = libc();
  if (c === null || !c.mmap || !c.munmap || !c.mincore || !c.getpagesize) return null;
  const size = (await Deno.stat(path)).size;
  if (size === 0) return 1;
  const fd = c.open(cString(path), 0 /* O_RDONLY */);
  if (fd < 0) return null;
  try {
    const PROT_READ = 1, MAP_SHARED = 1;
    const addr = c.mmap(null, BigInt(size), PROT_READ, MAP_SHARED, fd, 0n);
    const value = BigInt(Deno.UnsafePointer.value(addr));
    if (addr === null || value === 0xffffffffffffffffn) return null; // MAP_FAILED
    try {
      const page = c.getpagesize();
      const vec = new Uint8Array(Math.ceil(size / page)); // (pages) bit 0: resident
      if (c.mincore(addr, BigInt(size), vec) !== 0) return null;
      let resident = 0;
      for (let i = 0; i < vec.length; i++) resident += vec[i] & 1;
      return resident / vec.length;
    } finally {
      c.munmap(addr, BigInt(size));
    }
  } finally {
    c.close(fd);
  }
}
