/**
 * Pull a model from the Hugging Face hub: ask the hub what the revision holds
 * (tools/hub_listing.ts), download `config.json`, the checkpoint — safetensors when the revision
 * has them, else PyTorch's `pytorch_model.bin` (one file, or every shard its index names) — and
 * the tokenizer files into a local cache (each with `downloadFile`, tools/hub_download.ts:
 * resumable and verified), then convert them into a flashlm file.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { convertHfToFlash } from "../core/convert.ts";
import type { StorageDtype } from "../core/flash_format.ts";
import { FlashlmError } from "../io/errors.ts";
import { cacheDir } from "./demo_model.ts";
import {
  downloadFile,
  type DownloadOptions,
  type DownloadProgress,
  hubEndpoint,
  hubFileUrl,
  removeIfPresent,
} from "./hub_download.ts";
import { chooseWeights, type HubFile, listRevision, WEIGHT_LAYOUTS } from "./hub_listing.ts";

// The types a caller of pullModel meets (this module is the `./hub` entry point).
export type { DownloadOptions, DownloadProgress } from "./hub_download.ts";
export type { StorageDtype } from "../core/flash_format.ts";

// ---------------------------------------------------------------------------
// Where things are

/**
 * The local folder of a repo at a revision:
 * `<cache>/hub/<repo with "/" replaced by "--">/<revision, likewise>`.
 *
 * @param cache The cache root. Default {@linkcode cacheDir} (`$FLASHLM_CACHE`, ...).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubCachePath } from "./hub.ts";
 * assert.equal(hubCachePath("facebook/opt-125m", "main", "/c"), "/c/hub/facebook--opt-125m/main");
 * ```
 */
export function hubCachePath(repoId: string, revision: string, cache: string = cacheDir()): string {
  return join(cache, "hub", repoId.replaceAll("/", "--"), revision.replaceAll("/", "--"));
}

/** `org/name` or `name`: letters, digits, `.`, `_`, `-` (the hub's rule), no `..`. */
function checkRepoId(repoId: string): void {
  const part = "[A-Za-z0-9][A-Za-z0-9._-]*";
  if (!new RegExp(`^${part}(/${part})?$`).test(repoId) || repoId.includes("..")) {
    throw new FlashlmError(
      `"${repoId}" is not a Hugging Face repo id (expected org/name, like facebook/opt-125m)`,
      { kind: "usage" },
    );
  }
}

/** A branch, tag or commit: no empty parts, no `..`, nothing that escapes the cache folder. */
function checkRevision(revision: string): void {
  if (
    !/^[A-Za-z0-9._/-]+$/.test(revision) || revision.split("/").some((p) => p === "" || p === "..")
  ) {
    throw new FlashlmError(`"${revision}" is not a revision (a branch, tag or commit hash)`, {
      kind: "usage",
    });
  }
}

// ---------------------------------------------------------------------------
// Pulling a model

/** Options of {@linkcode pullModel}. */
export interface PullOptions extends Omit<DownloadOptions, "label" | "optional"> {
  /** Branch, tag or commit. Default `"main"`. */
  revision?: string;
  /** Where the flashlm file goes. Default `<download folder>/model.flm`. */
  out?: string;
  /** The cache root; files go to {@linkcode hubCachePath} under it. Default {@linkcode cacheDir}. */
  cache?: string;
  /** The hub's address. Default {@linkcode hubEndpoint} (`$HF_ENDPOINT`). */
  endpoint?: string;
  /** Storage dtype of the converted weights. Default `"f16"`. */
  dtype?: StorageDtype;
  /** Called after each FFN layer is converted. */
  onConvertProgress?: (done: number, total: number) => void;
  /**
   * The whole pull's download progress, for one progress bar: `file` is the file being
   * fetched, `done` and `total` count the bytes of every file (total: as far as the hub said),
   * `state` is `"done"` (or `"cached"`, when nothing had to be fetched) once all are in place.
   */
  onPullProgress?: (progress: DownloadProgress) => void;
}

