/**
 * A small writer of PyTorch checkpoints in `torch.save`'s format, for the tests (no Python):
 * a zip of stored members (data aligned to 64 bytes, as torch does; ZIP64 records when a size
 * or offset passes 4 GiB) holding `<archive>/data.pkl`, a protocol-2 pickle of the state dict
 * with torch's opcodes (memoized globals, `_rebuild_tensor_v2`, persistent storage ids), and
 * one member `<archive>/data/<key>` per storage.
 *
 * Tensors are views of storages: several may share one (offset views, a tied lm_head), and a
 * view may be transposed (its strides column-major).
 */

import { crc32 } from "../io/crc32.ts";
import { writeAll } from "../io/atomic_write.ts";
import { f32ToBf16, f32ToF16 } from "../kernels/f16.ts";
import { Checkpoint } from "../io/safetensors_read.ts";

// ---------------------------------------------------------------------------
// What is written

/** Element types the writer stores. */
export type TorchDtype = "F16" | "F32" | "BF16";

/** One storage: its key (the member `data/<key>`) and its elements. */
export interface StorageSpec {
  key: string;
  dtype: TorchDtype;
  data: Float32Array;
  /** Write a storage of this many zero bytes as a hole instead (a sparse file); `data` is ignored. */
  sparseBytes?: number;
}

/** One tensor: a view of a storage. */
export interface ViewSpec {
  name: string;
  storage: string;
  offset: number;
  shape: number[];
  stride: number[];
  /** Wrap it as a `torch.nn.Parameter` (`_rebuild_parameter`). */
  parameter?: boolean;
}

/** Options of {@linkcode writeTorchFile}. */
export interface TorchFileOptions {
  /** The archive's folder inside the zip. Default `"archive"`. */
  archive?: string;
  /** Save `{"state_dict": <the dict>}` instead of the dict. */
  wrapStateDict?: boolean;
  /** The dict is a `collections.OrderedDict` with a `_metadata` attribute (BUILD). */
  orderedDict?: boolean;
  /** Replace the whole pickle by these bytes (for crafted pickles). */
  pickle?: Uint8Array;
  /** Write ZIP64 records even when nothing needs them. */
  zip64?: boolean;
  /** Name storage types by dtype (`torch.float16`), as newer torch may, not `torch.HalfStorage`. */
  dtypeGlobals?: boolean;
}

const ELEMENT_BYTES: Record<TorchDtype, number> = { F16: 2, F32: 4, BF16: 2 };
const STORAGE_TYPE: Record<TorchDtype, string> = {
  F16: "HalfStorage",
  F32: "FloatStorage",
  BF16: "BFloat16Storage",
};
const DTYPE_NAME: Record<TorchDtype, string> = { F16: "float16", F32: "float32", BF16: "bfloat16" };

/** Row-major strides of `shape`. */
export function rowMajor(shape: number[]): number[] {
  const stride = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) stride[d] = stride[d + 1] * shape[d + 1];
  return stride;
}

function encodeElements(dtype: TorchDtype, data: Float32Array): Uint8Array {
  if (dtype === "F32") return new Uint8Array(data.slice().buffer);
  const halves = new Uint16Array(data.length);
  if (dtype === "F16") f32ToF16(data, halves);
  else f32ToBf16(data, halves);
  return new Uint8Array(halves.buffer);
}

// ---------------------------------------------------------------------------
// The pickle

/** Builds protocol-2 pickle bytes, memoizing globals as torch's pickler does. */
class PickleBuilder {
  #bytes: number[] = [];
  #memo = new Map<string, number>();

