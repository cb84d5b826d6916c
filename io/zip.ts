/**
 * The zip container as `torch.save` writes it: stored (uncompressed) members, each found
 * through the central directory and its local header, with ZIP64 records for sizes, offsets
 * and counts past 4 GiB / 65535. Only the directory and the local headers are read; a member's
 * bytes are read by the caller at {@linkcode ZipMember.offset}, as much as it needs.
 *
 * Every number is checked before it is used (the file is treated as hostile): a bad
 * directory is one {@linkcode FlashlmError} naming the file and the byte offset of the bad
 * field, never an out-of-bounds read or an allocation larger than the directory itself.
 *
 * @module
 */

import { readExactly } from "./atomic_write.ts";
import { FlashlmError, ioError, showValue } from "./errors.ts";

// ---------------------------------------------------------------------------
// Types and constants

/**
 * One member of a zip file, with its data located.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { ZipMember } from "./zip.ts";
 * const member: ZipMember = { name: "archive/data.pkl", offset: 64, size: 100 };
 * assert.equal(member.offset + member.size, 164);
 * ```
 */
export interface ZipMember {
  /** The member's name (a path inside the archive). */
  name: string;
  /** Absolute offset in the file of the member's first data byte. */
  offset: number;
  /** The member's size in bytes (stored members only: compressed size = size). */
  size: number;
}

/**
 * The members of a zip file, by name.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { ZipDirectory } from "./zip.ts";
 * const zip: ZipDirectory = { path: "a.zip", fileSize: 22, members: new Map() };
 * assert.equal(zip.members.size, 0);
 * ```
 */
export interface ZipDirectory {
  /** The file's path (named by every error). */
  path: string;
  /** The file's size in bytes. */
  fileSize: number;
  /** Members by name, in directory order. */
  members: Map<string, ZipMember>;
}

const EOCD_SIGNATURE = 0x06054b50;
const EOCD_BYTES = 22;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_LOCATOR_BYTES = 20;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const ZIP64_EOCD_BYTES = 56;
const CENTRAL_SIGNATURE = 0x02014b50;
const CENTRAL_BYTES = 46;
const LOCAL_SIGNATURE = 0x04034b50;
const LOCAL_BYTES = 30;
/** The longest zip comment: the end record lies within this many bytes of the end. */
const MAX_COMMENT = 0xffff;
/** The largest central directory read into memory (a model's has a few hundred entries). */
const MAX_DIRECTORY_BYTES = 64 << 20;

// ---------------------------------------------------------------------------
// Reading the directory

/**
 * Read the central directory of the zip file at `path` and the local header of every member.
 *
 * @param path The zip file (e.g. a `pytorch_model.bin` written by `torch.save`).
 * @returns Its members with their data located.
 * @throws {FlashlmError} naming `path`: kind "io" if it cannot be opened, "config" for a
 *   compressed or encrypted member or a multi-disk archive, else "format" with the offset.
 *
 * @example Listing the members of a zip written by hand
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readZipDirectory } from "./zip.ts";
 * // One stored member "a" holding "hi": local header, data, central entry, end record.
 * const u16 = (n: number) => [n & 255, n >> 8];
 * const u32 = (n: number) => [...u16(n & 0xffff), ...u16(n >>> 16)];
 * const local = [...u32(0x04034b50), ...u16(20), 0, 0, 0, 0, 0, 0, 0, 0, ...u32(0), ...u32(2),
 *   ...u32(2), ...u16(1), ...u16(0), 97];
 * const central = [...u32(0x02014b50), ...u16(20), ...u16(20), 0, 0, 0, 0, 0, 0, 0, 0,
 *   ...u32(0), ...u32(2), ...u32(2), ...u16(1), 0, 0, 0, 0, 0, 0, 0, 0, ...u32(0), ...u32(0), 97];
 * const end = [...u32(0x06054b50), 0, 0, 0, 0, ...u16(1), ...u16(1), ...u32(central.length),
 *   ...u32(local.length + 2), 0, 0];
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([...local, 104, 105, ...central, ...end]));
 * const zip = await readZipDirectory(path);
 * assert.deepEqual(zip.members.get("a"), { name: "a", offset: 31, size: 2 });
 * await Deno.remove(path);
 * ```
 */
