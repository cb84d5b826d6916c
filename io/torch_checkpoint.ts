/**
 * Reading PyTorch checkpoints (`pytorch_model.bin`, as `torch.save` writes them since torch
 * 1.6): a zip of stored members (io/zip.ts), `<archive>/data.pkl` (a pickle of the state dict)
 * and one member `<archive>/data/<key>` per storage, holding its raw little-endian elements.
 *
 * The pickle is read by io/pickle.ts's restricted unpickler, which **runs nothing from the
 * file**: the only globals it resolves are the ones a state dict needs (`collections.OrderedDict`,
 * `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the storage types and
 * dtypes), each mapped to a small TypeScript function here. A tensor becomes a view:
 * (storage key, element offset, shape, stride). Reading one reads only its bytes from its
 * storage member (one tensor in memory at a time, never a whole file); a transposed view is
 * put back in row-major order as it is read.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { readExactly } from "./atomic_write.ts";
import { FlashlmError, ioError, showValue } from "./errors.ts";
import { type PickleCallable, PickleGlobal, type PickleValue, unpickle } from "./pickle.ts";
import {
  parseCheckpointIndex,
  type SafetensorsDtype,
  safetensorsDtypeBytes,
  type TensorInfo,
} from "./safetensors.ts";
import { bytesToF32, type TensorFile } from "./tensor_file.ts";
import { readZipDirectory, type ZipMember } from "./zip.ts";

// ---------------------------------------------------------------------------
// What a state dict's pickle may name

/** Storage types and dtypes a persistent id may name, and the element type each means. */
const STORAGE_DTYPES: ReadonlyMap<string, SafetensorsDtype> = new Map([
  ["torch.HalfStorage", "F16"],
  ["torch.FloatStorage", "F32"],
  ["torch.BFloat16Storage", "BF16"],
  ["torch.DoubleStorage", "F64"],
  ["torch.LongStorage", "I64"],
  ["torch.IntStorage", "I32"],
  ["torch.ShortStorage", "I16"],
  ["torch.CharStorage", "I8"],
  ["torch.ByteStorage", "U8"],
  ["torch.BoolStorage", "BOOL"],
  ["torch.float16", "F16"],
  ["torch.float32", "F32"],
  ["torch.bfloat16", "BF16"],
  // Untyped storages count bytes; a tensor on one reads as bytes.
  ["torch.storage.UntypedStorage", "U8"],
  ["torch.UntypedStorage", "U8"],
]);

/** One storage a persistent id names: the member `<archive>/data/<key>`. */
class StorageRef {
  constructor(readonly key: string, readonly dtype: SafetensorsDtype, readonly numel: number) {}
}

