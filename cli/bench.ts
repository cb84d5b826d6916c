/**
 * `flashlm bench <model>`: naive, hybrid, page cache, DRAM and flashlm side by side
 * (tools/bench.ts); `flashlm bench io <file>`: the flash reader against fio
 * (tools/bench_io.ts). Two commands with their own options; cli.ts sends `bench io` to
 * {@linkcode runIo}.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { type CommandSpec, DEPTH_FLAG, info, THREADS_FLAG, usage } from "./common.ts";
import { parseBudget } from "../core/memory_sizes.ts";
import { FlashlmError } from "../io/errors.ts";
import { type BackendName, BACKENDS } from "../io/read_backends.ts";
import { BENCH_CONFIGS, type BenchConfigName } from "../tools/bench_configs.ts";
import { runBench } from "../tools/bench.ts";
import { benchIo } from "../tools/bench_io.ts";
import { parseByteSize } from "../tools/byte_size.ts";
import { machineThreads } from "../kernels/pool.ts";

/** Usage, summary, examples and flags of `bench <model>`. */
export const spec = {
  usage: "flashlm bench <model.flm> [options]",
  summary:
    "naive, hybrid, page cache, DRAM and flashlm side by side, each in its own process (the paper's Tables 2-3)",
  examples: [
    "flashlm bench tiny.flm --memory ffn:50% --tokens 16",
    "flashlm bench opt-6.7b.flm --memory 50% --tokens 4 --out /tmp/bench-6.7b",
  ],
  flags: {
    memory: {
      type: "string",
      help:
        "DRAM budget of hybrid, page-cache and flashlm: bytes (2GB), % of the model (50%), or ffn:<p>%",
      default: "50%",
    },
    tokens: {
      type: "integer",
      help: "tokens measured after the prompt",
      shownDefault: "16",
      min: 1,
    },
    rounds: {
      type: "integer",
      help: "run every configuration this many times, in turn, and report " +
        "each one's median run (the shared compute varies from process to process)",
      shownDefault: "1",
      min: 1,
      max: 20,
    },
    "prompt-file": {
      type: "string",
      help: "file whose text is the prompt",
      shownDefault: "a fixed sentence",
    },
    configs: {
      type: "string",
      help: `configurations, comma-separated (${BENCH_CONFIGS.map((c) => c.name).join(", ")})`,
      shownDefault: "all",
    },
    split: {
      type: "string",
      help: "the unbundled copy of the model to use",
      shownDefault: "made in the output directory",
    },
    friends: {
      type: "string",
      help: "bench <model>: its closest-friend copy (stats --friends --friend-hot include): " +
        "adds that row",
    },
    "friends-no-hot": {
      type: "string",
      help: "bench <model>: its closest-friend copy without hot neurons (stats --friends): " +
        "adds that row",
    },
    depth: DEPTH_FLAG,
    threads: { ...THREADS_FLAG, help: `bench <model>: ${THREADS_FLAG.help}` },
    predictor: {
      type: "string",
      help: "predictor of the sparse configurations (auto: the file's, else the oracle)",
      shownDefault: "auto",
      choices: ["auto", "file", "oracle"],
    },
    out: {
      type: "string",
      help: "output directory: bench.json, bench.txt and bench.svg",
      shownDefault: "<model's dir>/bench-<model name>",
    },
  },
} as const satisfies CommandSpec;

/** Usage, summary, examples and flags of `bench io`. */
export const ioSpec = {
  usage: "flashlm bench io <file> [options]",
  summary: "the flash reader's backends against fio: MB/s by chunk size and reads in flight, " +
    "cold page cache",
  examples: [
    "flashlm bench io /tmp/io.bin --quick",
    "flashlm bench io /tmp/flashlm-bench/data.bin --out /tmp/flashlm-bench/results",
    "flashlm bench io /tmp/io.bin --chunks 32KiB,128KiB --depths 16,32,64",
  ],
  flags: {
    size: { type: "string", help: "size of the file to create when absent", shownDefault: "2GiB" },
    quick: {
      type: "boolean",
      help: "small sweep on a small file (64MiB, 4K/64K chunks, depth 1/8, 0.2 s)",
    },
    backend: {
      type: "string",
      help: `reader backends, comma-separated (${BACKENDS.join(", ")})`,
      shownDefault: "all available",
    },
    chunks: { type: "string", help: "chunk sizes, comma-separated", shownDefault: "4KiB..1MiB" },
    depths: { type: "string", help: "reads in flight, comma-separated", shownDefault: "1,2,..,64" },
    seconds: { type: "number", help: "seconds per point", shownDefault: "1", min: 0.01 },
    repeat: {
      type: "integer",
      help: "measure each point this many times (sources take turns) and keep the best",
      shownDefault: "1",
      min: 1,
      max: 100,
    },
    fio: {
      type: "boolean",
      help: "also run fio when installed (--fio=false: skip)",
      default: true,
    },
    bun: {
      type: "string",
      help: 'command that runs Bun, to also measure node-fs under Bun ("bun"; none: skip)',
      shownDefault: "bun when on the PATH",
    },
    cold: {
      type: "string",
      help: "how to empty the page cache before each point",
      shownDefault: "auto",
      choices: ["auto", "fadvise", "drop-caches", "none"],
    },
    out: {
      type: "string",
      help: "output directory: bench-io.json, bench-io.txt and SVG charts",
      shownDefault: "<file's dir>/bench-io",
    },
  },
} as const satisfies CommandSpec;

