/**
 * Fuzzed PyTorch checkpoints: mutations of `data.pkl` (re-packed into a valid zip) and of the
 * zip itself (its central directory, end records and local headers). Each case writes the file,
 * opens it with `TorchCheckpoint` and reads every float tensor; it must end in success or a
 * one-line FlashlmError naming the file, within the hang bound and the allocation bound of
 * tests/fuzz_helpers.ts. `$FLASHLM_FUZZ_ITERS` cases per kind (default {@linkcode DEFAULT_ITERS}
 * for CI; the full run is `FLASHLM_FUZZ_ITERS=10000 deno test -A tests/torch_fuzz_test.ts`).
 */

import { strict as assert } from "node:assert";
import { TorchCheckpoint } from "../io/torch_checkpoint.ts";
import { readZipDirectory } from "../io/zip.ts";
import {
  chance,
  formatFuzzReport,
  fuzzIterations,
  type FuzzReport,
  randomInt,
  runFuzz,
} from "./fuzz_helpers.ts";
import { type LengthField, mutateBytes } from "./fuzz_mutators.ts";
import { statePickle, type StorageSpec, type ViewSpec, writeTorchFile } from "./torch_writer.ts";

/** Cases per kind when `$FLASHLM_FUZZ_ITERS` is not set (CI). */
const DEFAULT_ITERS = 300;
const ITERS = fuzzIterations(DEFAULT_ITERS);

function check(report: FuzzReport): void {
  console.log(formatFuzzReport(report));
  assert.deepEqual(report.failures, [], `${report.format}: ${report.failures.length} failed cases`);
  assert.equal(report.cases, report.accepted + report.rejected);
  assert.ok(report.rejected > 0, "the mutations reach the reader's checks");
  assert.ok(report.accepted > 0, "some mutations leave a readable checkpoint");
}

// ---------------------------------------------------------------------------
// The valid input: every feature the reader has

const STORAGES: StorageSpec[] = [
  { key: "0", dtype: "F16", data: Float32Array.from({ length: 24 }, (_, i) => i / 4) },
  { key: "1", dtype: "F32", data: Float32Array.from({ length: 6 }, (_, i) => -i) },
  { key: "2", dtype: "BF16", data: Float32Array.from({ length: 8 }, (_, i) => i * 2) },
];
const VIEWS: ViewSpec[] = [
  {
    name: "model.decoder.embed_tokens.weight",
    storage: "0",
    offset: 0,
    shape: [4, 3],
    stride: [3, 1],
  },
  { name: "lm_head.weight", storage: "0", offset: 0, shape: [4, 3], stride: [3, 1] },
  { name: "offset_view", storage: "0", offset: 12, shape: [12], stride: [1], parameter: true },
  { name: "transposed", storage: "1", offset: 0, shape: [2, 3], stride: [1, 2] },
  { name: "bf16", storage: "2", offset: 0, shape: [2, 2, 2], stride: [4, 2, 1] },
];
const OPTIONS = { orderedDict: true, archive: "pytorch_model" };

/** Open `path` and read every float tensor, checking each length against its shape. */
async function readEverything(path: string): Promise<void> {
  const ckpt = await TorchCheckpoint.open(path);
  for (const name of ckpt.names()) {
    const info = ckpt.info(name);
    if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") continue;
    const values = await ckpt.readF32(name);
    if (values.length !== info.shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`${name}: ${values.length} values for shape [${info.shape}]`);
    }
  }
}

/** Offsets of 4-byte length fields in a pickle: after BINUNICODE, BININT, LONG_BINPUT. */
function pickleLengthFields(pickle: Uint8Array): LengthField[] {
  const fields: LengthField[] = [];
  for (let i = 0; i + 5 <= pickle.length; i++) {
    if (pickle[i] === 0x58 || pickle[i] === 0x4a) fields.push({ offset: i + 1, size: 4 });
  }
  return fields;
}

// ---------------------------------------------------------------------------
// Tests

Deno.test("fuzzed data.pkl files end in success or a one-line FlashlmError naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-fuzz-torch-" });
  const path = `${dir}/pytorch_model.bin`;
  const pickle = statePickle(STORAGES, VIEWS, OPTIONS);
  const lengthFields = pickleLengthFields(pickle);
  try {
    await writeTorchFile(path, STORAGES, VIEWS, OPTIONS);
    await readEverything(path); // the base is valid
    const report = await runFuzz("data.pkl", ITERS, 211, async (rng) => {
      const m = mutateBytes(pickle, rng, { lengthFields });
      await writeTorchFile(path, STORAGES, VIEWS, { ...OPTIONS, pickle: m.value });
      const { size } = await Deno.stat(path);
      return { how: m.how, inputBytes: size, file: path, run: () => readEverything(path) };
    });
    check(report);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fuzzed zip directories end in success or a one-line FlashlmError naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-fuzz-zip-" });
  const path = `${dir}/pytorch_model.bin`;
  try {
    const bases: Uint8Array[] = [];
    for (const zip64 of [false, true]) {
      await writeTorchFile(path, STORAGES, VIEWS, { ...OPTIONS, zip64 });
      bases.push(await Deno.readFile(path));
    }
    // Where the directory is, and the size and offset fields of its entries and end record.
    const layouts: { directory: number; fields: LengthField[] }[] = [];
    for (const [i, bytes] of bases.entries()) {
      await Deno.writeFile(path, bytes);
      const zip = await readZipDirectory(path);
      const view = new DataView(bytes.buffer);
      let eocd = bytes.length - 22;
      while (view.getUint32(eocd, true) !== 0x06054b50) eocd--;
      const directory = i === 0
        ? view.getUint32(eocd + 16, true)
        : Number(view.getBigUint64(Number(view.getBigUint64(eocd - 12, true)) + 48, true));
      const fields: LengthField[] = [
        { offset: eocd + 12, size: 4 },
        { offset: eocd + 16, size: 4 },
      ];
      for (let p = directory; p + 46 <= eocd; p++) {
        if (view.getUint32(p, true) !== 0x02014b50) continue;
        fields.push({ offset: p + 20, size: 4 }, { offset: p + 24, size: 4 });
        fields.push({ offset: p + 42, size: 4 });
      }
      assert.equal(zip.members.size, 2 + STORAGES.length + 1);
      layouts.push({ directory, fields });
    }
    const report = await runFuzz("zip directory", ITERS, 307, async (rng) => {
      const k = randomInt(rng, bases.length);
      const base = bases[k];
      const { directory, fields } = layouts[k];
      const m = chance(rng, 0.8)
        ? mutateBytes(base, rng, { lengthFields: fields, focus: [directory, base.length] })
        : mutateBytes(base, rng, { lengthFields: fields });
      await Deno.writeFile(path, m.value);
      return {
        how: `${k === 1 ? "ZIP64 " : ""}${m.how}`,
        inputBytes: m.value.length,
        file: path,
        run: () => readEverything(path),
      };
    });
    check(report);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