/** A tensor as the pickle describes it: a strided view of a storage. */
class TensorView {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

/** A count: a whole number from 0 to 2^53. */
function isCount(value: PickleValue): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** A tuple of counts (a shape or a stride). */
function counts(value: PickleValue): number[] | null {
  if (!Array.isArray(value) || !value.every(isCount)) return null;
  return value as number[];
}

/**
 * Parse a checkpoint's `data.pkl` into its tensors as views, executing nothing. A
 * `{"state_dict": {...}}` wrapper is unwrapped; entries that are not tensors are skipped.
 *
 * @param bytes The pickle.
 * @param file The checkpoint's path, named in every error.
 * @returns The tensors by name, in pickle order.
 * @throws {FlashlmError} naming `file` for a refused opcode or global (with its byte offset),
 *   a malformed pickle, or one that holds no tensors.
 */
function parseStateDict(bytes: Uint8Array, file: string): Map<string, TensorView> {
  const label = "data.pkl";
  const bad = (what: string, at: number): FlashlmError =>
    new FlashlmError(`${label}: ${what} at byte ${at}`, { file, kind: "format" });
  const storages = new Map<string, StorageRef>();

  const rebuildTensor: PickleCallable = (args, at) => {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    const [storage, offset, size, stride] = args;
    const shape = counts(size);
    const strides = counts(stride);
    if (
      args.length < 6 || args.length > 7 || !(storage instanceof StorageRef) ||
      !isCount(offset) || shape === null || strides === null || shape.length !== strides.length
    ) {
      throw bad(`_rebuild_tensor_v2 with arguments ${showValue(args)}`, at);
    }
    return new TensorView(storage, offset, shape, strides);
  };
  const rebuildParameter: PickleCallable = (args, at) => {
    if (args.length !== 3 || !(args[0] instanceof TensorView)) {
      throw bad(`_rebuild_parameter with arguments ${showValue(args)}`, at);
    }
    return args[0];
  };
  const orderedDict: PickleCallable = (args, at) => {
    if (args.length !== 0) throw bad(`OrderedDict with arguments ${showValue(args)}`, at);
    return new Map();
  };
  const globals = new Map<string, PickleCallable | null>([
    ["collections.OrderedDict", orderedDict],
    ["torch._utils._rebuild_tensor_v2", rebuildTensor],
    ["torch._utils._rebuild_parameter", rebuildParameter],
    ...[...STORAGE_DTYPES.keys()].map((name): [string, null] => [name, null]),
  ]);

  const persistentLoad = (pid: PickleValue, at: number): PickleValue => {
    // ('storage', storage type, key, location, numel)
    if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== "storage") {
      throw bad(
        `persistent id ${showValue(pid)} is not ('storage', type, key, location, numel)`,
        at,
      );
    }
    const [, type, key, , numel] = pid;
    const dtype = type instanceof PickleGlobal ? STORAGE_DTYPES.get(type.qualifiedName) : undefined;
    if (dtype === undefined || typeof key !== "string" || !isCount(numel)) {
      throw bad(
        `persistent id ${showValue(pid)} is not ('storage', type, key, location, numel)`,
        at,
      );
    }
    const known = storages.get(key);
    if (known !== undefined && (known.dtype !== dtype || known.numel !== numel)) {
      throw bad(`storage ${showValue(key)} is named with two types or sizes`, at);
    }
    const ref = known ?? new StorageRef(key, dtype, numel);
    storages.set(key, ref);
    return ref;
  };

  let root = unpickle(bytes, { globals, persistentLoad, file, label });
  if (root instanceof Map && root.get("state_dict") instanceof Map) root = root.get("state_dict")!;
  if (!(root instanceof Map)) {
    throw new FlashlmError(`${label} holds a ${typeof root}, not a state dict`, { file });
  }
  const tensors = new Map<string, TensorView>();
  for (const [name, value] of root) {
    if (typeof name === "string" && value instanceof TensorView) tensors.set(name, value);
  }
  if (tensors.size === 0) throw new FlashlmError(`${label} holds no tensors`, { file });
  return tensors;
}

// ---------------------------------------------------------------------------
// One file

/** A tensor located in its file: its info, and how its elements are laid out there. */
interface Located {
  info: TensorInfo;
  /** Strides in elements (row-major strides when `contiguous`). */
  stride: number[];
  contiguous: boolean;
}

/** The largest data.pkl read (a state dict's takes about 120 bytes per tensor). */
const MAX_PICKLE_BYTES = 256 << 20;