export async function readZipDirectory(path: string): Promise<ZipDirectory> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw ioError("cannot open", path, err);
  }
  try {
    const fileSize = (await file.stat()).size;
    const read = async (offset: number, length: number): Promise<Uint8Array> => {
      const bytes = new Uint8Array(length);
      await readExactly(file, bytes, offset, path);
      return bytes;
    };
    const end = await findEnd(read, fileSize, path);
    const directory = await read(end.directoryOffset, end.directorySize);
    const entries = parseCentralDirectory(directory, end, path);
    const members = new Map<string, ZipMember>();
    for (const entry of entries) {
      members.set(entry.name, await locate(read, entry, end.directoryOffset, path));
    }
    return { path, fileSize, members };
  } finally {
    file.close();
  }
}

/** Where the central directory is, as the end records say. */
interface DirectoryEnd {
  directoryOffset: number;
  directorySize: number;
  entries: number;
}

/** A central directory entry: the member's name, size and local header offset. */
interface CentralEntry {
  name: string;
  size: number;
  localOffset: number;
  /** Where the entry starts in the file, for error messages. */
  at: number;
}

function bad(path: string, at: number, what: string): FlashlmError {
  return new FlashlmError(`bad zip file: ${what} (byte ${at})`, { file: path, kind: "format" });
}

/** An 8-byte little-endian count as a number, refused past 2^53. */
function u64(view: DataView, offset: number, path: string, at: number): number {
  const value = view.getBigUint64(offset, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw bad(path, at + offset, `a 64-bit field holds ${value}, past any file size`);
  }
  return Number(value);
}

/** Find the end of central directory record (and its ZIP64 form when the archive needs it). */
async function findEnd(
  read: (offset: number, length: number) => Promise<Uint8Array>,
  fileSize: number,
  path: string,
): Promise<DirectoryEnd> {
  if (fileSize < EOCD_BYTES) {
    throw new FlashlmError(`not a zip file: ${fileSize} bytes is shorter than any zip`, {
      file: path,
      kind: "format",
    });
  }
  const tailStart = Math.max(0, fileSize - EOCD_BYTES - MAX_COMMENT);
  const tail = await read(tailStart, fileSize - tailStart);
  const view = new DataView(tail.buffer);
  let at = -1;
  for (let i = tail.length - EOCD_BYTES; i >= 0; i--) {
    if (view.getUint32(i, true) === EOCD_SIGNATURE) {
      at = i;
      break;
    }
  }
  if (at < 0) {
    throw new FlashlmError("not a zip file: no end of central directory record", {
      file: path,
      kind: "format",
    });
  }
  const eocd = tailStart + at;
  const disk = view.getUint16(at + 4, true);
  const directoryDisk = view.getUint16(at + 6, true);
  let entries = view.getUint16(at + 10, true);
  let directorySize = view.getUint32(at + 12, true);
  let directoryOffset = view.getUint32(at + 16, true);

  // A ZIP64 locator just before the end record points to the 64-bit end record.
  let directoryEnd = eocd;
  const locatorAt = eocd - ZIP64_LOCATOR_BYTES;
  const locator = locatorAt >= 0
    ? new DataView((await read(locatorAt, ZIP64_LOCATOR_BYTES)).buffer)
    : null;
  if (locator !== null && locator.getUint32(0, true) === ZIP64_LOCATOR_SIGNATURE) {
    const record = u64(locator, 8, path, locatorAt);
    if (record + ZIP64_EOCD_BYTES > locatorAt) {
      throw bad(path, locatorAt + 8, `the ZIP64 end record offset ${record} is past the locator`);
    }
    const z = new DataView((await read(record, ZIP64_EOCD_BYTES)).buffer);
    if (z.getUint32(0, true) !== ZIP64_EOCD_SIGNATURE) {
      throw bad(path, record, "no ZIP64 end of central directory record where the locator says");
    }
    if (z.getUint32(16, true) !== 0 || z.getUint32(20, true) !== 0) {
      throw new FlashlmError("multi-disk zip archives are not supported", {
        file: path,
        kind: "config",
      });
    }
    entries = u64(z, 32, path, record);
    directorySize = u64(z, 40, path, record);
    directoryOffset = u64(z, 48, path, record);
    directoryEnd = record;
  } else if (disk !== 0 || directoryDisk !== 0) {
    throw new FlashlmError("multi-disk zip archives are not supported", {
      file: path,
      kind: "config",
    });
  }
  if (directoryOffset + directorySize > directoryEnd) {
    throw bad(
      path,
      eocd + 12,
      `the central directory (${directorySize} bytes at ${directoryOffset}) runs past its end record`,
    );
  }
  if (directorySize > MAX_DIRECTORY_BYTES) {
    throw bad(path, eocd + 12, `a ${directorySize}-byte central directory is too large`);
  }
  if (entries * CENTRAL_BYTES > directorySize) {
    throw bad(path, eocd + 10, `${entries} entries cannot fit in ${directorySize} bytes`);
  }
  return { directoryOffset, directorySize, entries };
}