/** `bench <model>`. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  await runModelBench(positional, flags);
}

/** `bench io <file>`. */
export async function runIo(
  positional: string[],
  flags: ParsedFlags<typeof ioSpec.flags>,
): Promise<void> {
  await runIoBench(positional, flags);
}

// ---------------------------------------------------------------------------
// bench io

async function runIoBench(
  positional: string[],
  flags: ParsedFlags<typeof ioSpec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("bench io needs one <file>");
  const file = positional[0];
  const quick = flags.quick;
  const list = (text: string | undefined, parse: (s: string) => number): number[] | undefined =>
    text === undefined ? undefined : text.split(",").map(parse);
  const depth = (s: string): number => {
    const d = Number(s);
    if (!Number.isInteger(d) || d < 1 || d > 1024) throw usage(`bad depth "${s}" (1..1024)`);
    return d;
  };
  const backends = flags.backend?.split(",").map(backendName);
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) || "/" : ".";
  const out = flags.out ?? `${dir}/bench-io`;
  await benchIo({
    file,
    size: parseByteSize(flags.size ?? (quick ? "64MiB" : "2GiB")),
    chunkSizes: list(flags.chunks, parseByteSize) ?? (quick ? [4096, 65536] : undefined),
    depths: list(flags.depths, depth) ?? (quick ? [1, 8] : undefined),
    backends,
    fio: flags.fio,
    seconds: flags.seconds ?? (quick ? 0.2 : 1),
    repeat: flags.repeat,
    cold: flags.cold,
    bun: flags.bun === undefined
      ? "auto"
      : flags.bun === "none"
      ? undefined
      : flags.bun.split(" ").filter((w) => w),
    outDir: out,
    onLine: (line) => console.log(line),
  });
  console.log(`wrote ${out}/bench-io.json, bench-io.txt and one SVG chart per source`);
}

/** A `--backend` word, checked against the reader backends. */
function backendName(word: string): BackendName {
  const backend = BACKENDS.find((b) => b === word);
  if (backend === undefined) {
    throw usage(`unknown backend "${word}" (choose from ${BACKENDS.join(", ")})`);
  }
  return backend;
}

// ---------------------------------------------------------------------------
// bench <model>

/** The prompt of `bench <model>` when no --prompt-file is given. */
const BENCH_PROMPT =
  "The history of the city begins in the early middle ages, when a small settlement grew";

async function runModelBench(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("bench needs one <model.flm> (or: bench io <file>)");
  const model = positional[0];
  const configs = flags.configs?.split(",").map(configName);
  const promptFile = flags["prompt-file"];
  const prompt = promptFile === undefined
    ? BENCH_PROMPT
    : (await Deno.readTextFile(promptFile).catch((e) => {
      throw new FlashlmError(`cannot read the prompt file (${(e as Error).message})`, {
        file: promptFile,
        kind: "io",
      });
    })).trim();
  const dir = model.includes("/") ? model.slice(0, model.lastIndexOf("/")) || "/" : ".";
  const name = model.slice(model.lastIndexOf("/") + 1).replace(/\.flm$/, "");
  const out = flags.out ?? `${dir}/bench-${name}`;
  await runBench({
    model,
    memory: parseBudget(flags.memory),
    tokens: flags.tokens,
    rounds: flags.rounds,
    prompt,
    outDir: out,
    split: flags.split,
    friends: { withHot: flags.friends, noHot: flags["friends-no-hot"] },
    configs,
    readerDepth: flags.depth,
    threads: flags.threads ?? machineThreads(),
    predictor: flags.predictor,
    onLine: info,
  });
  console.log(await Deno.readTextFile(`${out}/bench.txt`));
  console.log(`wrote ${out}/bench.json, ${out}/bench.txt and ${out}/bench.svg`);
}

/** A `--configs` word, checked against the bench's configurations. */
function configName(word: string): BenchConfigName {
  const config = BENCH_CONFIGS.find((b) => b.name === word);
  if (config === undefined) {
    throw usage(
      `unknown configuration "${word}" (choose ${BENCH_CONFIGS.map((b) => b.name).join(", ")})`,
    );
  }
  return config.name;
}