  op(...bytes: number[]): this {
    this.#bytes.push(...bytes);
    return this;
  }

  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n); // BININT1
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 255, n >> 8); // BININT2
    if (n >= -(2 ** 31) && n < 2 ** 31) {
      const b = new Uint8Array(new Int32Array([n]).buffer);
      return this.op(0x4a, ...b); // BININT
    }
    let v = BigInt(n);
    const out: number[] = [];
    while (v !== 0n && v !== -1n) {
      out.push(Number(v & 255n));
      v >>= 8n;
    }
    if ((out[out.length - 1] & 0x80) !== (n < 0 ? 0x80 : 0)) out.push(n < 0 ? 255 : 0);
    return this.op(0x8a, out.length, ...out); // LONG1
  }

  str(s: string): this {
    const b = new TextEncoder().encode(s);
    const n = new Uint8Array(new Uint32Array([b.length]).buffer);
    return this.op(0x58, ...n, ...b); // BINUNICODE
  }

  global(module: string, name: string): this {
    const known = this.#memo.get(`${module}.${name}`);
    if (known !== undefined) return this.op(0x68, known); // BINGET
    this.op(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`)); // GLOBAL
    const index = this.#memo.size;
    this.#memo.set(`${module}.${name}`, index);
    return this.op(0x71, index); // BINPUT
  }

  tuple(items: number[]): this {
    this.op(0x28); // MARK
    for (const n of items) this.int(n);
    return this.op(0x74); // TUPLE
  }

  emptyOrderedDict(): this {
    return this.global("collections", "OrderedDict").op(0x29, 0x52); // EMPTY_TUPLE, REDUCE
  }

  bytes(): Uint8Array {
    return new Uint8Array(this.#bytes);
  }
}

/** The pickle of a state dict of `views` over `storages`, as torch.save writes it. */
export function statePickle(
  storages: StorageSpec[],
  views: ViewSpec[],
  options: TorchFileOptions = {},
): Uint8Array {
  const byKey = new Map(storages.map((s) => [s.key, s]));
  const p = new PickleBuilder().op(0x80, 2); // PROTO 2
  if (options.wrapStateDict) p.op(0x7d).str("state_dict"); // EMPTY_DICT, key
  if (options.orderedDict) p.emptyOrderedDict();
  else p.op(0x7d); // EMPTY_DICT
  p.op(0x28); // MARK for SETITEMS
  for (const view of views) {
    const storage = byKey.get(view.storage)!;
    p.str(view.name);
    if (view.parameter) p.global("torch._utils", "_rebuild_parameter").op(0x28);
    p.global("torch._utils", "_rebuild_tensor_v2").op(0x28); // MARK for the arguments
    const type = (options.dtypeGlobals ? DTYPE_NAME : STORAGE_TYPE)[storage.dtype];
    p.op(0x28).str("storage").global("torch", type).str(storage.key)
      .str("cpu");
    const numel = storage.sparseBytes !== undefined
      ? storage.sparseBytes / ELEMENT_BYTES[storage.dtype]
      : storage.data.length;
    p.int(numel).op(0x74, 0x51); // TUPLE, BINPERSID
    p.int(view.offset).tuple(view.shape).tuple(view.stride).op(0x89); // NEWFALSE
    p.emptyOrderedDict().op(0x74, 0x52); // TUPLE, REDUCE
    if (view.parameter) p.op(0x89).emptyOrderedDict().op(0x74, 0x52);
  }
  p.op(0x75); // SETITEMS
  if (options.orderedDict) {
    p.op(0x7d).str("_metadata").emptyOrderedDict().op(0x73, 0x62); // {"_metadata": ...}, BUILD
  }
  if (options.wrapStateDict) p.op(0x73); // SETITEM
  return p.op(0x2e).bytes(); // STOP
}

// ---------------------------------------------------------------------------
// The zip

/** One member to write: its bytes, or a hole of `sparseBytes` zeros. */
interface MemberSpec {
  name: string;
  data?: Uint8Array;
  sparseBytes?: number;
}

const u16 = (v: DataView, at: number, n: number): void => v.setUint16(at, n, true);
const u32 = (v: DataView, at: number, n: number): void => v.setUint32(at, n, true);
const u64 = (v: DataView, at: number, n: number): void => v.setBigUint64(at, BigInt(n), true);

/** Write `members` as a zip of stored members, data 64-byte aligned, ZIP64 where needed. */
export async function writeZip(
  path: string,
  members: MemberSpec[],
  options: { zip64?: boolean } = {},
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const enc = new TextEncoder();
  const central: Uint8Array[] = [];
  let position = 0;
  let needZip64 = options.zip64 ?? false;
  try {
    for (const member of members) {
      const name = enc.encode(member.name);
      const size = member.data?.length ?? member.sparseBytes ?? 0;
      const crc = member.data ? crc32(member.data) : 0; // a hole's CRC is not computed
      const big = size >= 0xffffffff || position >= 0xffffffff || (options.zip64 ?? false);
      needZip64 ||= big;
      // Local header; its extra field pads the data to a multiple of 64 (torch's "FB" field).
      const fixed = 30 + name.length + (big ? 20 : 0);
      const pad = (64 - ((position + fixed + 4) % 64)) % 64;
      const local = new Uint8Array(fixed + 4 + pad);
      const lv = new DataView(local.buffer);
      u32(lv, 0, 0x04034b50);
      u16(lv, 4, big ? 45 : 20);
      u32(lv, 14, crc);
      u32(lv, 18, big ? 0xffffffff : size);
      u32(lv, 22, big ? 0xffffffff : size);
      u16(lv, 26, name.length);
      u16(lv, 28, local.length - 30 - name.length);
      local.set(name, 30);
      let e = 30 + name.length;
      if (big) {
        u16(lv, e, 0x0001);
        u16(lv, e + 2, 16);
        u64(lv, e + 4, size);
        u64(lv, e + 12, size);
        e += 20;
      }
      u16(lv, e, 0x4246); // "FB"
      u16(lv, e + 2, pad);
      await writeAll(file, local);
      const offset = position;
      position += local.length;
      if (member.data) await writeAll(file, member.data);
      else await file.seek(size, Deno.SeekMode.Current);
      position += size;

      const c = new Uint8Array(46 + name.length + (big ? 28 : 0));
      const cv = new DataView(c.buffer);
      u32(cv, 0, 0x02014b50);
      u16(cv, 4, big ? 45 : 20);
      u16(cv, 6, big ? 45 : 20);
      u32(cv, 16, crc);
      u32(cv, 20, big ? 0xffffffff : size);
      u32(cv, 24, big ? 0xffffffff : size);
      u16(cv, 28, name.length);
      u16(cv, 30, big ? 28 : 0);
      u32(cv, 42, big ? 0xffffffff : offset);
      c.set(name, 46);
      if (big) {
        const x = 46 + name.length;
        u16(cv, x, 0x0001);
        u16(cv, x + 2, 24);
        u64(cv, x + 4, size);
        u64(cv, x + 12, size);
        u64(cv, x + 20, offset);
      }
      central.push(c);
    }
    const directoryOffset = position;
    let directorySize = 0;
    for (const c of central) {
      await writeAll(file, c);
      directorySize += c.length;
    }
    position += directorySize;
    needZip64 ||= directoryOffset >= 0xffffffff;
    if (needZip64) {
      const z = new Uint8Array(56 + 20);
      const zv = new DataView(z.buffer);
      u32(zv, 0, 0x06064b50);
      u64(zv, 4, 44);
      u16(zv, 12, 45);
      u16(zv, 14, 45);
      u64(zv, 24, members.length);
      u64(zv, 32, members.length);
      u64(zv, 40, directorySize);
      u64(zv, 48, directoryOffset);
      u32(zv, 56, 0x07064b50);
      u64(zv, 64, position);
      u32(zv, 72, 1);
      await writeAll(file, z);
    }
    const end = new Uint8Array(22);
    const ev = new DataView(end.buffer);
    u32(ev, 0, 0x06054b50);
    u16(ev, 8, needZip64 ? 0xffff : members.length);
    u16(ev, 10, needZip64 ? 0xffff : members.length);
    u32(ev, 12, needZip64 ? 0xffffffff : directorySize);
    u32(ev, 16, needZip64 ? 0xffffffff : directoryOffset);
    await writeAll(file, end);
  } finally {
    file.close();
  }
}

// ---------------------------------------------------------------------------
// Checkpoints

/**
 * Write a torch.save file of `views` over `storages` (members in key order, as torch does).
 */
export async function writeTorchFile(
  path: string,
  storages: StorageSpec[],
  views: ViewSpec[],
  options: TorchFileOptions = {},
): Promise<void> {
  const archive = options.archive ?? "archive";
  const members: MemberSpec[] = [
    { name: `${archive}/data.pkl`, data: options.pickle ?? statePickle(storages, views, options) },
    { name: `${archive}/byteorder`, data: new TextEncoder().encode("little") },
  ];
  for (const s of storages) {
    members.push(
      s.sparseBytes !== undefined
        ? { name: `${archive}/data/${s.key}`, sparseBytes: s.sparseBytes }
        : { name: `${archive}/data/${s.key}`, data: encodeElements(s.dtype, s.data) },
    );
  }
  members.push({ name: `${archive}/version`, data: new TextEncoder().encode("3\n") });
  await writeZip(path, members, { zip64: options.zip64 });
}

/** A tensor given by value: one storage of its own, row-major. */
export interface TensorSpec {
  name: string;
  dtype: TorchDtype;
  shape: number[];
  data: Float32Array;
}

/** Write `tensors` as a torch.save file, one storage each (keys "0", "1", ...). */
export async function writeTorchCheckpoint(
  path: string,
  tensors: TensorSpec[],
  options: TorchFileOptions = {},
): Promise<void> {
  const storages = tensors.map((t, i) => ({ key: String(i), dtype: t.dtype, data: t.data }));
  const views = tensors.map((t, i) => ({
    name: t.name,
    storage: String(i),
    offset: 0,
    shape: t.shape,
    stride: rowMajor(t.shape),
  }));
  await writeTorchFile(path, storages, views, options);
}

/**
 * Rewrite the safetensors model in `dir` as `pytorch_model.bin` (or, with `shards > 1`, as
 * `pytorch_model-0000k-of-0000n.bin` + `pytorch_model.bin.index.json`) in `dtype`, and delete
 * `model.safetensors`. With `tie`, `lm_head.weight` is a view of the embedding's storage.
 */
export async function safetensorsToTorch(
  dir: string,
  options: {
    dtype?: TorchDtype;
    shards?: number;
    tie?: boolean;
    /** A storage no tensor uses, written first in each file (e.g. a sparse hole). */
    padStorage?: StorageSpec;
  } & TorchFileOptions = {},
): Promise<string[]> {
  const ckpt = await Checkpoint.open(dir);
  const names = ckpt.names();
  const shards = options.shards ?? 1;
  // Shards of about equal bytes, tensors in order (as transformers' save_pretrained splits).
  const bytesOf = (name: string): number => ckpt.info(name).end - ckpt.info(name).begin;
  const total = names.reduce((a, n) => a + bytesOf(n), 0);
  const shardOf = new Map<string, number>();
  let seen = 0;
  for (const name of names) {
    shardOf.set(name, Math.min(shards - 1, Math.floor((seen * shards) / total)));
    seen += bytesOf(name);
  }
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < shards; k++) {
    const file = shards === 1
      ? "pytorch_model.bin"
      : `pytorch_model-${String(k + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.bin`;
    const storages: StorageSpec[] = options.padStorage ? [options.padStorage] : [];
    const views: ViewSpec[] = [];
    for (const name of names.filter((n) => shardOf.get(n) === k)) {
      const { shape } = ckpt.info(name);
      const key = String(storages.length);
      storages.push({ key, dtype: options.dtype ?? "F16", data: await ckpt.readF32(name) });
      views.push({ name, storage: key, offset: 0, shape, stride: rowMajor(shape) });
      weightMap[name] = file;
      if (options.tie && name.endsWith("embed_tokens.weight")) {
        views.push({
          name: "lm_head.weight",
          storage: key,
          offset: 0,
          shape,
          stride: rowMajor(shape),
        });
        weightMap["lm_head.weight"] = file;
      }
    }
    await writeTorchFile(`${dir}/${file}`, storages, views, options);
    files.push(file);
  }
  if (shards > 1) {
    await Deno.writeTextFile(
      `${dir}/pytorch_model.bin.index.json`,
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
  }
  await Deno.remove(`${dir}/model.safetensors`);
  return files;
}
