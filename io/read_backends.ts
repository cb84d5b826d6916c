/**
 * The ways flashlm can do a positioned read ("read n bytes at offset o"), one per backend.
 *
 * The flash reader (`io/reader.ts`) keeps many reads in flight on "lanes": lane k
 * only ever has one read outstanding, so a backend may give every lane its own file
 * handle. A backend that can take a whole list of reads in one call also implements
 * `readList`, and the reader then hands it every read of a batch at once. The
 * backends, fastest first on these machines:
 *
 * | backend     | needs                     | how                                                             |
 * | ----------- | ------------------------- | --------------------------------------------------------------- |
 * | `io-uring`  | Deno, FFI, Linux io_uring | one ring: cache hits inline, the rest on `lanes` kernel threads |
 * | `ffi-aio`   | Deno, FFI, Linux glibc    | one `lio_listio` call per batch; glibc threads `pread` it       |
 * | `ffi-pread` | Deno, FFI                 | one `pread` per read via `Deno.dlopen` `nonblocking` calls      |
 * | `fs-pool`   | Deno                      | one `Deno.FsFile` per lane, `seek` then `read`                  |
 * | `node-fs`   | Bun, Node (or Deno)       | one `node:fs` descriptor per lane, `fs.read(fd, ..., offset)`   |
 *
 * `auto` picks the first available in that order: with `--allow-ffi` Deno uses
 * `io-uring` on Linux (x86_64, aarch64) where the kernel allows it (a probe ring is set
 * up once: container seccomp filters and `kernel.io_uring_disabled` refuse it), else
 * `ffi-aio` on Linux with glibc, else `ffi-pread`; without FFI `fs-pool`; Bun and Node
 * use `node-fs`, which touches no `Deno.*` API.
 *
 * This module holds the names, the choice, the {@linkcode ReadBackend} interface and the
 * two backends that need no FFI (`fs-pool`, `node-fs`); the three FFI backends are in
 * `io/ffi_backends.ts`.
 *
 * @module
 */

import * as nodeFs from "node:fs";
import { FlashlmError } from "./errors.ts";
import { aioUsable, FfiAioBackend, FfiPreadBackend, IoUringBackend } from "./ffi_backends.ts";
import { ioUringUnavailable } from "./io_uring.ts";
import { ffiAllowed, libc, runtimeName } from "./runtime.ts";

// ---------------------------------------------------------------------------
// Names and choice

/** The backends a {@linkcode ReadBackend} can be. */
export type BackendName = "io-uring" | "ffi-aio" | "ffi-pread" | "fs-pool" | "node-fs";

/** A backend, or `"auto"` to let {@linkcode resolveBackend} pick the fastest available. */
export type BackendChoice = "auto" | BackendName;

/** Every backend name, in order of preference. */
export const BACKENDS: readonly BackendName[] = [
  "io-uring",
  "ffi-aio",
  "ffi-pread",
  "fs-pool",
  "node-fs",
];

/**
 * The backends that work in this runtime with the permissions granted, best first.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { availableBackends } from "./read_backends.ts";
 * assert(availableBackends().includes("fs-pool")); // always there in Deno
 * ```
 */
export function availableBackends(): BackendName[] {
  const runtime = runtimeName();
  if (runtime !== "deno") return ["node-fs"];
  const out: BackendName[] = [];
  if (ffiAllowed() && libc() !== null) {
    if (ioUringUnavailable() === null) out.push("io-uring");
    if (aioUsable()) out.push("ffi-aio");
    out.push("ffi-pread");
  }
  out.push("fs-pool", "node-fs");
  return out;
}

/**
 * The backend `choice` means here: `"auto"` is the first of
 * {@linkcode availableBackends}; a named backend that cannot work here is a usage error.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { availableBackends, resolveBackend } from "./read_backends.ts";
 * assert.equal(resolveBackend("auto"), availableBackends()[0]);
 * assert.equal(resolveBackend("node-fs"), "node-fs");
 * ```
 */
export function resolveBackend(choice: BackendChoice = "auto"): BackendName {
  const available = availableBackends();
  if (choice === "auto") return available[0];
  if (!BACKENDS.includes(choice)) {
    throw new FlashlmError(
      `unknown reader backend "${choice}" (choose auto, ${BACKENDS.join(", ")})`,
      { kind: "usage" },
    );
  }
  if (!available.includes(choice)) {
    const why = runtimeName() !== "deno"
      ? "it needs Deno"
      : choice === "io-uring"
      ? ioUringUnavailable() ?? "run Deno with --allow-ffi"
      : choice === "ffi-aio" && ffiAllowed()
      ? "it needs Linux with glibc on a 64-bit CPU"
      : "run Deno with --allow-ffi";
    throw new FlashlmError(
      `reader backend "${choice}" is not available in ${runtimeName()} (${why}; available: ${
        available.join(", ")
      })`,
      { kind: "usage" },
    );
  }
  return choice;
}

// ---------------------------------------------------------------------------
// The interface

/**
 * One open file that can do positioned reads on `lanes` lanes at once. Lane k never
 * has two reads outstanding. Implement it to plug in another way of reading (a test
 * double, io_uring, ...) through `FlashReader.fromBackend`.
 */