/** Read and check one torch.save file: its directory, its pickle and every tensor's place. */
async function openTorchFile(path: string): Promise<Map<string, Located>> {
  await checkSignature(path);
  const zip = await readZipDirectory(path);
  const pickles = [...zip.members.values()].filter((m) => /^[^/]+\/data\.pkl$/.test(m.name));
  if (pickles.length !== 1) {
    throw new FlashlmError(
      `not a torch.save checkpoint: ${pickles.length} members named <archive>/data.pkl`,
      { file: path, kind: "format" },
    );
  }
  const pickle = pickles[0];
  const prefix = pickle.name.slice(0, -"data.pkl".length);
  if (pickle.size > MAX_PICKLE_BYTES) {
    throw new FlashlmError(`${pickle.name} is ${pickle.size} bytes, too large for a state dict`, {
      file: path,
    });
  }
  const byteorder = zip.members.get(`${prefix}byteorder`);
  if (byteorder !== undefined) {
    const order = byteorder.size <= 16
      ? new TextDecoder().decode(await readMember(path, byteorder)).trim()
      : "?";
    if (order !== "little") {
      throw new FlashlmError(`byte order ${showValue(order)} is not supported (only little)`, {
        file: path,
        kind: "config",
      });
    }
  }
  const views = parseStateDict(await readMember(path, pickle), path);
  const located = new Map<string, Located>();
  for (const [name, view] of views) {
    const member = zip.members.get(`${prefix}data/${view.storage.key}`);
    located.set(name, locate(path, name, view, member));
  }
  return located;
}

/** Refuse, with a clear message, a file that is not a zip (e.g. the pre-1.6 torch format). */
async function checkSignature(path: string): Promise<void> {
  let head: Uint8Array;
  try {
    const file = await Deno.open(path, { read: true });
    try {
      head = new Uint8Array(Math.min(4, (await file.stat()).size));
      await readExactly(file, head, 0, path);
    } finally {
      file.close();
    }
  } catch (err) {
    if (err instanceof FlashlmError) throw err;
    throw ioError("cannot open", path, err);
  }
  if (head.length === 4 && head[0] === 0x50 && head[1] === 0x4b) return; // "PK"
  if (head[0] === 0x80) {
    throw new FlashlmError(
      "a legacy (pre-zip) torch.save file; re-save it with torch >= 1.6 or as safetensors",
      { file: path, kind: "config" },
    );
  }
  throw new FlashlmError("not a PyTorch checkpoint: it is not a zip file", { file: path });
}

async function readMember(path: string, member: ZipMember): Promise<Uint8Array> {
  return await readRange(path, member.offset, member.size);
}

/** The most read from a file in one call. */
const READ_CHUNK_BYTES = 1 << 20;

/**
 * Read `length` bytes of `path` at `offset` into a new array, in pieces of at most 1 MiB (the
 * llama2.c reader uses it too).
 *
 * @throws {FlashlmError} naming `path` when it cannot be opened or is shorter than asked.
 */
export async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw ioError("cannot open", path, err);
  }
  try {
    // In pieces: the runtime may stage each read in a buffer of its own, as large as the read.
    for (let done = 0; done < length; done += READ_CHUNK_BYTES) {
      const piece = bytes.subarray(done, Math.min(length, done + READ_CHUNK_BYTES));
      await readExactly(file, piece, offset + done, path);
    }
  } finally {
    file.close();
  }
  return bytes;
}