/** Tokenizer and generation files that are used when the repo has them (a 404 is fine). */
const OPTIONAL_FILES = [
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

/** The shard files a checkpoint index names, checked to stay inside the folder. */
async function shardsOf(indexPath: string): Promise<string[]> {
  const bad = (what: string): FlashlmError =>
    new FlashlmError(what, { file: indexPath, kind: "format" });
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (err) {
    throw bad(`checkpoint index is not valid JSON: ${(err as Error).message}`);
  }
  const map = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw bad(`checkpoint index has no "weight_map" object`);
  }
  const shards = new Set<string>();
  for (const shard of Object.values(map)) {
    if (
      typeof shard !== "string" || shard === "" || isAbsolute(shard) ||
      shard.split(/[\\/]/).some((p) => p === "" || p === "..")
    ) {
      throw bad(`weight_map names ${JSON.stringify(shard)}, which is not a relative file name`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw bad(`weight_map is empty`);
  return [...shards].sort();
}

/**
 * Adds up the per-file progress of a pull into one report over all its bytes: `"downloading"`
 * while files arrive, then one final report (`"done"`, or `"cached"` if nothing was fetched).
 */
class PullProgress {
  readonly #done = new Map<string, number>();
  readonly #received = new Map<string, number>();
  readonly #sizes = new Map<string, number | undefined>();
  readonly #started = performance.now();
  readonly #report: ((progress: DownloadProgress) => void) | undefined;
  #last = "";
  #fetched = false;

  constructor(report: ((progress: DownloadProgress) => void) | undefined) {
    this.#report = report;
  }

  /** Count a file the pull will fetch, with its size when the listing gave it. */
  add(file: string, size: number | undefined): void {
    if (!this.#sizes.has(file)) this.#sizes.set(file, size);
  }

  /** Take one file's progress; report the pull's. */
  update(p: DownloadProgress): void {
    this.#done.set(p.file, p.done);
    this.#received.set(p.file, p.received);
    if (p.total !== undefined) this.#sizes.set(p.file, p.total);
    this.#fetched ||= p.state !== "cached";
    this.#last = p.file;
    this.#send("downloading");
  }

  /** Report the end of the pull. */
  finish(): void {
    this.#send(this.#fetched ? "done" : "cached");
  }

  #send(state: DownloadProgress["state"]): void {
    const sum = (values: Iterable<number | undefined>): number =>
      [...values].reduce<number>((a, b) => a + (b ?? 0), 0);
    this.#report?.({
      file: this.#last,
      done: sum(this.#done.values()),
      total: sum(this.#sizes.values()),
      received: sum(this.#received.values()),
      elapsedMs: performance.now() - this.#started,
      state,
    });
  }
}

/**
 * Download a model repo from the Hugging Face hub into the cache and convert it into a
 * flashlm file.
 *
 * Asks the hub what the revision holds (its model-info and tree APIs: names, sizes, sha256),
 * then fetches `config.json`, `vocab.json`, `merges.txt`, the optional tokenizer/generation
 * configs it has, and the weights: `model.safetensors.index.json` and every shard it names, or
 * `model.safetensors`, else `pytorch_model.bin.index.json` and its shards, or
 * `pytorch_model.bin` (the hub's facebook/opt-* main branches hold only these; TensorFlow,
 * Flax and ONNX files are never fetched). A hub without the API (a plain mirror) is asked for
 * the same files by name. Each file goes through {@linkcode downloadFile} (resumable, verified,
 * skipped when already complete) into {@linkcode hubCachePath}; then `convertHfToFlash` runs
 * on the folder.
 *
 * @param repoId `org/name`, e.g. `facebook/opt-125m` (an OPT model with ReLU FFN).
 * @returns The download folder and the flashlm file's path.
 * @throws {FlashlmError} for a bad repo id or revision (kind "usage"), a required file the hub
 *   does not have ("not found on the hub: <url> (repo ..., revision ...)"), a revision with no
 *   weights flashlm reads (listing what it has), any download failure, or a model flashlm
 *   cannot convert.
 *
 * @example Pulling from a local stand-in for the hub (files only, no API)
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pullModel } from "./hub.ts";
 * import { buildSyntheticHfModel } from "./demo_model.ts";
 * const src = await Deno.makeTempDir();
 * await buildSyntheticHfModel(src, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 10 });
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
 *   const file = new URL(req.url).pathname.split("/resolve/main/")[1];
 *   try {
 *     return new Response(await Deno.readFile(`${src}/${file}`)); // a HEAD gets the headers only
 *   } catch {
 *     return new Response(null, { status: 404 });
 *   }
 * });
 * const cache = await Deno.makeTempDir();
 * const { flm } = await pullModel("org/tiny", {
 *   endpoint: `http://127.0.0.1:${server.addr.port}`,
 *   cache,
 * });
 * assert.ok(flm.endsWith("model.flm"));
 * await server.shutdown();
 * await Deno.remove(src, { recursive: true });
 * await Deno.remove(cache, { recursive: true });
 * ```
 */
export async function pullModel(
  repoId: string,
  options: PullOptions = {},
): Promise<{ dir: string; flm: string }> {
  const revision = options.revision ?? "main";
  checkRepoId(repoId);
  checkRevision(revision);
  const endpoint = (options.endpoint ?? hubEndpoint()).replace(/\/+$/, "");
  const dir = hubCachePath(repoId, revision, options.cache);
  await Deno.mkdir(dir, { recursive: true });
  const listing = await listRevision(endpoint, repoId, revision, options);

  const where = `repo ${repoId}, revision ${revision}`;
  const notFound = (file: string, hint = ""): FlashlmError =>
    new FlashlmError(
      `not found on the hub: ${hubFileUrl(endpoint, repoId, revision, file)} (${where}${hint})`,
      { kind: "io" },
    );
  const progress = new PullProgress(options.onPullProgress);
  const get = async (file: string, required: boolean, hint = ""): Promise<boolean> => {
    const listed: HubFile | undefined = listing?.get(file);
    if (listing !== null && listed === undefined) {
      if (required) throw notFound(file, hint);
      return false;
    }
    const url = hubFileUrl(endpoint, repoId, revision, file);
    const dest = join(dir, file);
    await Deno.mkdir(dirname(dest), { recursive: true });
    const result = await downloadFile(url, dest, {
      ...options,
      label: file,
      optional: true,
      expected: listed,
      onProgress: (p) => {
        options.onProgress?.(p);
        progress.update(p);
      },
    });
    if (result === null && required) throw notFound(file, hint);
    return result !== null;
  };

  const required = ["config.json", "vocab.json", "merges.txt"];
  let optional: string[];
  let weights: { file: string; sharded: boolean };
  if (listing !== null) {
    // The listing says what is there: a missing file is an error before anything is fetched.
    for (const file of required) if (!listing.has(file)) throw notFound(file);
    weights = chooseWeights(new Set(listing.keys())) ??
      noWeights(repoId, revision, [...listing.keys()]);
    optional = OPTIONAL_FILES.filter((f) => listing.has(f));
    for (const file of [...required, ...optional]) progress.add(file, listing.get(file)?.size);
  } else {
    // A hub without the API: each name is asked for (config.json first: a 404 means no repo),
    // the weights in order of preference until one is there.
    await get("config.json", true);
    weights = WEIGHT_LAYOUTS[WEIGHT_LAYOUTS.length - 1];
    for (const layout of WEIGHT_LAYOUTS) {
      const others = WEIGHT_LAYOUTS.filter((l) => l !== layout).map((l) => l.file).join(", ");
      if (await get(layout.file, layout === weights, `; it has none of ${others} either`)) {
        weights = layout;
        break;
      }
    }
    optional = OPTIONAL_FILES;
  }
  // An index comes first: it names the shards. Then the tokenizer, then the weights.
  if (weights.sharded) await get(weights.file, true);
  const shards = weights.sharded ? await shardsOf(join(dir, weights.file)) : [weights.file];
  for (const shard of shards) progress.add(shard, listing?.get(shard)?.size);
  for (const file of required) await get(file, true);
  for (const file of optional) await get(file, false);
  for (const shard of shards) await get(shard, true);
  progress.finish();
  // Weight files of another layout left by an earlier pull would be read instead.
  for (const layout of WEIGHT_LAYOUTS) {
    if (layout !== weights) await removeIfPresent(join(dir, layout.file));
  }

  const flm = options.out ?? join(dir, "model.flm");
  await convertHfToFlash(dir, flm, {
    dtype: options.dtype ?? "f16",
    onProgress: options.onConvertProgress,
  });
  return { dir, flm };
}

/** Throw the error for a revision without weights flashlm reads: what it has, where to look. */
function noWeights(repoId: string, revision: string, files: string[]): never {
  const others = files.filter((f) => /\.(h5|msgpack|onnx|ckpt|gguf)$/.test(f));
  const hint = others.length > 0
    ? `; TensorFlow, Flax and ONNX weights are not read (a safetensors copy may be on a ` +
      `pull-request branch: --revision refs/pr/<N>)`
    : "";
  throw new FlashlmError(
    `repo ${repoId}, revision ${revision} has no model.safetensors or pytorch_model.bin ` +
      `(nor a sharded index of either); it holds: ${files.sort().join(", ")}${hint}`,
    { kind: "config" },
  );
}
