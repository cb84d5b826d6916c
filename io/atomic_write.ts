/**
 * Whole-or-nothing file writes, and the read/write loops that never trust a single call to
 * move every byte.
 *
 * {@linkcode atomicWriteFile} writes to a temporary file in the same directory, flushes it to
 * disk, then renames it over the target: a reader (or a crash) sees either the old file or the
 * complete new one, never a half-written one.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { FlashlmError, ioError, osError, osErrorCode } from "./errors.ts";

// ---------------------------------------------------------------------------
// Loops over short reads and writes

/**
 * Write all of `bytes` to `file` at its current position, looping on short writes.
 *
 * @param file An open, writable file.
 * @param bytes The bytes to write.
 * @returns Resolves once every byte is written.
 *
 * @example Writing to a temporary file
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { writeAll } from "./atomic_write.ts";
 * const path = await Deno.makeTempFile();
 * const file = await Deno.open(path, { write: true });
 * await writeAll(file, new Uint8Array([1, 2, 3]));
 * file.close();
 * assert((await Deno.readFile(path)).length === 3);
 * await Deno.remove(path);
 * ```
 */
export async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const n = await file.write(bytes.subarray(done));
    if (n <= 0) {
      throw new FlashlmError(`write made no progress after ${done} of ${bytes.length} bytes`, {
        kind: "io",
      });
    }
    done += n;
  }
}

/**
 * Fill `dest` with the bytes of `file` starting at byte `position`: seek, then loop on short
 * reads. Not safe to call concurrently on the same `file` (seek and read are separate calls).
 *
 * @param file An open, readable file.
 * @param dest Where the bytes go; exactly `dest.length` bytes are read.
 * @param position Absolute byte offset in the file to read from.
 * @param path The file's path, named in the error.
 * @returns Resolves once `dest` is full.
 * @throws {FlashlmError} "unexpected end of file ..." (kind "format") if the file ends first.
 *
 * @example Reading the middle of a file
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readExactly } from "./atomic_write.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([10, 11, 12, 13, 14]));
 * const file = await Deno.open(path);
 * const dest = new Uint8Array(2);
 * await readExactly(file, dest, 2, path);
 * file.close();
 * assert(dest[0] === 12 && dest[1] === 13);
 * await Deno.remove(path);
 * ```
 */
export async function readExactly(
  file: Deno.FsFile,
  dest: Uint8Array,
  position: number,
  path: string,
): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let done = 0;
  while (done < dest.length) {
    const n = await file.read(dest.subarray(done));
    if (n === null || n === 0) {
      throw new FlashlmError(
        `unexpected end of file: wanted ${dest.length} bytes at offset ${position}, got ${done}`,
        { file: path, kind: "format" },
      );
    }
    done += n;
  }
}

// ---------------------------------------------------------------------------
// Atomic write

/**
 * Wrap an operating-system error as a FlashlmError (kind "io") naming `path`, the user's
 * destination: a known condition (disk full, read-only, …) says what to do, any other says
 * `what` failed and the system's message. A FlashlmError passes unchanged.
 */
function writeError(what: string, path: string, cause: unknown): FlashlmError {
  return osError(cause, path, `its directory ${dirname(path)} does not exist`) ??
    ioError(what, path, cause);
}

/**
 * Write `path` atomically: `write` fills a temporary file `.<name>.tmp-<pid>-<random>` in the
 * same directory, which is then fsynced and renamed over `path`, and the directory is fsynced.
 * If anything fails (including `write` throwing), the temporary file is removed, `path` keeps its
 * old content, and the error is rethrown: errors of `write` unchanged, except OS conditions
 * (disk full, read-only, …, see {@linkcode osError}), which become a {@linkcode FlashlmError}
 * of kind "io" naming `path`, like every system error of the create, flush and rename.
 *
 * @param path The file to create or replace.
 * @param write Writes the new content to the open temporary file (which it must not close).
 * @returns Resolves once the new content is durably in place.
 *
 * @example Replacing a file's content
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { atomicWriteFile, writeAll } from "./atomic_write.ts";
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/out.bin`;
 * await atomicWriteFile(path, (file) => writeAll(file, new Uint8Array([7, 8, 9])));
 * assert((await Deno.readFile(path))[2] === 9);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function atomicWriteFile(
  path: string,
  write: (file: Deno.FsFile) => Promise<void>,
): Promise<void> {
  const dir = dirname(path);
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0");
  const tmp = join(dir, `.${basename(path)}.tmp-${Deno.pid}-${random}`);

  let file: Deno.FsFile;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true });
  } catch (err) {
    throw writeError("cannot create its temporary file", path, err);
  }

  let open = true;
  try {
    await write(file);
    try {
      await file.sync();
    } catch (err) {
      throw writeError("cannot flush to disk", path, err);
    }
    file.close();
    open = false;
    try {
      await Deno.rename(tmp, path);
    } catch (err) {
      throw writeError("cannot rename its temporary file to it", path, err);
    }
  } catch (err) {
    if (open) {
      try {
        file.close();
      } catch { /* already closed by the writer: nothing to do */ }
    }
    try {
      await Deno.remove(tmp);
    } catch { /* gone already (or never renamed away): nothing more to clean */ }
    // The writer's own errors pass unchanged; an OS condition it met names `path`.
    // (A missing file there is the writer's own input, not `path`: it passes unchanged.)
    throw (osErrorCode(err) === "ENOENT" ? undefined : osError(err, path)) ?? err;
  }

  // Make the rename itself durable. Best effort: some platforms cannot open a directory.
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* directory fsync unsupported here; the data itself is already synced */ }
}