/** Check a view against its storage member and work out where its bytes are. */
function locate(
  path: string,
  name: string,
  view: TensorView,
  member: ZipMember | undefined,
): Located {
  const fail = (what: string, kind: "format" | "config" = "format"): FlashlmError =>
    new FlashlmError(`tensor ${showValue(name)}: ${what}`, { file: path, kind });
  const { storage, shape, stride } = view;
  const size = safetensorsDtypeBytes(storage.dtype);
  if (member === undefined) throw fail(`its storage ${showValue(storage.key)} is not in the file`);
  if (storage.numel * size !== member.size) {
    throw fail(
      `storage ${showValue(storage.key)} should hold ${storage.numel} elements of ${size} bytes ` +
        `but its member has ${member.size} bytes`,
    );
  }
  let numel = 1;
  let last = view.offset; // the last element's index in the storage
  for (let d = 0; d < shape.length; d++) {
    numel *= shape[d];
    if (shape[d] > 0) last += (shape[d] - 1) * stride[d];
  }
  if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) {
    throw fail(`shape [${shape}] with strides [${stride}] is too large`);
  }
  if (numel > 0 && last >= storage.numel) {
    throw fail(
      `shape [${shape}], strides [${stride}] at offset ${view.offset} run past its storage of ${storage.numel} elements`,
    );
  }
  // Dense layouts only: the dimensions (of length > 1), ordered by stride, must be row-major.
  const order = shape.map((_, d) => d).filter((d) => shape[d] > 1).sort((a, b) =>
    stride[b] - stride[a]
  );
  let expected = 1;
  for (let k = order.length - 1; k >= 0; k--) {
    if (stride[order[k]] !== expected) {
      throw fail(
        `strides [${stride}] for shape [${shape}] are neither row-major nor a transposition; ` +
          "flashlm reads dense tensors only",
        "config",
      );
    }
    expected *= shape[order[k]];
  }
  const contiguous = order.every((d, k) => k === 0 || order[k - 1] < d);
  const begin = member.offset + view.offset * size;
  const info: TensorInfo = {
    name,
    dtype: storage.dtype,
    shape: [...shape],
    begin,
    end: begin + numel * size,
  };
  return { info, stride, contiguous };
}