/** The entries of the central directory `bytes` (which starts at `end.directoryOffset`). */
function parseCentralDirectory(bytes: Uint8Array, end: DirectoryEnd, path: string): CentralEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder();
  const entries: CentralEntry[] = [];
  const names = new Set<string>();
  let p = 0;
  for (let k = 0; k < end.entries; k++) {
    const at = end.directoryOffset + p;
    if (p + CENTRAL_BYTES > bytes.length || view.getUint32(p, true) !== CENTRAL_SIGNATURE) {
      throw bad(path, at, `central directory entry ${k} of ${end.entries} is missing`);
    }
    const flags = view.getUint16(p + 8, true);
    const method = view.getUint16(p + 10, true);
    let compressed = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLength = view.getUint16(p + 28, true);
    const extraLength = view.getUint16(p + 30, true);
    const commentLength = view.getUint16(p + 32, true);
    let localOffset = view.getUint32(p + 42, true);
    const next = p + CENTRAL_BYTES + nameLength + extraLength + commentLength;
    if (next > bytes.length) throw bad(path, at, `central directory entry ${k} is cut short`);
    const name = decoder.decode(bytes.subarray(p + CENTRAL_BYTES, p + CENTRAL_BYTES + nameLength));
    if (flags & 1) {
      throw new FlashlmError(`member ${showValue(name)} is encrypted`, {
        file: path,
        kind: "config",
      });
    }
    if (method !== 0) {
      throw new FlashlmError(
        `member ${
          showValue(name)
        } is compressed (method ${method}); torch.save writes stored members only`,
        { file: path, kind: "config" },
      );
    }
    // ZIP64 extended information: the 64-bit forms of the fields set to 0xFFFFFFFF, in order.
    const extra = p + CENTRAL_BYTES + nameLength;
    for (let e = extra; e + 4 <= extra + extraLength;) {
      const id = view.getUint16(e, true);
      const length = view.getUint16(e + 2, true);
      if (e + 4 + length > extra + extraLength) {
        throw bad(
          path,
          end.directoryOffset + e,
          `an extra field of ${showValue(name)} is cut short`,
        );
      }
      if (id === 0x0001) {
        let q = e + 4;
        const take = (): number => {
          if (q + 8 > e + 4 + length) {
            throw bad(
              path,
              end.directoryOffset + e,
              `the ZIP64 field of ${showValue(name)} is short`,
            );
          }
          const value = u64(view, q, path, end.directoryOffset);
          q += 8;
          return value;
        };
        if (size === 0xffffffff) size = take();
        if (compressed === 0xffffffff) compressed = take();
        if (localOffset === 0xffffffff) localOffset = take();
      }
      e += 4 + length;
    }
    if (compressed !== size) {
      throw bad(
        path,
        at + 20,
        `stored member ${showValue(name)} has ${compressed} bytes, not ${size}`,
      );
    }
    if (names.has(name)) throw bad(path, at, `member ${showValue(name)} appears twice`);
    names.add(name);
    entries.push({ name, size, localOffset, at });
    p = next;
  }
  return entries;
}

/** Read an entry's local header and work out where its data is. */
async function locate(
  read: (offset: number, length: number) => Promise<Uint8Array>,
  entry: CentralEntry,
  directoryOffset: number,
  path: string,
): Promise<ZipMember> {
  const what = `member ${showValue(entry.name)}`;
  if (entry.localOffset + LOCAL_BYTES > directoryOffset) {
    throw bad(
      path,
      entry.at + 42,
      `${what}'s local header offset ${entry.localOffset} is past the data`,
    );
  }
  const header = new DataView((await read(entry.localOffset, LOCAL_BYTES)).buffer);
  if (header.getUint32(0, true) !== LOCAL_SIGNATURE) {
    throw bad(path, entry.localOffset, `no local header for ${what} where the directory says`);
  }
  const offset = entry.localOffset + LOCAL_BYTES + header.getUint16(26, true) +
    header.getUint16(28, true);
  if (offset + entry.size > directoryOffset) {
    throw bad(
      path,
      entry.localOffset,
      `${what} (${entry.size} bytes at ${offset}) runs into the central directory`,
    );
  }
  return { name: entry.name, offset, size: entry.size };
}