export interface ReadBackend {
  /** Backend name, e.g. `"ffi-pread"`. */
  readonly name: string;
  /** The file. */
  readonly path: string;
  /** Size of the file in bytes when it was opened. */
  readonly fileSize: number;
  /** Number of lanes (reads that may be in flight at once). */
  readonly lanes: number;
  /**
   * Read up to `dest.length` bytes at file `offset` into `dest` on lane `lane`;
   * resolves the number of bytes read (fewer is a short read, 0 is the end of the file).
   */
  readAt(lane: number, dest: Uint8Array, offset: number): Promise<number>;
  /**
   * Optional: perform `count` reads at once (`dests[k]` from file offset `offsets[k]`),
   * at most `lanes` at a time, and set `done[k]` to the bytes each read (a short read is
   * allowed; the caller finishes it with `readAt`). Backends that can hand a whole batch
   * to the operating system in one call implement it.
   */
  readList?(
    count: number,
    dests: Uint8Array[],
    offsets: Float64Array,
    done: Float64Array,
  ): Promise<void>;
  /** Release the file. No read may be outstanding. */
  close(): void;
}

/**
 * Open `path` for positioned reads with backend `name` and `lanes` lanes.
 * Failure to open is an `io` {@linkcode FlashlmError} naming the file.
 *
 * @example Reading 3 bytes at offset 2 with the Deno handle pool
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { openBackend } from "./read_backends.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5]));
 * const file = await openBackend("fs-pool", path, 2);
 * const dest = new Uint8Array(3);
 * assert.equal(await file.readAt(1, dest, 2), 3);
 * file.close();
 * assert.deepEqual([...dest], [2, 3, 4]);
 * await Deno.remove(path);
 * ```
 */
export async function openBackend(
  name: BackendName,
  path: string,
  lanes: number,
): Promise<ReadBackend> {
  resolveBackend(name); // usage error when it cannot work here
  try {
    switch (name) {
      case "io-uring":
        return await IoUringBackend.open(path, lanes);
      case "fs-pool":
        return await FsPoolBackend.open(path, lanes);
      case "ffi-aio":
        return await FfiAioBackend.open(path, lanes);
      case "ffi-pread":
        return await FfiPreadBackend.open(path, lanes);
      case "node-fs":
        return await NodeFsBackend.open(path, lanes);
    }
  } catch (e) {
    if (e instanceof FlashlmError) throw e;
    throw new FlashlmError(`cannot open for reading (${(e as Error).message})`, {
      file: path,
      kind: "io",
      cause: e,
    });
  }
}

// ---------------------------------------------------------------------------
// fs-pool: one Deno.FsFile per lane, seek + read

/** Deno's own file API. Deno runs one operation at a time per file, hence a handle per lane. */
class FsPoolBackend implements ReadBackend {
  readonly name = "fs-pool";
  readonly path: string;
  readonly fileSize: number;
  readonly lanes: number;
  private handles: Deno.FsFile[]; // (lanes)
  private positions: Float64Array; // (lanes) where each handle's next read starts

  private constructor(path: string, fileSize: number, handles: Deno.FsFile[]) {
    this.path = path;
    this.fileSize = fileSize;
    this.handles = handles;
    this.lanes = handles.length;
    this.positions = new Float64Array(handles.length).fill(-1);
  }

  static async open(path: string, lanes: number): Promise<FsPoolBackend> {
    const handles: Deno.FsFile[] = [];
    try {
      for (let i = 0; i < lanes; i++) handles.push(await Deno.open(path, { read: true }));
      const size = (await handles[0].stat()).size;
      return new FsPoolBackend(path, size, handles);
    } catch (e) {
      for (const h of handles) h.close();
      throw e;
    }
  }

  async readAt(lane: number, dest: Uint8Array, offset: number): Promise<number> {
    const handle = this.handles[lane];
    // Skip the seek when the handle is already there (the next piece of a short read).
    if (this.positions[lane] !== offset) {
      this.positions[lane] = -1;
      await handle.seek(offset, Deno.SeekMode.Start);
    }
    const n = (await handle.read(dest)) ?? 0;
    this.positions[lane] = offset + n;
    return n;
  }

  close(): void {
    for (const h of this.handles) h.close();
  }
}

// ---------------------------------------------------------------------------
// node-fs: node:fs positioned reads, one descriptor per lane (Bun, Node; works in Deno)

/** `fs.read(fd, buffer, 0, n, position)`: no `Deno.*`, so Bun and Node can run it. */
class NodeFsBackend implements ReadBackend {
  readonly name = "node-fs";
  readonly path: string;
  readonly fileSize: number;
  readonly lanes: number;
  private fds: number[]; // (lanes)

  private constructor(path: string, fileSize: number, fds: number[]) {
    this.path = path;
    this.fileSize = fileSize;
    this.fds = fds;
    this.lanes = fds.length;
  }

  static open(path: string, lanes: number): Promise<NodeFsBackend> {
    const fds: number[] = [];
    try {
      // Deno's node:fs may serialise or seek per descriptor, so each lane gets its own.
      for (let i = 0; i < lanes; i++) fds.push(nodeFs.openSync(path, "r"));
      const size = nodeFs.fstatSync(fds[0]).size;
      return Promise.resolve(new NodeFsBackend(path, size, fds));
    } catch (e) {
      for (const fd of fds) nodeFs.closeSync(fd);
      return Promise.reject(e);
    }
  }

  readAt(lane: number, dest: Uint8Array, offset: number): Promise<number> {
    return new Promise((resolve, reject) => {
      nodeFs.read(this.fds[lane], dest, 0, dest.length, offset, (err, n) => {
        if (err) {
          reject(
            new FlashlmError(
              `read of ${dest.length} bytes at offset ${offset} failed (${err.message})`,
              { file: this.path, kind: "io", cause: err },
            ),
          );
        } else resolve(n);
      });
    });
  }

  close(): void {
    for (const fd of this.fds) nodeFs.closeSync(fd);
  }
}