/** Gather a dense, permuted view (`span` holds its elements from the lowest) into row-major. */
function toRowMajor(span: Uint8Array, shape: number[], stride: number[], size: number): Uint8Array {
  const out = new Uint8Array(span.length);
  const index = new Array<number>(shape.length).fill(0);
  let source = 0; // element index in `span`
  const numel = span.length / size;
  for (let i = 0; i < numel; i++) {
    out.set(span.subarray(source * size, source * size + size), i * size);
    // Advance the row-major counter, last dimension fastest.
    for (let d = shape.length - 1; d >= 0; d--) {
      index[d]++;
      source += stride[d];
      if (index[d] < shape[d]) break;
      source -= stride[d] * shape[d];
      index[d] = 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Checkpoints (one file or shards)

/**
 * A model's weights saved by PyTorch: `pytorch_model.bin`, or shards listed by
 * `pytorch_model.bin.index.json`. The same surface as the safetensors `Checkpoint`.
 *
 * @example A pre-zip torch.save file is refused with a clear message
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TorchCheckpoint } from "./torch_checkpoint.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeFile(`${dir}/pytorch_model.bin`, new Uint8Array([0x80, 2, 0x8a, 10, 0x6c]));
 * await assert.rejects(TorchCheckpoint.open(dir), /pytorch_model\.bin: a legacy \(pre-zip\)/);
 * await assert.rejects(TorchCheckpoint.open(`${dir}/absent`), /absent: cannot open checkpoint/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class TorchCheckpoint implements TensorFile {
  /** The path it was opened from (directory, .bin file or index file). */
  readonly path: string;
  /** For each tensor name, its file and place in it. */
  readonly #where: Map<string, { file: string; located: Located }>;

  private constructor(path: string, where: Map<string, { file: string; located: Located }>) {
    this.path = path;
    this.#where = where;
  }

  /**
   * Open a checkpoint: a directory with `pytorch_model.bin.index.json` (sharded, preferred) or
   * `pytorch_model.bin`, or a direct path to a torch.save file or an `.index.json`. Every file's
   * directory and pickle are read and checked; for shards, each must hold the tensors the index
   * assigns to it.
   *
   * @param pathOrDir A directory or a file path.
   * @returns The opened checkpoint.
   * @throws {FlashlmError} naming the file that is missing or bad.
   */
  static async open(pathOrDir: string): Promise<TorchCheckpoint> {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.stat(pathOrDir);
    } catch (err) {
      throw ioError("cannot open checkpoint", pathOrDir, err);
    }
    if (stat.isFile) {
      if (pathOrDir.endsWith(".json")) {
        return new TorchCheckpoint(pathOrDir, await openIndex(pathOrDir));
      }
      return new TorchCheckpoint(pathOrDir, single(pathOrDir, await openTorchFile(pathOrDir)));
    }
    const index = join(pathOrDir, "pytorch_model.bin.index.json");
    if (await exists(index)) return new TorchCheckpoint(pathOrDir, await openIndex(index));
    const file = join(pathOrDir, "pytorch_model.bin");
    if (await exists(file)) {
      return new TorchCheckpoint(pathOrDir, single(file, await openTorchFile(file)));
    }
    throw new FlashlmError(
      "no pytorch_model.bin or pytorch_model.bin.index.json in this directory",
      {
        file: pathOrDir,
        kind: "io",
      },
    );
  }

  /** All tensor names, in file (then pickle) order. */
  names(): string[] {
    return [...this.#where.keys()];
  }

  /** Whether the checkpoint holds a tensor called `name`. */
  has(name: string): boolean {
    return this.#where.has(name);
  }

  /**
   * The dtype, shape and byte span of tensor `name` in its own file ({@linkcode fileOf}).
   * Throws a FlashlmError naming the checkpoint and the tensor if absent.
   */
  info(name: string): TensorInfo {
    return this.#get(name).located.info;
  }

  /** The path of the file (shard) that holds tensor `name`. */
  fileOf(name: string): string {
    return this.#get(name).file;
  }

  /** Read tensor `name` as float32, row-major (F32, F16 and BF16 tensors). */
  async readF32(name: string): Promise<Float32Array> {
    const { file, located } = this.#get(name);
    bytesToF32(new Uint8Array(0), located.info, file); // refuses other dtypes before reading
    return bytesToF32(await this.readRaw(name), located.info, file);
  }

  /** Read tensor `name`'s elements as raw little-endian bytes, row-major, in its own dtype. */
  async readRaw(name: string): Promise<Uint8Array> {
    const { file, located } = this.#get(name);
    const { info, stride, contiguous } = located;
    const span = await readRange(file, info.begin, info.end - info.begin);
    if (contiguous) return span;
    return toRowMajor(span, info.shape, stride, safetensorsDtypeBytes(info.dtype));
  }

  #get(name: string): { file: string; located: Located } {
    const where = this.#where.get(name);
    if (where === undefined) {
      throw new FlashlmError(`checkpoint has no tensor named "${name}"`, {
        file: this.path,
        kind: "format",
      });
    }
    return where;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw ioError("cannot stat", path, err);
  }
}

function single(
  file: string,
  located: Map<string, Located>,
): Map<string, { file: string; located: Located }> {
  const where = new Map<string, { file: string; located: Located }>();
  for (const [name, place] of located) where.set(name, { file, located: place });
  return where;
}

/** Read `pytorch_model.bin.index.json` and every shard it names. */
async function openIndex(
  indexPath: string,
): Promise<Map<string, { file: string; located: Located }>> {
  let text: string;
  try {
    text = await Deno.readTextFile(indexPath);
  } catch (err) {
    throw ioError("cannot read checkpoint index", indexPath, err);
  }
  const shardOf = parseCheckpointIndex(text, indexPath);
  const shards = new Map<string, Map<string, Located>>();
  for (const shard of new Set(shardOf.values())) {
    const shardPath = join(dirname(indexPath), shard);
    if (!(await exists(shardPath))) {
      throw new FlashlmError(`shard ${showValue(shard)} listed in weight_map does not exist`, {
        file: indexPath,
      });
    }
    shards.set(shard, await openTorchFile(shardPath));
  }
  const where = new Map<string, { file: string; located: Located }>();
  for (const [name, shard] of shardOf) {
    const located = shards.get(shard)!.get(name);
    if (located === undefined) {
      throw new FlashlmError(
        `weight_map puts tensor ${showValue(name)} in shard ${
          showValue(shard)
        }, which does not contain it`,
        { file: indexPath },
      );
    }
    where.set(name, { file: join(dirname(indexPath), shard), located });
  }
  return where;
}
